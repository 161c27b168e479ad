"""k-means and clustering agreement scores (NMI, ARI) from scikit-learn, with a random baseline.

scikit-learn's `KMeans`, `normalized_mutual_info_score` (arithmetic-mean normaliser) and
`adjusted_rand_score` are the implementations published clustering figures use; these
functions keep mmkeras's names and return plain Python / numpy values.
"""

import numpy as np
from sklearn import cluster
from sklearn import metrics


def _labels(labels_true, labels_pred):
    labels_true = np.asarray(labels_true).reshape(-1)
    labels_pred = np.asarray(labels_pred).reshape(-1)
    if labels_true.shape != labels_pred.shape:
        raise ValueError(f"Label arrays differ in length: {labels_true.shape} vs {labels_pred.shape}.")
    return labels_true, labels_pred


def normalized_mutual_information(labels_true, labels_pred):
    """NMI with the arithmetic-mean normaliser: `I(T; P) / ((H(T) + H(P)) / 2)`, in [0, 1]."""
    return float(metrics.normalized_mutual_info_score(*_labels(labels_true, labels_pred)))


def adjusted_rand_index(labels_true, labels_pred):
    """ARI (Hubert & Arabie, 1985): the Rand index corrected for chance; 1 = identical
    partitions, about 0 for random ones (it can be negative)."""
    return float(metrics.adjusted_rand_score(*_labels(labels_true, labels_pred)))


def kmeans(x, k, n_init=5, max_iter=100, tol=1e-6, seed=0):
    """k-means (k-means++ seeding, best of `n_init` runs by inertia), scikit-learn's `KMeans`.

    Returns:
        `(assignments (n,), centroids (k, d), inertia)`.
    """
    x = np.asarray(x, np.float64)
    if not 1 <= k <= len(x):
        raise ValueError(f"k must be in [1, {len(x)}], got {k}.")
    model = cluster.KMeans(
        n_clusters=int(k), n_init=n_init, max_iter=max_iter, tol=tol, random_state=seed
    ).fit(x)
    return model.labels_, model.cluster_centers_, float(model.inertia_)


def clustering_report(embeddings, labels, k=None, seed=0, random_draws=20):
    """k-means on `embeddings`, scored against `labels`, beside a random-assignment baseline.

    The baseline assigns each example to one of the `k` clusters at random with the same
    cluster sizes as k-means found (a permutation of the k-means assignments), averaged over
    `random_draws` draws: the chance level of NMI and ARI for that partition shape.
    """
    labels = np.asarray(labels).reshape(-1)
    k = int(k or len(np.unique(labels)))
    assign, _, inertia = kmeans(embeddings, k, seed=seed)
    rng = np.random.default_rng(seed)
    random_nmi, random_ari = [], []
    for _ in range(random_draws):
        shuffled = rng.permutation(assign)
        random_nmi.append(normalized_mutual_information(labels, shuffled))
        random_ari.append(adjusted_rand_index(labels, shuffled))
    return {
        "k": k,
        "examples": int(len(labels)),
        "inertia": inertia,
        "ours": {
            "nmi": normalized_mutual_information(labels, assign),
            "ari": adjusted_rand_index(labels, assign),
        },
        "random": {"nmi": float(np.mean(random_nmi)), "ari": float(np.mean(random_ari))},
    }
