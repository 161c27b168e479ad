"""Feature-level fusion by the element-wise product of the present modalities."""

import keras
from keras import ops

from mmkeras.api_export import mmkeras_export
from mmkeras.layers.fusion.base_fusion import BaseFusion


@mmkeras_export("mmkeras.layers.ProductFusion")
class ProductFusion(BaseFusion):
    """Multiplies same-sized modality vectors element-wise (multiplicative interaction).

    `X = prod_m (N_m(X_m) + offset)` over the present modalities, where `N_m` is the
    modality's normalisation (`normalize`: a per-modality `LayerNormalization`, an L2
    normalisation scaled to unit RMS, or none). A missing modality is replaced by the
    multiplicative identity 1, so a row with no modality present gives ones.

    Why the defaults (`normalize="layer_norm"`, `offset=1`): the raw product of two ReLU
    embeddings is zero wherever either is zero, and its gradient to one modality is the other
    modality's value, so both encoders starve each other from the start. With `offset=1` (the
    1 that TFN and LMF append) `(1 + x)(1 + y) = 1 + x + y + xy` keeps the unimodal terms
    beside the interaction, and normalised factors keep every product on one scale. A missing
    modality's factor 1 is the `x = 0` of this form. `normalize=None, offset=0` is the plain
    product (configs saved without these keys load with it).

    With `log_domain=True` the layer returns the log-magnitude of the product instead,
    `X = sum_m log(|X_m| + epsilon)` over the present modalities (a missing modality
    contributes `log(1) = 0`; a row with none present gives zeros). This equals
    `log(prod_m (|X_m| + epsilon))`: it drops the sign, never underflows or overflows for many
    modalities, and its gradient `sign(X_m) / (|X_m| + epsilon)` is finite at `X_m = 0`.
    With `epsilon=1` it is `log prod_m (1 + |X_m|)`, which keeps the unimodal terms (like the
    1 that tensor fusion appends: `(1 + x)(1 + y) = 1 + x + y + xy`) and maps zeros to 0; use
    it for ReLU embeddings, whose zeros a small epsilon turns into large negative features.

    Args:
        log_domain: bool. Return the sum of log-magnitudes instead of the product.
        epsilon: float. Added to `|X_m|` inside the log (only used with `log_domain=True`).
        normalize: None, `"layer_norm"` or `"l2"` (each factor scaled to unit RMS).
        offset: float. Added to every present (normalised) factor.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: dict of `(batch, dim)` tensors with the same `dim`.
        presence: optional dict of `(batch,)` flags (1 present, 0 missing).

    Example:
    ```python
    import numpy as np
    import mmkeras
    fused = mmkeras.layers.ProductFusion(normalize=None, offset=0.0)(
        {"image": 2 * np.ones((2, 4)), "audio": 3 * np.ones((2, 4))},
        presence={"audio": np.array([1.0, 0.0])},
    )  # [[6, 6, 6, 6], [2, 2, 2, 2]]
    ```

    References:
        - [Zadeh et al., 2017](https://arxiv.org/abs/1707.07250), multiplicative interactions.
    """

    same_dims = True
    normalizations = (None, "layer_norm", "l2")

    def __init__(
        self, log_domain=False, epsilon=1e-6, normalize="layer_norm", offset=1.0, **kwargs
    ):
        super().__init__(**kwargs)
        if normalize not in self.normalizations:
            raise ValueError(
                f"`normalize` must be one of {self.normalizations}, got {normalize!r}."
            )
        self.log_domain = log_domain
        self.epsilon = epsilon
        self.normalize = normalize
        self.offset = float(offset)

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        # Saved before normalisation and the offset existed: the plain product.
        config.setdefault("normalize", None)
        config.setdefault("offset", 0.0)
        return cls(**config)

    def build_fusion(self, shapes):
        self.norms = []
        if self.normalize == "layer_norm":
            for name, shape in zip(self.modality_names, shapes):
                norm = keras.layers.LayerNormalization(dtype=self.dtype_policy, name=f"{name}_norm")
                norm.build(shape)
                self.norms.append(norm)

    def _factor(self, i, tensor, flag):
        x = self.masked(ops.cast(tensor, self.compute_dtype), flag)
        if self.normalize == "layer_norm":
            x = self.norms[i](x)
        elif self.normalize == "l2":
            dim = ops.cast(x.shape[-1], x.dtype)
            norm = ops.sqrt(ops.sum(ops.square(x), axis=-1, keepdims=True) / dim + 1e-6)
            x = x / norm
        if self.offset:
            x = x + ops.cast(self.offset, x.dtype)
        return self.masked(x, flag)

    def fuse(self, tensors, flags, training=None):
        tensors = [self._factor(i, t, f) for i, (t, f) in enumerate(zip(tensors, flags))]
        if self.log_domain:
            logs = [
                self.masked(ops.log(ops.abs(self.masked(t, f)) + self.epsilon), f)
                for t, f in zip(tensors, flags)
            ]
            return sum(logs[1:], logs[0])
        factors = [ops.where(f > 0, t, ops.ones_like(t)) for t, f in zip(tensors, flags)]
        fused = factors[0]
        for factor in factors[1:]:
            fused = fused * factor
        return fused

    def fused_output_shape(self, shapes):
        return shapes[0]

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "log_domain": self.log_domain,
                "epsilon": self.epsilon,
                "normalize": self.normalize,
                "offset": self.offset,
            }
        )
        return config
