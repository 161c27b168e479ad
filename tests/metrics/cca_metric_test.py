"""LinearCCA's canonical space: where deep CCA outputs become comparable across views."""

import numpy as np

from mmkeras.metrics import LinearCCA
from mmkeras.metrics.retrieval import cosine_similarities
from mmkeras.metrics.retrieval import instance_ranks


def _mixing(rng):
    """A random invertible map of condition number at most 4 (a rotation, then scales)."""
    return np.linalg.qr(rng.normal(size=(6, 6)))[0] * rng.uniform(0.5, 2.0, size=6)


MIX_X, MIX_Y = _mixing(np.random.default_rng(123)), _mixing(np.random.default_rng(124))


def _views(n, seed=0):
    """Two 6-d views sharing a 2-d latent, each hidden under large independent noise
    directions and a fixed random invertible linear map (as deep CCA outputs may be)."""
    rng = np.random.default_rng(seed)
    shared = rng.normal(size=(n, 2))
    # Distinct correlations (about 0.92 and 0.6) so the canonical directions are identified.
    private = np.array([0.3, 1.0])
    x = np.concatenate([shared + private * rng.normal(size=(n, 2)), 5.0 * rng.normal(size=(n, 4))], 1)
    y = np.concatenate([shared + private * rng.normal(size=(n, 2)), 5.0 * rng.normal(size=(n, 4))], 1)
    return x @ MIX_X + 5.0, y @ MIX_Y - 3.0


def test_canonical_embeddings_are_whitened_and_scaled_by_the_correlations():
    x, y = _views(4000)
    cca = LinearCCA(regularization=1e-9).fit(x, y)  # no ridge: exact whitening
    u, v = cca.canonical_embeddings(x, y)
    rho = cca.train_correlations_
    # Uncorrelated components, each of variance rho_k^2, on the fitting rows.
    np.testing.assert_allclose(np.cov(u.T), np.diag(rho**2), atol=2e-3)
    np.testing.assert_allclose(np.cov(v.T), np.diag(rho**2), atol=2e-3)
    assert rho[0] > 0.88 and 0.4 < rho[1] < 0.6 and rho[2] < 0.1  # two shared directions


def test_canonical_space_ignores_invertible_maps_and_makes_pairs_retrievable():
    x, y = _views(4000)
    test_x, test_y = _views(300, seed=1)
    raw_ranks = instance_ranks(cosine_similarities(test_x, test_y))
    cca = LinearCCA().fit(x, y)
    u, v = cca.canonical_embeddings(test_x, test_y)
    ranks = instance_ranks(cosine_similarities(u, v))
    assert np.median(raw_ranks) > 100  # the noise directions dominate raw cosines: ~chance
    assert np.median(ranks) < 60  # two shared dimensions: far from chance, not perfect
    # Without a ridge, any invertible linear map of a view gives the same canonical space
    # (up to the signs of the components).
    cca = LinearCCA(regularization=1e-9).fit(x, y)
    u, v = cca.canonical_embeddings(test_x, test_y)
    mix = _mixing(np.random.default_rng(2))
    u2, v2 = (LinearCCA(regularization=1e-9).fit(x @ mix, y)
              .canonical_embeddings(test_x @ mix, test_y))
    np.testing.assert_allclose(np.abs(u2[:, :2]), np.abs(u[:, :2]), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(np.abs(v2[:, :2]), np.abs(v[:, :2]), rtol=1e-3, atol=1e-3)
