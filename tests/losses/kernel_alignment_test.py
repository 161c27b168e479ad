"""Kernel layers (closed-form values) and the kernel-alignment loss."""

import math

import keras
import numpy as np
import pytest

from mmkeras import layers
from mmkeras import losses

X = np.array([[1.0, 2.0], [0.0, 1.0]], "float32")
Y = np.array([[3.0, 4.0], [1.0, -1.0], [0.0, 0.0]], "float32")


def test_linear_kernel():
    np.testing.assert_allclose(
        np.asarray(layers.LinearKernel()(X, Y)), [[11, -1, 0], [4, -1, 0]], rtol=1e-6
    )
    np.testing.assert_allclose(np.asarray(layers.LinearKernel()(X)), [[5, 2], [2, 1]], rtol=1e-6)


def test_polynomial_kernel():
    k = np.asarray(layers.PolynomialKernel(degree=2, gamma=0.5, coef0=1.0)(X, Y))
    expected = (0.5 * np.array([[11, -1, 0], [4, -1, 0]]) + 1.0) ** 2  # [[42.25, .25, 1], [9, .25, 1]]
    np.testing.assert_allclose(k, expected, rtol=1e-6)
    default_gamma = np.asarray(layers.PolynomialKernel(degree=3)(X))  # gamma = 1/2
    np.testing.assert_allclose(default_gamma[0, 0], (0.5 * 5 + 1) ** 3, rtol=1e-6)


def test_rbf_kernel_and_learnable_bandwidth():
    k = np.asarray(layers.RBFKernel(gamma=0.1)(X, Y))
    d2 = np.array([[8, 9, 5], [18, 5, 1]], "float64")
    np.testing.assert_allclose(k, np.exp(-0.1 * d2), rtol=1e-5)
    gram = np.asarray(layers.RBFKernel()(X))  # gamma = 1/dim
    np.testing.assert_allclose(np.diag(gram), 1.0, rtol=1e-6)
    assert gram[0, 1] == pytest.approx(math.exp(-0.5 * 2), rel=1e-5)
    learnable = layers.RBFKernel(gamma=2.0, trainable_gamma=True)
    learnable(X)
    assert len(learnable.trainable_weights) == 1
    with pytest.raises(ValueError, match="same dimension"):
        layers.LinearKernel()(X, np.ones((2, 3), "float32"))


@pytest.mark.parametrize(
    "layer",
    [layers.LinearKernel(), layers.PolynomialKernel(degree=2, gamma=0.3, coef0=0.5),
     layers.RBFKernel(gamma=0.7, trainable_gamma=True)],
    ids=lambda layer: type(layer).__name__,
)
def test_kernel_layers_serialize(layer):
    restored = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(restored) is type(layer) and restored.get_config() == layer.get_config()
    np.testing.assert_allclose(np.asarray(restored(X, Y)), np.asarray(layer(X, Y)), rtol=1e-6)


def test_kernel_alignment_closed_forms():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 3)).astype("float32")
    k = layers.LinearKernel()(x)
    loss = losses.KernelAlignmentLoss()
    assert float(loss(None, (k, 3.0 * k))) == pytest.approx(0.0, abs=1e-5)  # scale-invariant
    # Uncentred alignment of two explicit matrices: <K1, K2> / (|K1| |K2|).
    k1 = np.array([[1.0, 0.0], [0.0, 1.0]], "float32")
    k2 = np.array([[1.0, 1.0], [1.0, 1.0]], "float32")
    value = float(losses.KernelAlignmentLoss(centered=False)(None, (k1, k2)))
    assert value == pytest.approx(1 - 2 / (math.sqrt(2) * 2), rel=1e-6)
    # Kernel-target alignment: the ideal label kernel aligns perfectly with itself.
    labels = np.array([0, 0, 1, 1, 2])
    ideal = (labels[:, None] == labels[None, :]).astype("float32")
    assert float(loss(labels, ideal)) == pytest.approx(0.0, abs=1e-6)
    # Independent random features align poorly.
    y = rng.normal(size=(12, 3)).astype("float32")
    assert float(loss(None, (k, layers.LinearKernel()(y)))) > 0.3
    with pytest.raises(ValueError, match="labels"):
        loss(None, ideal)


def test_pair_kernel_alignment_loss_is_zero_for_rotated_views_and_serializes():
    import keras
    import numpy as np

    from mmkeras.losses import PairKernelAlignmentLoss

    rng = np.random.default_rng(0)
    a = rng.normal(size=(12, 4)).astype("float32")
    rotation, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    loss = PairKernelAlignmentLoss(embedding_keys=["image_embedding", "audio_embedding"])
    same = {"image_embedding": a, "audio_embedding": (a @ rotation).astype("float32")}
    unrelated = {"image_embedding": a,
                 "audio_embedding": rng.normal(size=(12, 4)).astype("float32")}
    assert float(loss(None, same)) < 1e-5  # a linear kernel is blind to rotations
    assert float(loss(None, unrelated)) > 0.2
    restored = PairKernelAlignmentLoss.from_config(
        keras.losses.deserialize(keras.losses.serialize(
            PairKernelAlignmentLoss(kernel="rbf", gamma=0.5))).get_config())
    assert restored.kernel == "rbf" and restored.gamma == 0.5
    rbf = PairKernelAlignmentLoss(embedding_keys=["image_embedding", "audio_embedding"],
                                  kernel="rbf", gamma=0.5)
    assert float(rbf(None, same)) < 1e-5  # distances are rotation-invariant too
