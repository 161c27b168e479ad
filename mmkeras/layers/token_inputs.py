"""Backbone inputs derived from token ids: the padding mask (ids != pad id) and segment ids."""

import keras
from keras import ops

from mmkeras.api_export import mmkeras_export


@mmkeras_export("mmkeras.layers.TokenIdInputs")
class TokenIdInputs(keras.layers.Layer):
    """Maps int token ids `(batch, steps)` to the input dict of a KerasHub text backbone.

    The model input stays a single int tensor (what tf.data, TFLite and the serving signature
    carry); the padding mask is derived inside the model as `ids != pad_token_id`, and all-zero
    segment ids are added for backbones that take them (BERT).

    Args:
        pad_token_id: the tokenizer's padding id.
        segment_ids: also output `segment_ids` (zeros).
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: int token ids `(batch, steps)`.

    Returns:
        `{"token_ids", "padding_mask"[, "segment_ids"]}`, each int32 `(batch, steps)`.

    Example:
    ```python
    import numpy as np
    TokenIdInputs(0)(np.array([[101, 7632, 102, 0]]))["padding_mask"]  # [[1, 1, 1, 0]]
    ```
    """

    def __init__(self, pad_token_id=0, segment_ids=True, **kwargs):
        super().__init__(**kwargs)
        self.pad_token_id = int(pad_token_id)
        self.segment_ids = bool(segment_ids)

    def call(self, inputs):
        ids = ops.cast(inputs, "int32")
        outputs = {
            "token_ids": ids,
            "padding_mask": ops.cast(ops.not_equal(ids, self.pad_token_id), "int32"),
        }
        if self.segment_ids:
            outputs["segment_ids"] = ops.zeros_like(ids)
        return outputs

    def compute_output_spec(self, inputs):
        names = ["token_ids", "padding_mask"] + (["segment_ids"] if self.segment_ids else [])
        return {name: keras.KerasTensor(inputs.shape, dtype="int32") for name in names}

    def get_config(self):
        config = super().get_config()
        config.update({"pad_token_id": self.pad_token_id, "segment_ids": self.segment_ids})
        return config
