"""tf.data for audio-video synchronisation: crop the audio at a shifted position every epoch.

An example of `mmkeras.datasets.av_sync` holds a timeline of audio longer than its video by
`margin_frames` frames on each side. The model sees the video and an audio window of
`frames + 2 * max_offset` frames: the audio under the video plus `max_offset` frames of
context either side. A **shift** `s` (in frames, `-max_offset <= s <= max_offset`) moves that
window so the audio is **delayed** by `s` frames against the video (`s < 0`: the audio comes
early):

    window start = (margin_frames - max_offset - s) * frame_samples

so the sound of video frame `t` sits at audio step `max_offset + t + s` of the window. Every
window is real audio cropped from the longer timeline: nothing is padded or rolled, so no
silence or wrap-around marks a shifted example (`margin_frames >= 2 * max_offset`).

The label is the offset class `s + max_offset` (`offset_logits`) and the in-sync flag
`s == 0` (`sync_logit`). Training draws `s` uniformly for every example in every epoch
(`tf.data.Dataset.random(..., rerandomize_each_iteration=True)`), so all `2 * max_offset`
shifted negatives of an example are seen over training; evaluation uses fixed shifts.
"""

import numpy as np
import tensorflow as tf

from mmkeras import features

OFFSET_LOGITS = "offset_logits"
SYNC_LOGIT = "sync_logit"


def audio_window_samples(frames, max_offset, frame_samples):
    """Samples of the model's audio input: `frames + 2 * max_offset` frames."""
    return (frames + 2 * max_offset) * frame_samples


def check_geometry(recipe, max_offset):
    """Raise `ValueError` if a dataset's margins cannot hold shifts of `max_offset` frames."""
    if max_offset < 1:
        raise ValueError(f"max_offset must be >= 1, got {max_offset}")
    if 2 * max_offset > recipe["margin_frames"]:
        raise ValueError(
            f"max_offset={max_offset} needs margin_frames >= {2 * max_offset}; the dataset was "
            f"built with margin_frames={recipe['margin_frames']} (max_shift_frames="
            f"{recipe['max_shift_frames']})")


def crop_window(audio, shift, *, frames, margin_frames, max_offset, frame_samples):
    """The model's audio window for `shift`: numpy `(..., timeline)`, or one tf `(timeline,)`."""
    start = (margin_frames - max_offset - shift) * frame_samples
    length = audio_window_samples(frames, max_offset, frame_samples)
    if isinstance(audio, np.ndarray):
        return audio[..., start:start + length]
    return tf.slice(audio, tf.reshape(start, [1]), [length])  # one example, shape (length,)


def make_av_sync_dataset(split_arrays, *, max_offset, batch_size, training=False, shifts=None,
                         rows=None, seed=0, shuffle_buffer=10000):
    """A batched `(features, labels)` dataset of one split.

    Args:
        split_arrays: `mmkeras.datasets.av_sync.load_split(...)`: int16 `audio`
            `(n, timeline)`, uint8 `frames` `(n, frames, 28, 28)` and its `meta`.
        max_offset: largest shift in frames (the model's offsets are `-max_offset..max_offset`).
        batch_size: the global batch size.
        training: shuffle, and draw a fresh uniform shift per example every epoch.
        shifts: fixed shifts for evaluation, one per row (ignored when `training`); default 0.
        rows: the examples to evaluate, in order, repeats allowed (default: each once), e.g.
            every example at every offset in one pass.
        seed: seed of the training shifts and shuffle.
        shuffle_buffer: shuffle buffer (training).

    Returns:
        `tf.data.Dataset` of `({"video": float32 (b, frames, 28, 28, 1) in [0, 1], "audio":
        float32 (b, window)}, {"offset_logits": int32 (b,), "sync_logit": float32 (b,)})`.
    """
    recipe = split_arrays["meta"]["recipe"]
    check_geometry(recipe, max_offset)
    geometry = dict(frames=recipe["frames"], margin_frames=recipe["margin_frames"],
                    max_offset=max_offset, frame_samples=recipe["frame_samples"])
    audio, frames = split_arrays["audio"], split_arrays["frames"]
    n = len(audio)
    if training:
        ds = tf.data.Dataset.from_tensor_slices((audio, frames))
        if shuffle_buffer:
            ds = ds.shuffle(min(shuffle_buffer, n), seed=seed, reshuffle_each_iteration=True)
        draws = tf.data.Dataset.random(seed=seed + 1, rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip((ds, draws)).map(
            lambda pair, r: (*pair, tf.cast(r % (2 * max_offset + 1), tf.int32) - max_offset))
    else:
        rows = np.arange(n) if rows is None else np.asarray(rows, np.int64)
        shifts = np.zeros(len(rows), np.int32) if shifts is None else np.asarray(shifts, np.int32)
        if shifts.shape != rows.shape or np.abs(shifts).max(initial=0) > max_offset:
            raise ValueError(f"shifts must be {len(rows)} ints in [-{max_offset}, {max_offset}]")
        audio_table, frames_table = tf.constant(audio), tf.constant(frames)
        ds = tf.data.Dataset.from_tensor_slices((rows, shifts)).map(
            lambda i, s: (tf.gather(audio_table, i), tf.gather(frames_table, i), s))

    def to_example(audio, frames, shift):
        window = crop_window(audio, shift, **geometry)
        x = {
            features.VIDEO: tf.cast(frames, tf.float32)[..., None] / 255.0,
            features.AUDIO: tf.cast(window, tf.float32) / 32768.0,
        }
        y = {OFFSET_LOGITS: shift + max_offset, SYNC_LOGIT: tf.cast(shift == 0, tf.float32)}
        return x, y

    ds = ds.map(to_example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
