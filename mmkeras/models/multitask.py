"""Auxiliary task heads (multi-task learning) for the classifiers of `build_classifier`.

`model.tasks` (`mmkeras.configs.TaskConfig`) adds heads beside the main one: each reads a
modality's embedding (a per-modality auxiliary classifier, which keeps every encoder learning
even when the fused head leans on one modality) or the fused representation, and predicts a
target derived from the class label (`TARGETS`). The model's outputs are then a dict: the
main head's `probabilities` and one softmax per task, under the task's name.

Example:

```python
config = load_config(None, [
    "model.tasks=[{name: audio_digit, input: audio, loss_weight: 0.3}, "
    "{name: parity, input: fused, target: parity, loss_weight: 0.2}]",
])
model = build_classifier(config.model, config.data)  # outputs: probabilities, audio_digit, parity
model.compile(optimizer="adam", **compile_args(config.model))
dataset = dataset.map(
    lambda x, y: (x, targets(y, config.model), sample_weights(x, config.model)))
```
"""

import keras

from mmkeras import features

# Target name -> function of the integer class labels (numpy arrays or tensors).
TARGETS = {
    "label": lambda labels: labels,
    "parity": lambda labels: labels % 2,
}


def target_classes(task, num_classes):
    """The number of classes of a task's target."""
    return {"label": num_classes, "parity": 2}[task.target]


def task_heads(model_config, embeddings, fused):
    """`{task name: softmax output}` for `model_config.tasks`.

    Args:
        model_config: an `mmkeras.configs.ModelConfig`.
        embeddings: `{modality: embedding tensor}` (the encoders' outputs).
        fused: the fused tensor the main head reads, or None (decision-level fusion).
    """
    heads = {}
    for task in model_config.tasks:
        if task.input == "fused":
            if fused is None:
                raise ValueError(
                    f"model.tasks '{task.name}' reads 'fused', but decision-level fusion "
                    f"'{model_config.fusion.type}' has no fused representation: give it a "
                    "modality as input."
                )
            x = fused
        elif task.input in embeddings:
            x = embeddings[task.input]
        else:
            raise ValueError(
                f"model.tasks '{task.name}' reads '{task.input}', which is not among "
                f"model.modalities {sorted(embeddings)}."
            )
        for i, units in enumerate(task.head_units):
            x = keras.layers.Dense(units, activation="relu", name=f"{task.name}_dense{i}")(x)
        heads[task.name] = keras.layers.Dense(
            target_classes(task, model_config.num_classes), activation="softmax",
            dtype="float32", name=task.name,
        )(x)
    return heads


def output_names(model_config):
    """The output names of a model with `model_config.tasks`: the main head's first."""
    return [features.PROBABILITIES] + [task.name for task in model_config.tasks]


def targets(labels, model_config):
    """`{output name: target}` from the class labels (for `tf.data` `map` or numpy)."""
    result = {features.PROBABILITIES: labels}
    for task in model_config.tasks:
        result[task.name] = TARGETS[task.target](labels)
    return result


def sample_weights(inputs, model_config):
    """`{output name: per-example loss weight}` of a batch (for `tf.data` `map` or numpy).

    The main head and heads on `fused` weigh every example 1. A head on modality `m` weighs
    an example by its `<m>_present` flag: an example whose data lacks `m` (flag 0) adds
    nothing to that head's loss, instead of teaching it to name the class from an empty
    input (Keras sums `weight * loss` over the batch and divides by the batch size). Modality
    dropout needs no mask: the heads read the encoders' embeddings before `ModalityDropout`.

    Args:
        inputs: the batch's input dict, with the `<m>_present` flags.
        model_config: an `mmkeras.configs.ModelConfig` with `tasks`.
    """
    flags = {m: keras.ops.cast(inputs[features.presence_key(m)], "float32")
             for m in model_config.modalities}
    ones = keras.ops.ones_like(next(iter(flags.values())))
    result = {features.PROBABILITIES: ones}
    for task in model_config.tasks:
        result[task.name] = flags[task.input] if task.input in flags else ones
    return result


def compile_args(model_config):
    """`loss`, `loss_weights` and `metrics` (an `accuracy` per head) for `Model.compile`."""
    names = output_names(model_config)
    weights = [model_config.main_loss_weight] + [t.loss_weight for t in model_config.tasks]
    return dict(
        loss={name: keras.losses.SparseCategoricalCrossentropy() for name in names},
        loss_weights=dict(zip(names, weights)),
        metrics={
            name: [keras.metrics.SparseCategoricalAccuracy(name="accuracy")] for name in names
        },
    )


def main_model(model):
    """The main head of a multi-task model as a single-output model sharing its layers.

    A model without task heads (a single output) is returned as is. The result takes the
    same inputs and returns the `probabilities` tensor, like every single-task classifier,
    so evaluation, robustness sweeps and serving work on it unchanged.
    """
    if not isinstance(model.output, dict):
        return model
    return keras.Model(
        model.input, model.output[features.PROBABILITIES], name=model.name
    )
