"""Closed-form checks of the moment-matching losses (linear-kernel MMD, CMD)."""

import numpy as np
import pytest
import tensorflow as tf

from mmkeras.losses.moment_matching_loss import central_moment_discrepancy
from mmkeras.losses.moment_matching_loss import linear_mmd
from mmkeras.losses.moment_matching_loss import moment_matching_loss


def _sample(n=256, d=4, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)).astype("float32")


def test_identical_samples_have_zero_discrepancy():
    x = _sample()
    assert float(linear_mmd(x, x)) == 0.0
    # sqrt(0 + 1e-12) per order: at most 5e-6 for K = 5.
    assert float(central_moment_discrepancy(x, x, moments=5)) == pytest.approx(0.0, abs=1e-5)


def test_shifted_samples_closed_form():
    x = _sample()
    mu = np.array([3.0, 0.0, -4.0, 0.0], "float32")  # ||mu|| = 5
    y = x + mu
    # Linear MMD: ||mean(x) - mean(y)||^2 = ||mu||^2 exactly.
    assert float(linear_mmd(x, y)) == pytest.approx(25.0, rel=1e-5)
    # A shift leaves every central moment unchanged: CMD = ||mu|| / bound.
    assert float(central_moment_discrepancy(x, y, moments=5)) == pytest.approx(5.0, abs=1e-4)
    assert float(central_moment_discrepancy(x, y, moments=3, bound=2.0)) == pytest.approx(
        2.5, abs=1e-4)
    # Order 1 is the distance of the means alone.
    assert float(central_moment_discrepancy(x, y, moments=1)) == pytest.approx(5.0, rel=1e-5)


def test_scaled_gaussians_second_moment():
    # N(0, 1) against N(0, 4) in d dimensions: equal means and odd moments (in expectation),
    # second central moments 1 and 4 per dimension: CMD_2 -> ||(3, ..., 3)|| = 3 sqrt(d).
    rng = np.random.default_rng(1)
    d = 3
    x = rng.normal(size=(200_000, d)).astype("float32")
    y = 2.0 * rng.normal(size=(200_000, d)).astype("float32")
    assert float(central_moment_discrepancy(x, y, moments=2)) == pytest.approx(
        3.0 * np.sqrt(d), rel=0.02)
    assert float(linear_mmd(x, y)) == pytest.approx(0.0, abs=1e-3)  # blind to the scale


def test_gradient_is_finite_at_zero_and_pulls_samples_together():
    x = tf.constant(_sample(64, 3))
    # Identical samples: the norms are 0, their gradient must still be finite.
    x_var = tf.Variable(x)
    with tf.GradientTape() as tape:
        same = central_moment_discrepancy(x_var, tf.identity(x_var) * 1.0)
    assert np.all(np.isfinite(tape.gradient(same, x_var).numpy()))
    # A gradient step on y lowers the discrepancy.
    y = tf.Variable(_sample(64, 3, seed=2) * 1.5 + 1.0)
    with tf.GradientTape() as tape:
        loss = central_moment_discrepancy(x, y)
    gradient = tape.gradient(loss, y)
    assert np.all(np.isfinite(gradient.numpy()))
    y.assign_sub(0.005 * gradient)
    assert float(central_moment_discrepancy(x, y)) < float(loss)


def test_pairwise_average_and_errors():
    a, b, c = _sample(seed=0), _sample(seed=0) + 1.0, _sample(seed=0) + 3.0
    # Pairs (a, b): 4, (a, c): 36, (b, c): 16 (d = 4 dimensions, shifts 1, 3, 2).
    assert float(moment_matching_loss("linear_mmd", [a, b, c])) == pytest.approx(
        (4.0 + 36.0 + 16.0) / 3.0, rel=1e-5)
    with pytest.raises(ValueError, match="moment matching"):
        moment_matching_loss("kl", [a, b])
    with pytest.raises(ValueError, match="two or more"):
        moment_matching_loss("cmd", [a])
    with pytest.raises(ValueError, match="moments"):
        central_moment_discrepancy(a, b, moments=0)


def test_paired_squared_distance_closed_form():
    from mmkeras.losses.moment_matching_loss import paired_squared_distance

    x = _sample()
    assert float(paired_squared_distance(x, x)) == 0.0
    # A constant offset c of every pair: the distance is ||c||^2 = 25.
    c = np.array([3.0, 0.0, -4.0, 0.0], "float32")
    assert float(paired_squared_distance(x, x + c)) == pytest.approx(25.0, rel=1e-5)
    # Unlike the moment discrepancies it sees a permutation: same distribution, pairs broken.
    shuffled = x[::-1]
    assert float(linear_mmd(x, shuffled)) == pytest.approx(0.0, abs=1e-6)
    expected = np.mean(np.sum((x - shuffled) ** 2, axis=-1))
    assert float(moment_matching_loss("paired", [x, shuffled])) == pytest.approx(
        expected, rel=1e-5)
    with pytest.raises(ValueError, match="as many rows"):
        paired_squared_distance(x, x[:10])
