"""Model-level fusion by a low-rank factorisation of the tensor-fusion weights (LMF)."""

import keras
from keras import ops

from mmkeras.api_export import mmkeras_export
from mmkeras.layers.fusion.base_fusion import BaseFusion


@mmkeras_export("mmkeras.layers.LowRankTensorFusion")
class LowRankTensorFusion(BaseFusion):
    """Low-rank Multimodal Fusion: a linear map of the tensor-fusion product, never built.

    A linear layer over `TensorFusion`'s outer product `Z_1 (x) ... (x) Z_M`, `Z_m = [X_m; 1]`,
    with its weight tensor factorised as a sum of `rank` rank-one terms, is computed as

    `Y = sum_{r=1..rank} lambda_r * prod_m (Z_m W_m^(r)) + b`,

    with one factor `W_m^(r)` of shape `(dim_m + 1, output_dim)` per modality and rank: linear,
    not exponential, in the number of modalities. As in `TensorFusion`, a missing modality's
    vector is zeroed but its appended 1 kept (its factor reduces to the learned constant row of
    `W_m^(r)`), so a row with no modality present gives a learned constant.

    Making it learn: the product of `M` random projections of raw ReLU embeddings starts at
    a scale set by the embeddings' scales multiplied together, with no unimodal path, so the
    encoders get tiny, noisy gradients. With `normalize="layer_norm"` each `X_m` is
    layer-normalised first (one scale for all modalities), and with `unimodal_init=True` the
    row of each factor that multiplies the appended 1 starts at 1 and the rank weights at
    `1 / rank`: every rank-one term starts as `prod_m (1 + X_m w_m^(r))`, i.e. `1 +` the sum
    of linear unimodal terms `+` small interactions, which trains like concatenation from the
    first step and learns the interactions on top. `normalize=None, unimodal_init=False` is
    the earlier behaviour (configs saved without these keys load with it).

    Per-modality weights are created in `build()`, where the modalities become known.

    Args:
        output_dim: int. Size of the fused vector.
        rank: int. Number of rank-one terms.
        kernel_initializer: initializer of the modality factors.
        normalize: None or `"layer_norm"` (per modality, before the factors).
        unimodal_init: bool. Start the factors' constant rows at 1 and the rank weights at
            `1 / rank` (see above).
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: dict of `(batch, dim_m)` tensors (dims may differ).
        presence: optional dict of `(batch,)` flags (1 present, 0 missing).

    Example:
    ```python
    import numpy as np
    import mmkeras
    fused = mmkeras.layers.LowRankTensorFusion(output_dim=8, rank=4)(
        {"audio": np.ones((2, 3)), "image": np.ones((2, 6)), "text": np.ones((2, 5))}
    )  # shape (2, 8)
    ```

    References:
        - [Liu et al., 2018](https://arxiv.org/abs/1806.00064), Efficient Low-rank Multimodal
          Fusion with Modality-Specific Factors.
    """

    normalizations = (None, "layer_norm")

    def __init__(
        self,
        output_dim,
        rank=4,
        kernel_initializer="glorot_uniform",
        normalize="layer_norm",
        unimodal_init=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if normalize not in self.normalizations:
            raise ValueError(
                f"`normalize` must be one of {self.normalizations}, got {normalize!r}."
            )
        self.output_dim = int(output_dim)
        self.rank = int(rank)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.normalize = normalize
        self.unimodal_init = bool(unimodal_init)

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        # Saved before normalisation and the unimodal start existed: the earlier behaviour.
        config.setdefault("normalize", None)
        config.setdefault("unimodal_init", False)
        return cls(**config)

    def build_fusion(self, shapes):
        self.factors = []
        self.norms = []
        for name, shape in zip(self.modality_names, shapes):
            factor = self.add_weight(
                name=f"{name}_factor",
                shape=(shape[-1] + 1, self.rank * self.output_dim),
                initializer=self.kernel_initializer,
            )
            if self.unimodal_init:
                value = ops.convert_to_numpy(factor.value)
                value[-1, :] = 1.0
                factor.assign(value)
            self.factors.append(factor)
            if self.normalize == "layer_norm":
                norm = keras.layers.LayerNormalization(dtype=self.dtype_policy, name=f"{name}_norm")
                norm.build(shape)
                self.norms.append(norm)
        rank_init = (
            keras.initializers.Constant(1.0 / self.rank) if self.unimodal_init else "glorot_uniform"
        )
        self.rank_weights = self.add_weight(
            name="rank_weights", shape=(self.rank, 1), initializer=rank_init
        )
        self.bias = self.add_weight(name="bias", shape=(self.output_dim,), initializer="zeros")

    def fuse(self, tensors, flags, training=None):
        product = None
        for i, (tensor, flag, factor) in enumerate(zip(tensors, flags, self.factors)):
            x = self.masked(ops.cast(tensor, self.compute_dtype), flag)
            if self.norms:
                x = self.masked(self.norms[i](x), flag)
            z = ops.concatenate([x, ops.ones_like(x[:, :1])], axis=-1)
            projected = ops.reshape(ops.matmul(z, factor), (-1, self.rank, self.output_dim))
            product = projected if product is None else product * projected
        weights = ops.cast(self.rank_weights, self.compute_dtype)  # (rank, 1)
        return ops.sum(product * weights, axis=1) + self.bias

    def fused_output_shape(self, shapes):
        return (shapes[0][0], self.output_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "output_dim": self.output_dim,
                "rank": self.rank,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "normalize": self.normalize,
                "unimodal_init": self.unimodal_init,
            }
        )
        return config
