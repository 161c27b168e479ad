"""Property: whatever bytes a file holds, the pre-training check returns a reason or passes it,
never crashes, and a file it passes decodes in the tf.data pipeline."""

import pathlib

import numpy as np
import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from mmkeras.configs import load_config
from mmkeras.data import make_dataset
from mmkeras.data.manifest import check_image
from mmkeras.data.manifest import check_wav

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def _first_files(root):
    import csv

    with open(root / "manifest.csv", newline="") as f:
        row = next(csv.DictReader(f))
    return (root / row["image"]).read_bytes(), (root / row["audio"]).read_bytes()


@st.composite
def damaged(draw, original):
    """`original` cut at a random point, with a few random bytes overwritten, or random bytes."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=2 * len(original)))
    data = bytearray(original[: draw(st.integers(0, len(original)))])
    for _ in range(draw(st.integers(0, 3))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


@pytest.fixture(scope="module")
def originals(avmnist_small):
    return _first_files(pathlib.Path(avmnist_small))


def _decodes(path, modality):
    config = load_config(None, ["data.batch_size=1", "data.shuffle_buffer=0", "data.cache=false"])
    columns = {"label": np.array([0]), modality: np.array([str(path)]),
               f"{modality}_present": np.array([1.0], np.float32)}
    next(iter(make_dataset(columns, config.data, [modality])))


@SETTINGS
@given(data=st.data())
def test_any_png_bytes_are_rejected_or_decode(originals, tmp_path, data):
    path = tmp_path / "x.png"
    path.write_bytes(data.draw(damaged(originals[0])))
    reason = check_image(path)
    assert reason is None or (isinstance(reason, str) and reason.isprintable())
    if reason is None:
        _decodes(path, "image")


@SETTINGS
@given(data=st.data())
def test_any_wav_bytes_are_rejected_or_decode(originals, tmp_path, data):
    path = tmp_path / "x.wav"
    path.write_bytes(data.draw(damaged(originals[1])))
    reason = check_wav(path, sample_rate=8000)
    assert reason is None or (isinstance(reason, str) and reason.isprintable())
    if reason is None:
        _decodes(path, "audio")
