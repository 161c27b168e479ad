"""Cross-modal retrieval metrics: Recall@k and median rank, instance- and class-level.

Two notions of a correct match, which must not be confused:

- **instance level**: the only correct item for query `i` is gallery item `i` (its pair);
- **class level**: every gallery item with the query's label is correct (the rank is that of
  the first correct item).

On AV-MNIST the image/audio pairs are made by pairing a digit image with a random clip of the
same digit: nothing but the class links a pair, so instance-level retrieval is at best
"random within the right class" (see `class_perfect_instance_recall`), and class-level
recall is the meaningful figure. Both are reported, each beside its random baseline.

Everything here is numpy on embeddings already computed (e.g. by `DualEncoder.predict`).
"""

import numpy as np

DEFAULT_KS = (1, 5, 10)


def cosine_similarities(queries, gallery):
    """`(n_queries, n_gallery)` cosine similarities."""
    queries = np.asarray(queries, np.float64)
    gallery = np.asarray(gallery, np.float64)
    queries = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    gallery = gallery / np.maximum(np.linalg.norm(gallery, axis=1, keepdims=True), 1e-12)
    return queries @ gallery.T


def instance_ranks(similarities):
    """1-based rank of gallery item `i` for query `i` (square `similarities`).

    Ties count against the query (rank = 1 + number of items scoring at least as high, other
    than the positive), so a constant scorer gets the worst rank, not the best.
    """
    similarities = np.asarray(similarities)
    if similarities.shape[0] != similarities.shape[1]:
        raise ValueError(f"Instance ranks need a square similarity matrix, got {similarities.shape}.")
    positive = np.diagonal(similarities)[:, None]
    at_least = (similarities >= positive).sum(axis=1) - 1  # minus the positive itself
    return 1 + at_least


def class_ranks(similarities, query_labels, gallery_labels):
    """1-based rank of the first gallery item sharing the query's label.

    Rank = 1 + number of wrong-label items scoring at least as high as the best right-label
    item (ties count against the query). Queries whose label is absent from the gallery get
    rank `n_gallery + 1`.
    """
    similarities = np.asarray(similarities)
    query_labels = np.asarray(query_labels).reshape(-1)
    gallery_labels = np.asarray(gallery_labels).reshape(-1)
    relevant = query_labels[:, None] == gallery_labels[None, :]
    best = np.where(relevant, similarities, -np.inf).max(axis=1)
    wrong_above = (~relevant & (similarities >= best[:, None])).sum(axis=1)
    ranks = 1 + wrong_above
    ranks[~relevant.any(axis=1)] = similarities.shape[1] + 1
    return ranks


def summarize_ranks(ranks, ks=DEFAULT_KS):
    """`{"R@k": ..., "median_rank": ..., "mean_rank": ...}` of 1-based ranks."""
    ranks = np.asarray(ranks)
    summary = {f"R@{k}": float(np.mean(ranks <= k)) for k in ks}
    summary["median_rank"] = float(np.median(ranks))
    summary["mean_rank"] = float(np.mean(ranks))
    return summary


def _first_relevant_cdf(n_gallery, n_relevant, r):
    """P(first relevant item within the top `r`) for a random order: 1 - C(N-c, r) / C(N, r)."""
    r = np.asarray(r, np.float64)
    c = np.asarray(n_relevant, np.float64)
    # prod_{i<r} (N - c - i) / (N - i), in logs; zero once r > N - c.
    out = np.empty(np.broadcast(c, r).shape)
    for index, (ci, ri) in enumerate(np.broadcast(c, r)):
        if ri > n_gallery - ci:
            out.flat[index] = 1.0
            continue
        i = np.arange(int(ri))
        out.flat[index] = 1.0 - np.exp(np.sum(np.log(n_gallery - ci - i) - np.log(n_gallery - i)))
    return out


def random_baseline(n_gallery, n_relevant=None, ks=DEFAULT_KS):
    """Exact expected Recall@k and median rank of a scorer that orders the gallery at random.

    Args:
        n_gallery: gallery size `N`.
        n_relevant: per query, the number of correct gallery items (None: 1, instance level).
        ks: the cut-offs.

    Returns:
        `{"R@k": E[recall@k], "median_rank": the median of the ranks' mixture distribution}`.
        With one correct item, `R@k = k / N` and the median rank is about `N / 2`.
    """
    counts = np.ones(1) if n_relevant is None else np.asarray(n_relevant, np.float64).reshape(-1)
    values, weights = np.unique(counts, return_counts=True)
    weights = weights / weights.sum()

    def cdf(r):
        return float(np.sum(weights * _first_relevant_cdf(n_gallery, values, r)))

    summary = {f"R@{k}": cdf(min(k, n_gallery)) for k in ks}
    lo, hi = 1, n_gallery
    while lo < hi:  # smallest r with P(rank <= r) >= 1/2
        mid = (lo + hi) // 2
        # The cdf is a ratio of binomials computed in logs: it can land an ulp below an exact
        # 1/2 (N = 100, r = 50 gave 0.49999999999999994), hence the tolerance.
        if cdf(mid) >= 0.5 - 1e-12:
            hi = mid
        else:
            lo = mid + 1
    summary["median_rank"] = float(lo)
    return summary


def class_perfect_instance_recall(query_labels, gallery_labels, ks=DEFAULT_KS):
    """Expected instance-level Recall@k of a model that ranks the right class first, at random
    within the class: `E[min(k, c) / c]` with `c` the gallery count of the query's class.

    This is the ceiling of instance-level retrieval when pairs share nothing but the class.
    """
    query_labels = np.asarray(query_labels).reshape(-1)
    gallery_labels = np.asarray(gallery_labels).reshape(-1)
    counts = (query_labels[:, None] == gallery_labels[None, :]).sum(axis=1).astype(np.float64)
    return {f"R@{k}": float(np.mean(np.minimum(k, counts) / counts)) for k in ks}


def retrieval_report(embeddings_a, embeddings_b, labels, names=("a", "b"), ks=DEFAULT_KS):
    """Both directions, both levels, each with its random baseline.

    Args:
        embeddings_a, embeddings_b: `(n, d)` paired embeddings (row `i` of each is pair `i`).
        labels: `(n,)` class labels of the pairs.
        names: the two modalities' names, used in the keys (`"image_to_audio"`, ...).

    Returns:
        `{"<a>_to_<b>": {"instance": {...}, "class": {...}}, "<b>_to_<a>": {...}, "gallery_size"}`
        where each level holds `ours`, `random` and, for the instance level,
        `class_perfect_ceiling`.
    """
    labels = np.asarray(labels).reshape(-1)
    n = len(labels)
    _, class_counts = np.unique(labels, return_inverse=False, return_counts=True)
    per_query_counts = (labels[:, None] == labels[None, :]).sum(axis=1)
    report = {"gallery_size": int(n), "ks": list(ks)}
    for (qname, queries), (gname, gallery) in (
        ((names[0], embeddings_a), (names[1], embeddings_b)),
        ((names[1], embeddings_b), (names[0], embeddings_a)),
    ):
        sims = cosine_similarities(queries, gallery)
        report[f"{qname}_to_{gname}"] = {
            "instance": {
                "ours": summarize_ranks(instance_ranks(sims), ks),
                "random": random_baseline(n, None, ks),
                "class_perfect_ceiling": class_perfect_instance_recall(labels, labels, ks),
            },
            "class": {
                "ours": summarize_ranks(class_ranks(sims, labels, labels), ks),
                "random": random_baseline(n, per_query_counts, ks),
            },
        }
    report["classes"] = int(len(class_counts))
    return report
