"""The output layer of a classifier, per target kind (`model.target`).

| target | units | activation | model output |
|---|---|---|---|
| `multiclass`, `binary` | `num_classes` | softmax | `probabilities` |
| `multilabel` | `num_classes` (one per label) | sigmoid | `probabilities` |
| `regression` | 1 | linear, then un-standardised | `value` (real units) |

A regression head predicts the standardised target; an inverted `keras.layers.Normalization`
holding the training targets' mean and variance turns it back into real units inside the
model, so the saved model, its exports and `predict` all output real values, and the
statistics travel with the model (they are in the layer's config).
"""

import keras
import numpy as np

from mmkeras import features

TARGET_KINDS = ("multiclass", "binary", "multilabel", "regression")
VALUE = "value"  # the output of a regression model
OUTPUT_DENSE = "logits_softmax"  # the main head's last Dense (any activation, despite the name)
CLASS_TARGETS = ("multiclass", "binary")


def target_of(model_config):
    """`model_config.target` (`multiclass` for model configs without the field)."""
    return getattr(model_config, "target", "multiclass")


def output_units(model_config):
    """Units of the output layer: 1 for regression, else `num_classes`."""
    return 1 if target_of(model_config) == "regression" else model_config.num_classes


def output_activation(target):
    if target not in TARGET_KINDS:
        raise ValueError(f"Unknown model.target {target!r}. Known: {list(TARGET_KINDS)}.")
    return {"multilabel": "sigmoid", "regression": None}.get(target, "softmax")


def output_name(target):
    """The name of the model's output: `probabilities`, or `value` for regression."""
    return VALUE if target == "regression" else features.PROBABILITIES


def output_layer(model_config, name):
    """The head's last `Dense` (float32 under mixed precision)."""
    return keras.layers.Dense(
        output_units(model_config), activation=output_activation(target_of(model_config)),
        dtype="float32", name=name,
    )


def target_statistics(values):
    """`(mean, std)` of regression targets (std 1 when they are constant or absent)."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if not len(values):
        return 0.0, 1.0
    std = float(values.std())
    return float(values.mean()), std if std > 1e-12 else 1.0


def unstandardize(x, mean, std, name=VALUE):
    """`x * std + mean`, as an inverted `Normalization` layer (serialised with the model)."""
    return keras.layers.Normalization(
        mean=[float(mean)], variance=[float(std) ** 2], invert=True, dtype="float32", name=name,
    )(x)


def target_of_model(model):
    """The target kind a classifier built by `build_classifier` was built for, read from the
    model: `regression` when its output is `value`, `multilabel` when its output layer
    (`OUTPUT_DENSE`) is a sigmoid, else `multiclass` (which `binary` heads serve as too; so
    do models without that layer, e.g. late fusion of per-modality probabilities)."""
    if VALUE in model.output_names:
        return "regression"
    try:
        dense = model.get_layer(OUTPUT_DENSE)
    except ValueError:
        return "multiclass"
    return "multilabel" if dense.activation is keras.activations.sigmoid else "multiclass"
