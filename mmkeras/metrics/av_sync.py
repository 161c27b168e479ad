"""Figures of audio-video synchronisation, and two rules with nothing learned (numpy).

Every test example is evaluated at every candidate offset `s` in `-S..S` frames (`S =
max_offset`); `offset_logits[s]` holds the `(n, 2S + 1)` offset scores of the n examples
shifted by `s`, `sync_scores[s]` their `(n,)` in-sync scores.

- `offset_figures`: exact and within-one-frame accuracy of the argmax offset beside chance
  (uniform guessing: `1 / (2S + 1)` and `(3(2S + 1) - 2) / (2S + 1)^2`), accuracy per true
  offset and the confusion matrix (rows: true offset, columns: predicted).
- `sync_figures`: in sync (offset 0) against every shifted negative: ROC AUC (and against the
  negatives of each |offset|), balanced accuracy at a threshold and of "argmax offset is 0".
- `energy_baseline_logits`: correlate each frame's mean brightness with the audio's log energy
  over the frame at each candidate offset ("picture on while sound on").
- `frame_difference_baseline_logits`: correlate the mean absolute change of each frame from the
  previous one with the rise of the audio's log energy into that frame (onset timing).
- `baseline_sync_scores`: a rule's in-sync score, its correlation at offset 0 minus the best
  other one.
"""

import numpy as np


def roc_auc(positive_scores, negative_scores):
    """Area under the ROC curve (Mann-Whitney U; ties count one half)."""
    pos = np.asarray(positive_scores, np.float64)
    neg = np.asarray(negative_scores, np.float64)
    scores = np.concatenate([pos, neg])
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # Average ranks over ties.
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(average, counts)
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2.0
    return float(u / (len(pos) * len(neg)))


def offset_figures(offset_logits, max_offset):
    """Figures of `offset_logits[s]`: `(n, 2S + 1)` logits of the n examples shifted by s."""
    offsets = list(range(-max_offset, max_offset + 1))
    k = len(offsets)
    true = np.concatenate([np.full(len(offset_logits[s]), s) for s in offsets])
    pred = np.concatenate([np.argmax(offset_logits[s], axis=-1) - max_offset for s in offsets])
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (true + max_offset, pred + max_offset), 1)
    return {
        "evaluations": int(len(true)),
        "exact_accuracy": float(np.mean(pred == true)),
        "within_1_accuracy": float(np.mean(np.abs(pred - true) <= 1)),
        "chance_exact": 1.0 / k,
        "chance_within_1": (3 * k - 2) / k ** 2,
        "mean_abs_error_frames": float(np.mean(np.abs(pred - true))),
        "per_offset_exact_accuracy": {
            str(s): float(confusion[i, i] / max(1, confusion[i].sum())) for i, s in enumerate(offsets)
        },
        "offsets": offsets,
        "confusion_matrix": confusion.tolist(),
    }


def sync_figures(sync_scores, offset_logits, max_offset, threshold=0.0):
    """In-sync (offset 0) vs shifted figures of `sync_scores[s]` (n,) per shift s."""
    pos = np.asarray(sync_scores[0])
    negatives = {s: np.asarray(v) for s, v in sync_scores.items() if s != 0}
    neg = np.concatenate(list(negatives.values()))
    argmax_pos = np.argmax(offset_logits[0], -1) == max_offset
    argmax_neg = np.concatenate(
        [np.argmax(offset_logits[s], -1) != max_offset for s in negatives])
    figures = {
        "positives": int(len(pos)),
        "negatives": int(len(neg)),
        "auc": roc_auc(pos, neg),
        "auc_by_abs_offset": {
            str(d): roc_auc(pos, np.concatenate([negatives[d], negatives[-d]]))
            for d in range(1, max_offset + 1)
        },
        "chance_auc": 0.5,
        "chance_balanced_accuracy": 0.5,
        "argmax_balanced_accuracy": float((argmax_pos.mean() + argmax_neg.mean()) / 2),
    }
    if threshold is not None:
        tpr = float(np.mean(pos > threshold))
        tnr = float(np.mean(neg <= threshold))
        figures.update({"threshold": threshold, "true_positive_rate": tpr,
                        "true_negative_rate": tnr, "balanced_accuracy": (tpr + tnr) / 2})
    return figures


def log_energy(audio_windows, frame_samples):
    """`(n, steps * frame_samples)` -> `(n, steps)` log mean power of each frame's samples."""
    n = audio_windows.shape[0]
    x = np.asarray(audio_windows, np.float64).reshape(n, -1, frame_samples)
    return np.log(np.mean(x ** 2, axis=-1) + 1e-6)


def offset_correlations(video_track, audio_track, max_offset):
    """Pearson correlation of `video_track (n, T)` with `audio_track[:, k:k + T]` for each
    `k` in `0..2S` -> `(n, 2S + 1)` (0 where a track is constant)."""
    steps = video_track.shape[1]

    def standardise(x):
        x = x - x.mean(-1, keepdims=True)
        return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-9)

    v = standardise(np.asarray(video_track, np.float64))
    return np.stack(
        [np.sum(v * standardise(audio_track[:, k:k + steps]), -1)
         for k in range(2 * max_offset + 1)],
        axis=-1,
    )


def energy_baseline_logits(audio_windows, frames, max_offset, frame_samples):
    """Pearson correlation of frame brightness with audio log energy at each offset.

    `audio_windows` float `(n, (F + 2S) * frame_samples)`, `frames` `(n, F, h, w)` ->
    `(n, 2S + 1)` correlations (higher: more likely).
    """
    n, steps = frames.shape[0], frames.shape[1]
    brightness = frames.reshape(n, steps, -1).astype(np.float64).mean(-1)
    return offset_correlations(brightness, log_energy(audio_windows, frame_samples), max_offset)


def frame_difference_baseline_logits(audio_windows, frames, max_offset, frame_samples):
    """Pearson correlation of frame change with audio onset strength at each offset.

    The video track is `mean |frame_t - frame_{t-1}|` (t = 1..F-1), the audio track the rise
    of the log energy into each frame, `max(0, e_t - e_{t-1})`; the change into video frame t
    is compared with the rise into audio step `k + t` (offset `k - S`).
    `audio_windows` float `(n, (F + 2S) * frame_samples)`, `frames` `(n, F, h, w)` ->
    `(n, 2S + 1)` correlations (higher: more likely).
    """
    n, steps = frames.shape[0], frames.shape[1]
    x = frames.reshape(n, steps, -1).astype(np.float64)
    change = np.abs(np.diff(x, axis=1)).mean(-1)  # (n, F - 1)
    rise = np.maximum(np.diff(log_energy(audio_windows, frame_samples), axis=1), 0.0)
    return offset_correlations(change, rise, max_offset)


def baseline_sync_scores(logits, max_offset):
    """A rule's in-sync score: its score at offset 0 minus the best other offset's."""
    others = np.delete(logits, max_offset, axis=-1)
    return logits[:, max_offset] - others.max(-1)


BASELINES = {
    "energy_baseline": energy_baseline_logits,
    "frame_difference_baseline": frame_difference_baseline_logits,
}
