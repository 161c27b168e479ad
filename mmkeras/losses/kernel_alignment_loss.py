"""Kernel alignment between two modalities' Gram matrices (or a Gram matrix and the labels)."""

import keras
from keras import ops

from mmkeras.api_export import mmkeras_export
from mmkeras.losses.distributed import cross_replica_concat


def center_kernel(kernel):
    """`H K H` with the centring matrix `H = I - 11^T / n`."""
    kernel = kernel - ops.mean(kernel, axis=0, keepdims=True)
    return kernel - ops.mean(kernel, axis=1, keepdims=True)


def kernel_alignment(k1, k2, centered=True, epsilon=1e-12):
    """`<K1, K2>_F / (||K1||_F ||K2||_F)` of two `(n, n)` Gram matrices, in [-1, 1].

    With `centered=True` both are centred first (centred kernel alignment; with linear kernels
    this is linear CKA).
    """
    if centered:
        k1, k2 = center_kernel(k1), center_kernel(k2)
    inner = ops.sum(k1 * k2)
    norms = ops.sqrt(ops.maximum(ops.sum(ops.square(k1)) * ops.sum(ops.square(k2)), epsilon))
    return inner / norms


def ideal_kernel(labels, dtype="float32"):
    """The label kernel `K_y[i, j] = 1 if labels[i] == labels[j] else 0`."""
    labels = ops.reshape(labels, (-1,))
    return ops.cast(ops.equal(labels[:, None], labels[None, :]), dtype)


@mmkeras_export("mmkeras.losses.KernelAlignmentLoss")
class KernelAlignmentLoss(keras.losses.Loss):
    """`1 - A(K1, K2)`: aligns the similarity structure of two modalities (or of one and labels).

    `A` is the (centred) kernel alignment of Cristianini et al. / Cortes et al.: the cosine
    between two Gram matrices of the same batch. Minimising `1 - A(K_image, K_audio)` makes
    the two modalities agree on which examples are similar, without a shared embedding space
    (the kernels may live on different feature spaces and dimensions). With a single Gram
    matrix and integer labels as `y_true`, the target is the ideal label kernel (kernel-target
    alignment).

    The alignment is computed on each replica's local batch; the value is returned once per
    row, so that Keras averages the replicas' losses.

    Args:
        centered: centre the Gram matrices first (recommended: uncentred alignment is
            dominated by the mean of the kernel).
        **kwargs: `keras.losses.Loss` arguments.

    Call arguments:
        y_true: None, or integer labels `(batch,)` when `y_pred` is one Gram matrix.
        y_pred: `(K1, K2)` (each `(batch, batch)`, e.g. from `mmkeras.layers.RBFKernel`), or
            one Gram matrix.

    Example:
    ```python
    import numpy as np
    import mmkeras
    x = np.random.default_rng(0).normal(size=(16, 3)).astype("float32")
    k = mmkeras.layers.LinearKernel()(x)
    mmkeras.losses.KernelAlignmentLoss()(None, (k, 2.0 * k))  # 0: same structure
    ```

    References:
        - [Cristianini et al., 2001](https://papers.nips.cc/paper/1946), kernel-target alignment.
        - [Cortes et al., 2012](https://jmlr.org/papers/v13/cortes12a.html), centred alignment.
    """

    def __init__(self, centered=True, name="kernel_alignment_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.centered = bool(centered)

    def __call__(self, y_true, y_pred, sample_weight=None):
        if y_true is None:  # Keras' Loss converts y_true to a tensor: None is not allowed.
            if not isinstance(y_pred, (list, tuple)):
                raise ValueError("One Gram matrix needs the labels as y_true.")
            y_true = 0.0
        return super().__call__(y_true, y_pred, sample_weight=sample_weight)

    def call(self, y_true, y_pred):
        if isinstance(y_pred, (list, tuple)):
            if len(y_pred) != 2:
                raise ValueError(f"Expected two Gram matrices, got {len(y_pred)}.")
            k1, k2 = y_pred
        else:
            k1 = y_pred
            k2 = ideal_kernel(y_true, k1.dtype)
        alignment = kernel_alignment(k1, k2, self.centered)
        return (1.0 - alignment) * ops.ones((ops.shape(k1)[0],), dtype=k1.dtype)

    def get_config(self):
        config = super().get_config()
        config.update({"centered": self.centered})
        return config


@mmkeras_export("mmkeras.losses.PairKernelAlignmentLoss")
class PairKernelAlignmentLoss(keras.losses.Loss):
    """`1 - A(K_a, K_b)` of a dual encoder's two embeddings, over the global batch.

    The Gram matrices of the two modalities' embeddings (linear: `Z Z^T`; `rbf`:
    `exp(-gamma ||z_i - z_j||^2)`) are computed on the rows gathered from every replica
    (`cross_replica_concat`), so a distributed batch gives the single-device loss. The
    objective asks the two modalities to agree on which pairs of examples are similar; like
    deep CCA it leaves each space free up to a rotation, so evaluate retrieval in a canonical
    space (`cross_modal.eval_space: canonical`).

    Args:
        embedding_keys: the two keys of `y_pred` (a dict of embeddings).
        kernel: `linear` or `rbf`.
        gamma: the RBF width (None: `1 / embedding dim`).
        centered: centre the Gram matrices (centred kernel alignment, CKA for linear).

    Call arguments:
        y_true: ignored (the pairs are their own supervision).
        y_pred: a dict holding `embedding_keys` (extra keys, e.g. `logit_scale`, are ignored).
    """

    def __init__(self, embedding_keys=("image_embedding", "audio_embedding"), kernel="linear",
                 gamma=None, centered=True, name="pair_kernel_alignment_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        if kernel not in ("linear", "rbf"):
            raise ValueError(f"kernel must be 'linear' or 'rbf', got {kernel!r}.")
        self.embedding_keys = list(embedding_keys)
        self.kernel = kernel
        self.gamma = None if gamma is None else float(gamma)
        self.centered = bool(centered)

    def _gram(self, z):
        if self.kernel == "linear":
            return ops.matmul(z, ops.transpose(z))
        squared = ops.sum(ops.square(z), axis=-1)
        distances = squared[:, None] + squared[None, :] - 2.0 * ops.matmul(z, ops.transpose(z))
        gamma = self.gamma if self.gamma is not None else 1.0 / float(z.shape[-1])
        return ops.exp(-gamma * ops.maximum(distances, 0.0))

    def __call__(self, y_true, y_pred, sample_weight=None):
        # y_true is ignored; Keras' Loss converts it to a tensor, which None cannot be.
        return super().__call__(0.0 if y_true is None else y_true, y_pred, sample_weight)

    def call(self, y_true, y_pred):
        a, b = (ops.cast(y_pred[k], "float32") for k in self.embedding_keys)
        n = ops.shape(a)[0]
        a, _ = cross_replica_concat(a)
        b, _ = cross_replica_concat(b)
        alignment = kernel_alignment(self._gram(a), self._gram(b), self.centered)
        # The global value once per local row: Keras averages the rows and scales for the
        # replicas, as for `CCALoss`.
        return (1.0 - alignment) * ops.ones((n,), dtype=a.dtype)

    def get_config(self):
        config = super().get_config()
        config.update({"embedding_keys": self.embedding_keys, "kernel": self.kernel,
                       "gamma": self.gamma, "centered": self.centered})
        return config

