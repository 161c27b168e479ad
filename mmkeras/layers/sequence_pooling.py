"""Pooling of a token sequence to one vector: the first token, or the mean over a mask."""

import keras
from keras import ops

from mmkeras.api_export import mmkeras_export


@mmkeras_export("mmkeras.layers.SequencePooling")
class SequencePooling(keras.layers.Layer):
    """Pools `(batch, steps, dim)` to `(batch, dim)`.

    Args:
        mode: `"cls"` (the first token, e.g. BERT's `[CLS]` or ViT's class token) or
            `"mean"` (the mean over the steps where `padding_mask` is nonzero; all steps
            when no mask is given).
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: a float tensor `(batch, steps, dim)`.
        padding_mask: optional `(batch, steps)`, nonzero for real tokens.

    Example:
    ```python
    import numpy as np
    x = np.arange(12, dtype="float32").reshape(1, 3, 4)
    SequencePooling("mean")(x, padding_mask=np.array([[1, 1, 0]]))  # [[2, 3, 4, 5]]
    ```
    """

    MODES = ("cls", "mean")

    def __init__(self, mode="mean", **kwargs):
        super().__init__(**kwargs)
        if mode not in self.MODES:
            raise ValueError(f"SequencePooling mode must be one of {self.MODES}, got {mode!r}.")
        self.mode = mode

    def call(self, inputs, padding_mask=None):
        if self.mode == "cls":
            return inputs[:, 0, :]
        if padding_mask is None:
            return ops.mean(inputs, axis=1)
        weights = ops.cast(ops.not_equal(padding_mask, 0), inputs.dtype)[..., None]
        total = ops.sum(inputs * weights, axis=1)
        count = ops.maximum(ops.sum(weights, axis=1), ops.cast(1.0, inputs.dtype))
        return total / count

    def compute_output_shape(self, inputs_shape, padding_mask_shape=None):
        return (inputs_shape[0], inputs_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update({"mode": self.mode})
        return config
