"""Cross-entropy with label smoothing for integer class labels."""

import keras
from keras import ops

from mmkeras.api_export import mmkeras_export


@mmkeras_export("mmkeras.losses.SparseLabelSmoothingCrossentropy")
class SparseLabelSmoothingCrossentropy(keras.losses.Loss):
    """Categorical cross-entropy against smoothed one-hot targets, from integer labels.

    Keras's `SparseCategoricalCrossentropy` has no `label_smoothing`; this one-hot encodes
    the integer label `y` over the `K` classes of `y_pred` and computes

        L = -sum_k ((1 - s) * [k == y] + s / K) * log p_k

    which is `CategoricalCrossentropy(label_smoothing=s)` on the one-hot labels.

    Args:
        label_smoothing: `s` in [0, 1).
        from_logits: `y_pred` holds logits (else probabilities).
        reduction, name, dtype: as for `keras.losses.Loss`.

    Example:
    ```python
    import numpy as np
    import mmkeras
    p = np.array([[0.7, 0.2, 0.1]], "float32")
    loss = mmkeras.losses.SparseLabelSmoothingCrossentropy(label_smoothing=0.3)
    loss(np.array([0]), p)  # -(0.8 log 0.7 + 0.1 log 0.2 + 0.1 log 0.1) = 0.6758
    ```

    References:
        - [Szegedy et al., 2016](https://arxiv.org/abs/1512.00567), label smoothing.
    """

    def __init__(self, label_smoothing=0.1, from_logits=False, reduction="sum_over_batch_size",
                 name="sparse_label_smoothing_crossentropy", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.label_smoothing = label_smoothing
        self.from_logits = from_logits

    def call(self, y_true, y_pred):
        if len(y_true.shape) == len(y_pred.shape):  # (batch, 1) labels
            y_true = ops.squeeze(y_true, axis=-1)
        one_hot = ops.one_hot(ops.cast(y_true, "int32"), ops.shape(y_pred)[-1], dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(
            one_hot, y_pred, from_logits=self.from_logits, label_smoothing=self.label_smoothing
        )

    def get_config(self):
        config = super().get_config()
        config.update({"label_smoothing": self.label_smoothing, "from_logits": self.from_logits})
        return config
