"""Tests for the spoken-digit set in eSpeak NG voices.

One tiny grid (2 accents x 1 variant x 1 speed x 10 digits = 20 clips) is synthesised per module
by the real `espeak-ng` in a temporary data root (well under a second of eSpeak).
"""

import subprocess
import time

import numpy as np
import pytest
import scipy.signal

from mmkeras.datasets import tts_digits
from tests.datasets.avmnist_test import read_manifest
from tests.datasets.avmnist_test import read_meta
from tests.datasets.avmnist_test import read_wav

GRID = dict(voices=("en", "en-us"), variants=("f3",), speeds=(175,), pitches=(50,))


@pytest.fixture(scope="module")
def tts_root(tmp_path_factory):
    return tmp_path_factory.mktemp("tts-data")


@pytest.fixture(scope="module")
def tiny(tts_root):
    return tts_digits.prepare(**GRID, data_root=tts_root, verbose=False)


def test_dataset_dir_names(tmp_path, monkeypatch):
    monkeypatch.setenv("MMKERAS_DATA", str(tmp_path))
    base = tmp_path / "datasets" / "tts_digits"
    assert tts_digits.dataset_dir() == base / "default"
    other = tts_digits.dataset_dir(**GRID)
    assert other.parent == base and other.name.startswith("grid-")
    assert tts_digits.dataset_dir(**{**GRID, "speeds": (150,)}) != other
    with pytest.raises(ValueError, match="speeds"):
        tts_digits.dataset_dir(speeds=(20,))
    with pytest.raises(ValueError, match="voices"):
        tts_digits.dataset_dir(voices=("en", "en"))


def test_manifest_counts_the_grid(tiny):
    rows = read_manifest(tiny)
    assert list(rows[0]) == list(tts_digits.MANIFEST_COLUMNS)
    assert len(rows) == 2 * 1 * 1 * 1 * 10
    assert sorted({r["voice"] for r in rows}) == ["en", "en-us"]
    assert {(r["variant"], r["speed"], r["pitch"]) for r in rows} == {("f3", "175", "50")}
    assert np.bincount([int(r["label"]) for r in rows]).tolist() == [2] * 10
    assert len({r["path"] for r in rows}) == len(rows)
    assert sorted(p.relative_to(tiny).as_posix() for p in tiny.rglob("*.wav")) == sorted(
        r["path"] for r in rows)


def test_wavs_are_8khz_mono_16bit(tiny):
    for r in read_manifest(tiny):
        params, samples = read_wav(tiny / r["path"])
        assert params == (1, 2, 8000)
        assert 0.3 * 8000 < len(samples) <= 8000  # a spoken word, 1 s or shorter
        assert np.abs(samples).max() > 1000  # speech, not silence


def test_labels_match_the_spoken_digit(tiny, tmp_path):
    """Each file is espeak-ng speaking its label's word, resampled: synthesised again here,
    straight from the binary."""
    rows = read_manifest(tiny)
    for r in rows[:10:3] + rows[-1:]:
        word = tts_digits.DIGITS[int(r["label"])]
        assert r["path"].endswith(f"-{r['label']}.wav")
        out = tmp_path / "again.wav"
        subprocess.run(["espeak-ng", "-v", f"{r['voice']}+{r['variant']}", "-s", r["speed"],
                        "-p", r["pitch"], "-w", str(out), word], check=True)
        params, pcm = read_wav(out)
        assert params == (1, 2, 22050)
        expected = scipy.signal.resample_poly(pcm / 32768.0, 160, 441)
        expected = np.clip(np.rint(expected * 32767.0), -32768, 32767)
        _, samples = read_wav(tiny / r["path"])
        np.testing.assert_array_equal(samples, expected)
    # Ten different words per voice, and the two accents differ.
    digests = {read_wav(tiny / r["path"])[1].tobytes() for r in rows}
    assert len(digests) == len(rows)


def test_metadata_and_checksum(tiny):
    meta = read_meta(tiny)
    assert meta["name"] == "tts_digits" and meta["recipe_version"] == 1
    (source,) = meta["sources"]
    assert source["package"] == "espeak-ng" and source["registry"] == "Debian"
    assert "GPL-3.0-or-later" in source["licence"]
    version = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout
    assert source["version"] and source["version"] in version
    assert set(source["debian_packages"]) == {"espeak-ng", "espeak-ng-data"}
    recipe = meta["recipe"]
    assert recipe["voices"] == ["en", "en-us"] and recipe["speeds"] == [175]
    assert recipe["sample_rate"] == 8000 and recipe["espeak_rate"] == 22050
    assert meta["counts"]["clips"] == 20 and meta["counts"]["seconds"]["over_1s"] == 0
    assert meta["checksum"] == tts_digits.compute_checksum(tiny)
    assert len(meta["checksum"]) == 64


def test_second_prepare_is_cached_and_a_rebuild_is_identical(tiny, tts_root, tmp_path):
    before = read_meta(tiny)
    start = time.perf_counter()
    again = tts_digits.prepare(**GRID, data_root=tts_root, verbose=False)
    assert time.perf_counter() - start < 1.0
    assert again == tiny and read_meta(again)["created"] == before["created"]
    rebuilt = tts_digits.prepare(**GRID, data_root=tmp_path, verbose=False)
    assert read_meta(rebuilt)["checksum"] == before["checksum"]


def test_missing_espeak_is_explained(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tts_digits, "ESPEAK_NG", str(tmp_path / "bin" / "espeak-ng"))
    with pytest.raises(tts_digits.DatasetError,
                       match=r"espeak-ng not found .*apt-get install espeak-ng"):
        tts_digits.prepare(**GRID, data_root=tmp_path, verbose=False)
    assert not (tmp_path / "datasets").exists()
    flags = ["--voices", "en", "--variants", "f3", "--data-root", str(tmp_path)]
    assert tts_digits.main(["prepare", *flags]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: espeak-ng not found") and "apt-get install espeak-ng" in line


def test_unknown_or_ignored_voices_fail(tmp_path):
    with pytest.raises(tts_digits.DatasetError, match="no voice en-xx, \\+zz"):
        tts_digits.prepare(voices=("en-xx",), variants=("zz",), data_root=tmp_path,
                           verbose=False)
    # espeak-ng 1.51 drops the variant of `en-gb+<variant>`: the two would speak alike.
    with pytest.raises(tts_digits.DatasetError, match="identically"):
        tts_digits.prepare(voices=("en-gb",), variants=("m1", "f3"), speeds=(175,),
                           data_root=tmp_path, verbose=False)
    assert list((tmp_path / "datasets" / "tts_digits").iterdir()) == []


def test_cli_info(tiny, tts_root, capsys):
    flags = ["--voices", "en", "en-us", "--variants", "f3", "--speeds", "175",
             "--data-root", str(tts_root)]
    assert tts_digits.main(["info", *flags]) == 0
    out = capsys.readouterr().out
    assert str(tiny) in out and read_meta(tiny)["checksum"] in out
    assert tts_digits.main(["info", *flags[:-2], "--data-root", str(tts_root / "none")]) == 1

