"""Figures of paired embeddings (two modalities, one row per pair): cross-modal retrieval,
held-out canonical correlations and k-means clustering - what a dual encoder is judged by."""

import numpy as np

from mmkeras.configs import ConfigError
from mmkeras.metrics.cca import LinearCCA
from mmkeras.metrics.clustering import clustering_report
from mmkeras.metrics.retrieval import retrieval_report
from mmkeras.models.dual_encoder import embedding_key

EVAL_SPACES = ("embedding", "canonical")
# Losses blind to a rotation (and scale) of either space: compared in a canonical space.
ROTATION_FREE_LOSSES = ("cca", "kernel_alignment")


def resolve_eval_space(cross_modal):
    """`cross_modal.eval_space`, else `canonical` for deep CCA and kernel alignment (blind to a
    rotation of either space) and `embedding` otherwise."""
    space = cross_modal.eval_space or (
        "canonical" if cross_modal.loss in ROTATION_FREE_LOSSES else "embedding")
    if space not in EVAL_SPACES:
        raise ConfigError(f"cross_modal.eval_space must be one of {EVAL_SPACES} or null, got {space!r}.")
    return space


def evaluate_embeddings(test_embeddings, test_labels, train_embeddings, modalities, cross_modal, seed=0):
    """Retrieval, held-out CCA and clustering figures of paired embeddings (numpy).

    `test_embeddings` / `train_embeddings`: `{"<modality>_embedding": (n, d)}` of the two
    sorted `modalities`; `cross_modal`: a `CrossModalConfig` (loss, eval_space, clustering_k).
    """
    a_key, b_key = (embedding_key(m) for m in modalities)
    a, b = test_embeddings[a_key], test_embeddings[b_key]
    cca = LinearCCA(regularization=1e-3).fit(train_embeddings[a_key], train_embeddings[b_key])
    space = resolve_eval_space(cross_modal)
    if space == "canonical":
        # Deep CCA's objective is blind to offsets and to any invertible linear map of either
        # view, so its raw outputs have an arbitrary mean, scale and rotation; compare the
        # pairs in the canonical space of the training-fitted CCA instead.
        a_space, b_space = cca.canonical_embeddings(a, b)
    elif cross_modal.loss in ROTATION_FREE_LOSSES:
        # Raw deep CCA outputs: at least remove the arbitrary mean (the training mean).
        a_space = a - train_embeddings[a_key].mean(0)
        b_space = b - train_embeddings[b_key].mean(0)
    else:
        a_space, b_space = a, b
    retrieval = retrieval_report(a_space, b_space, test_labels, names=modalities)
    retrieval["space"] = space

    held_out = cca.score(a, b)
    shuffled = cca.score(a, b[np.random.default_rng(seed).permutation(len(b))])
    correlations = {
        "fitted_on_train_examples": int(len(train_embeddings[a_key])),
        "test_examples": int(len(a)),
        "ours": {
            "top1": float(held_out[0]),
            "top10_mean": float(np.mean(held_out[:10])),
            "mean": float(np.mean(held_out)),
            "all": [round(float(c), 4) for c in held_out],
        },
        "random_shuffled_pairs": {
            "top1": float(shuffled[0]),
            "top10_mean": float(np.mean(shuffled[:10])),
            "mean": float(np.mean(shuffled)),
        },
        "train_in_sample_top10_mean": float(np.mean(cca.train_correlations_[:10])),
    }

    clustering = {}
    fused = np.concatenate([a_space, b_space], axis=1)
    for name, x in ((modalities[0], a_space), (modalities[1], b_space), ("fused", fused)):
        clustering[name] = clustering_report(x, test_labels, k=cross_modal.clustering_k, seed=seed)
    return {"retrieval": retrieval, "canonical_correlations": correlations, "clustering": clustering}
