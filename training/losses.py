"""The classifier's loss and metrics from `trainer.*`, shared by `fit` (training/trainer.py)
and the custom loop (training/custom_loop.py).

`trainer.label_smoothing: 0` (the default) is Keras's `SparseCategoricalCrossentropy`, the
loss before the option existed; above 0 it is
`mmkeras.losses.SparseLabelSmoothingCrossentropy` (one-hot targets smoothed towards uniform).
The loss class lives in `mmkeras/losses/` so that a saved model's compile config reloads
wherever `mmkeras` is imported (serving never imports `training/`).
"""

import keras

from mmkeras.losses import SparseLabelSmoothingCrossentropy


def classification_loss(trainer_config=None, reduction="sum_over_batch_size"):
    """The single-task head's loss over probabilities and integer labels.

    Args:
        trainer_config: a `TrainerConfig` (None: no label smoothing).
        reduction: a Keras loss reduction (None: per-example losses, for the custom loop).
    """
    smoothing = getattr(trainer_config, "label_smoothing", 0.0) or 0.0
    if smoothing:
        return SparseLabelSmoothingCrossentropy(label_smoothing=smoothing, reduction=reduction)
    return keras.losses.SparseCategoricalCrossentropy(reduction=reduction)


def classification_metrics():
    """The metrics every classifier training logs (`accuracy`, `val_accuracy`)."""
    return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]


def classification_compile_args(trainer_config=None):
    """`model.compile` keyword arguments for a single-task classifier: `loss` and `metrics`."""
    return dict(loss=classification_loss(trainer_config), metrics=classification_metrics())
