"""Feature-level fusion by the element-wise product of the present modalities."""

from keras import ops

from mmkeras.api_export import mmkeras_export
from mmkeras.layers.fusion.base_fusion import BaseFusion


@mmkeras_export("mmkeras.layers.ProductFusion")
class ProductFusion(BaseFusion):
    """Multiplies same-sized modality vectors element-wise (multiplicative interaction).

    `X = prod_m X_m` over the present modalities: a missing modality is replaced by the
    multiplicative identity 1, so a row with no modality present gives ones.

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
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: dict of `(batch, dim)` tensors with the same `dim`.
        presence: optional dict of `(batch,)` flags (1 present, 0 missing).

    Example:
    ```python
    import numpy as np
    import mmkeras
    fused = mmkeras.layers.ProductFusion()(
        {"image": 2 * np.ones((2, 4)), "audio": 3 * np.ones((2, 4))},
        presence={"audio": np.array([1.0, 0.0])},
    )  # [[6, 6, 6, 6], [2, 2, 2, 2]]
    ```

    References:
        - [Zadeh et al., 2017](https://arxiv.org/abs/1707.07250), multiplicative interactions.
    """

    same_dims = True

    def __init__(self, log_domain=False, epsilon=1e-6, **kwargs):
        super().__init__(**kwargs)
        self.log_domain = log_domain
        self.epsilon = epsilon

    def fuse(self, tensors, flags, training=None):
        tensors = [ops.cast(t, self.compute_dtype) for t in tensors]
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
        config.update({"log_domain": self.log_domain, "epsilon": self.epsilon})
        return config
