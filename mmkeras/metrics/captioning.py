"""Caption figures: a BLEU row, and three baselines with nothing (or little) learned.

Captions are token lists (`mmkeras.data.caption_vocabulary.tokenize`); references are a list
of token lists per image.

- `bleu_row`: corpus BLEU-1..4 unsmoothed (`mmkeras.metrics.bleu`), BLEU-4 smoothed (Chen &
  Cherry method 1, `epsilon`), exact-match rate and mean hypothesis length.
- `most_frequent_caption`: the most frequent training caption.
- `best_constant_caption`: the training caption that, output for every image, scores the
  highest smoothed BLEU-4 on held-out references (chosen on validation, scored on test).
- `nearest_neighbour_captions`: the caption of the closest training example (L2 or cosine),
  over pixels or any embedding.
"""

import collections

import numpy as np

from mmkeras.metrics.bleu import bleu_scores
from mmkeras.metrics.bleu import corpus_bleu


def bleu_row(hypotheses, references, epsilon=0.1):
    """BLEU-1..4 unsmoothed, BLEU-4 smoothed (Chen & Cherry method 1), exact match, length."""
    row = {k: float(v) for k, v in bleu_scores(hypotheses, references).items()}
    row["bleu4_smoothed"] = float(
        corpus_bleu(hypotheses, references, smoothing="epsilon", epsilon=epsilon)["bleu"]
    )
    row["exact_match"] = float(
        sum(list(h) in [list(r) for r in refs] for h, refs in zip(hypotheses, references))
        / max(len(hypotheses), 1)
    )
    row["mean_length"] = float(sum(len(h) for h in hypotheses) / max(len(hypotheses), 1))
    return row


def most_frequent_caption(train_tokens):
    """The most frequent training caption (token list); ties: shortest, then alphabetical."""
    counts = collections.Counter(tuple(t) for t in train_tokens)
    return list(min(counts, key=lambda c: (-counts[c], len(c), c)))


def best_constant_caption(train_tokens, references, candidates=0, epsilon=0.1):
    """The training caption that, output for every image, scores the highest smoothed BLEU-4
    on `references`: `(tokens, its smoothed BLEU-4)`. `candidates` limits the pool to the most
    frequent captions (0: every distinct training caption)."""
    counts = collections.Counter(tuple(t) for t in train_tokens)
    pool = sorted(counts, key=lambda c: (-counts[c], len(c), c))
    if candidates:
        pool = pool[: int(candidates)]
    best, best_score = None, -1.0
    for caption in pool:
        score = corpus_bleu([list(caption)] * len(references), references,
                            smoothing="epsilon", epsilon=epsilon)["bleu"]
        if score > best_score:
            best, best_score = list(caption), score
    return best, float(best_score)


def nearest_neighbour_captions(train_features, test_features, train_tokens, metric="l2"):
    """The caption of the closest training example (L2, or cosine) for each test example."""
    a = np.asarray(train_features, np.float64).reshape(len(train_features), -1)
    b = np.asarray(test_features, np.float64).reshape(len(test_features), -1)
    if metric == "cosine":
        a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
        b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
        nearest = (b @ a.T).argmax(axis=1)
    else:
        distances = (b**2).sum(1)[:, None] - 2 * b @ a.T + (a**2).sum(1)[None, :]
        nearest = distances.argmin(axis=1)
    return [list(train_tokens[i]) for i in nearest]
