"""NMI, ARI (hand-computed values) and k-means (scikit-learn behind mmkeras names)."""

import numpy as np
import pytest

from mmkeras.metrics import clustering


def test_hand_computed_nmi_and_ari():
    true, pred = [0, 0, 1, 1], [0, 0, 1, 2]
    # Contingency [[2, 0, 0], [0, 1, 1]]: index 1, expected 2 * 1 / 6, max 1.5 -> 4/7.
    assert clustering.adjusted_rand_index(true, pred) == pytest.approx(4 / 7)
    # I = log 2, H(T) = log 2, H(P) = 1.5 log 2 -> NMI = 2 / 2.5.
    assert clustering.normalized_mutual_information(true, pred) == pytest.approx(0.8)


def test_permutation_invariance_and_chance_level():
    labels = np.repeat(np.arange(5), 40)
    relabeled = (labels + 3) % 5
    assert clustering.adjusted_rand_index(labels, relabeled) == pytest.approx(1.0)
    assert clustering.normalized_mutual_information(labels, relabeled) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    random = rng.integers(0, 5, size=len(labels))
    assert abs(clustering.adjusted_rand_index(labels, random)) < 0.05
    assert clustering.normalized_mutual_information(labels, random) < 0.1
    assert clustering.adjusted_rand_index([0, 0, 0], [1, 1, 1]) == 1.0


def test_kmeans_recovers_separated_blobs():
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(3), 50)
    x = np.array([[0, 0], [10, 0], [0, 10]])[labels] + rng.normal(size=(150, 2))
    assign, centroids, _ = clustering.kmeans(x, 3, seed=0)
    assert clustering.adjusted_rand_index(labels, assign) == pytest.approx(1.0)
    assert centroids.shape == (3, 2)
    report = clustering.clustering_report(x, labels, seed=0)
    assert report["ours"]["nmi"] == pytest.approx(1.0)
    assert report["random"]["nmi"] < 0.1 and abs(report["random"]["ari"]) < 0.05
    with pytest.raises(ValueError, match="k must be"):
        clustering.kmeans(x, 0)
