"""Bad input: every problem names its file and manifest line, or is counted; nothing is silent."""

import csv

import numpy as np
import pytest

from mmkeras.configs import load_config
from mmkeras.data import DataError
from mmkeras.data import load_split
from mmkeras.data import make_dataset
from mmkeras.data import read_manifest
from tests.datasets.openmoji_test import openmoji_small  # noqa: F401  (session fixture)

MODALITIES = ["image", "audio"]


def _rows(root):
    with open(root / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def _first(root, split="train"):
    for line, row in enumerate(_rows(root), start=2):
        if row["split"] == split:
            return line, row


def _corrupt(root, kind):
    """Damages the first training row's files; returns (line, path, expected reason)."""
    line, row = _first(root)
    if kind == "truncated_png":
        path = root / row["image"]
        path.write_bytes(path.read_bytes()[:40])
        return line, path, "cannot decode image"
    if kind == "missing_png":
        path = root / row["image"]
        path.unlink()
        return line, path, "file not found"
    if kind == "rgb_png":
        from PIL import Image

        path = root / row["image"]
        Image.new("RGB", (28, 28)).save(path)
        return line, path, "shape"
    if kind == "garbage_wav":
        path = root / row["audio"]
        path.write_bytes(b"RIFF" + b"\x00" * 10)
        return line, path, "cannot decode WAV"
    if kind == "stereo_wav":
        import wave

        path = root / row["audio"]
        with wave.open(str(path), "wb") as w:
            w.setnchannels(2)
            w.setsampwidth(2)
            w.setframerate(8000)
            w.writeframes(b"\x00\x00" * 200)
        return line, path, "2 channels"
    if kind == "png_without_iend":  # Pillow loads it; tf.io.decode_png (tf.data) does not
        path = root / row["image"]
        data = path.read_bytes()
        assert data.endswith(b"IEND\xaeB`\x82")
        path.write_bytes(data[:-12])
        return line, path, "TensorFlow cannot decode image"
    if kind == "random_png":
        path = root / row["image"]
        path.write_bytes(np.random.default_rng(0).bytes(600))
        return line, path, "cannot decode image"
    if kind == "truncated_wav":
        path = root / row["audio"]
        path.write_bytes(path.read_bytes()[:3000])
        return line, path, "truncated"
    if kind == "random_wav":
        path = root / row["audio"]
        path.write_bytes(np.random.default_rng(1).bytes(4000))
        return line, path, "cannot decode WAV"
    raise ValueError(kind)


# Files that a Pillow/`wave` check and TensorFlow's decoders (what tf.data runs) judge alike,
# and one they do not (the PNG without its IEND chunk).
DECODER_CASES = ["png_without_iend", "random_png", "truncated_wav", "random_wav"]


@pytest.mark.parametrize(
    "kind", ["truncated_png", "missing_png", "rgb_png", "garbage_wav", "stereo_wav"] + DECODER_CASES
)
def test_error_policy_names_file_and_line(avmnist_copy, kind):
    line, path, reason = _corrupt(avmnist_copy, kind)
    with pytest.raises(DataError) as info:
        read_manifest(avmnist_copy / "manifest.csv", "train", MODALITIES, 10, bad_input="error")
    message = str(info.value)
    assert f"line {line}" in message
    assert str(path) in message
    assert reason in message


def _modality(kind):
    return "image" if "png" in kind else "audio"


def _users(root, path):
    """Training rows that use `path` (AV-MNIST clips are shared by several pairs)."""
    return [r for r in _rows(root) if r["split"] == "train"
            and path in (root / r["image"], root / r["audio"])]


@pytest.mark.parametrize("kind", DECODER_CASES)
def test_decoder_cases_under_skip_and_mask(avmnist_copy, kind):
    _, path, reason = _corrupt(avmnist_copy, kind)
    users = len(_users(avmnist_copy, path))
    _, skipped = read_manifest(avmnist_copy / "manifest.csv", "train", MODALITIES, 10,
                               bad_input="skip")
    assert skipped.skipped == users and skipped.rows_kept == skipped.rows_read - users
    assert all(reason in p and str(path) in p for p in skipped.problems)
    columns, masked = read_manifest(avmnist_copy / "manifest.csv", "train", MODALITIES, 10,
                                    bad_input="mask")
    m = _modality(kind)
    assert masked.masked == {m: users} and masked.skipped == 0
    assert (columns[f"{m}_present"] == 0).sum() == users
    assert all(p for p in columns[m] if p)  # masked paths are empty, never the bad file
    assert str(path) not in set(columns[m])


def test_png_without_iend_would_fail_in_tf_data(avmnist_copy):
    """Pillow accepts the file; the pipeline's decoder does not: the check must use the
    pipeline's decoder (before, this row passed the check and training crashed in tf.data)."""
    import tensorflow as tf
    from PIL import Image

    _, path, _ = _corrupt(avmnist_copy, "png_without_iend")
    with Image.open(path) as img:
        img.load()
    columns = {"label": np.array([0]), "image": np.array([str(path)]),
               "image_present": np.array([1.0], np.float32)}
    config = load_config(None, ["data.batch_size=1", "data.shuffle_buffer=0"])
    with pytest.raises(tf.errors.InvalidArgumentError):
        next(iter(make_dataset(columns, config.data, ["image"])))


def _write_rows(root, rows):
    with open(root / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_unknown_split_follows_the_policy_and_is_counted(avmnist_copy):
    rows = _rows(avmnist_copy)
    rows[3]["split"] = "trian"
    _write_rows(avmnist_copy, rows)
    with pytest.raises(DataError) as info:
        read_manifest(avmnist_copy / "manifest.csv", "train", MODALITIES, 10)
    message = str(info.value)
    assert "line 5" in message and "'trian'" in message
    assert "['train', 'validation', 'test']" in message
    for policy in ("skip", "mask", {"split": "skip", "default": "error"}):
        reports = [read_manifest(avmnist_copy / "manifest.csv", split, MODALITIES, 10,
                                 bad_input=policy)[1] for split in ("train", "validation", "test")]
        assert [r.unknown_split for r in reports] == [1, 1, 1]
        assert sum(r.rows_read for r in reports) == len(rows) - 1
        assert any("'trian'" in p for p in reports[0].problems)


def test_skip_policy_counts_and_drops(avmnist_copy):
    _corrupt(avmnist_copy, "truncated_png")
    clean, _ = read_manifest(avmnist_copy / "manifest.csv", "validation", MODALITIES, 10)
    columns, report = read_manifest(
        avmnist_copy / "manifest.csv", "train", MODALITIES, 10, bad_input="skip"
    )
    assert report.skipped == 1
    assert report.rows_kept == report.rows_read - 1 == len(columns["label"])
    assert len(report.problems) == 1 and "cannot decode image" in report.problems[0]
    assert len(clean["label"]) > 0


def test_mask_policy_keeps_row_and_flags_modality(avmnist_copy):
    line, path, _ = _corrupt(avmnist_copy, "garbage_wav")
    # Clips are shared by several pairs: every row that uses the broken clip is masked.
    users = [r for r in _rows(avmnist_copy) if r["split"] == "train" and avmnist_copy / r["audio"] == path]
    columns, report = read_manifest(
        avmnist_copy / "manifest.csv", "train", MODALITIES, 10,
        bad_input={"image": "error", "audio": "mask"},
    )
    assert report.masked == {"audio": len(users)} and report.skipped == 0
    assert len(report.problems) == len(users)
    assert columns["audio_present"][0] == 0.0 and columns["image_present"][0] == 1.0
    # The masked row flows through tf.data as zeros with its flag at 0.
    config = load_config(None, ["data.batch_size=4", "data.shuffle_buffer=0"])
    ds = make_dataset({k: v[:4] for k, v in columns.items()}, config.data, MODALITIES)
    x, y = next(iter(ds))
    assert np.asarray(x["audio"][0]).max() == 0 and float(x["audio_present"][0]) == 0.0
    assert np.abs(np.asarray(x["audio"][1])).max() > 0


def test_label_out_of_range(avmnist_copy):
    rows = _rows(avmnist_copy)
    rows[0]["label"] = "12"
    with open(avmnist_copy / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(DataError, match=r"line 2 .*label '12'"):
        read_manifest(avmnist_copy / "manifest.csv", "train", MODALITIES, 10)
    _, report = read_manifest(avmnist_copy / "manifest.csv", "train", MODALITIES, 10, bad_input="skip")
    assert report.skipped == 1


def test_missing_column_is_named(avmnist_copy):
    with pytest.raises(DataError, match="video"):
        read_manifest(avmnist_copy / "manifest.csv", "train", ["image", "video"], 10)


def test_pipeline_shapes_and_values(avmnist_small):
    config = load_config(None, ["data.batch_size=8", f"data.data_dir={avmnist_small}"])
    columns, report = load_split(avmnist_small, "train", config.data, MODALITIES, 10)
    assert report.rows_kept == len(columns["label"]) > 0
    ds = make_dataset(columns, config.data, MODALITIES, training=True)
    x, y = next(iter(ds))
    assert x["image"].shape == (8, 28, 28, 1) and x["audio"].shape == (8, 8000)
    assert x["image_present"].shape == (8,)
    image, audio = np.asarray(x["image"]), np.asarray(x["audio"])
    assert 0.0 <= image.min() and image.max() <= 1.0 and image.max() > 0.2
    assert np.abs(audio).max() <= 1.0 and np.abs(audio).max() > 0.01
    assert set(np.asarray(y)) <= set(range(10))


def test_seeded_shuffle_is_repeatable(avmnist_small):
    config = load_config(None, ["data.batch_size=16", "data.cache=false"])
    columns, _ = load_split(avmnist_small, "train", config.data, ["image"], 10)
    first = [np.asarray(y) for _, y in make_dataset(columns, config.data, ["image"], training=True)]
    again = [np.asarray(y) for _, y in make_dataset(columns, config.data, ["image"], training=True)]
    np.testing.assert_array_equal(np.concatenate(first), np.concatenate(again))


def test_features_of_one_type_are_checked_and_masked_by_type(openmoji_small, tmp_path):  # noqa: F811
    """Two image columns (`front`, `back`: `modality_types`): each checked as an image, a bad
    file masks only its own feature, and a policy under the type's key covers both."""
    with open(openmoji_small / "manifest.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "train"][:4]
    path = tmp_path / "manifest.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, ["id", "split", "label", "front", "back"])
        writer.writeheader()
        for i, r in enumerate(rows):
            back = "missing.png" if i == 1 else str(openmoji_small / rows[-1 - i]["image"])
            writer.writerow({"id": r["id"], "split": "train", "label": 0,
                             "front": str(openmoji_small / r["image"]), "back": back})
    types = {"front": "image", "back": "image"}
    check = {"image": lambda p: None if p.is_file() else "file not found"}
    with pytest.raises(DataError, match=r"line 3 .*: back \(image\) file .*missing.png: file"):
        read_manifest(path, "train", ["front", "back"], 1, modality_types=types, checkers=check)
    columns, report = read_manifest(path, "train", ["front", "back"], 1, bad_input={
        "image": "mask"}, modality_types=types, checkers=check)
    assert report.masked == {"back": 1}
    np.testing.assert_array_equal(columns["back_present"], [1, 0, 1, 1])
    np.testing.assert_array_equal(columns["front_present"], [1, 1, 1, 1])
    with pytest.raises(DataError, match="feature 'side' has no modality type"):
        read_manifest(path, "train", ["side"], 1, modality_types=types)
