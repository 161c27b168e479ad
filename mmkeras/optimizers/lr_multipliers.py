"""Per-layer learning-rate multipliers (`trainer.lr_multipliers`).

A pretrained encoder usually wants a smaller learning rate than the layers trained from scratch
around it, and a weak modality's encoder can want a larger one. Keras 3 optimizers take one
learning rate for every variable (there is no `MultiOptimizer` any more), so this mixin scales
it per variable inside `update_step`, which Keras calls once per variable with the current
learning rate (the schedule's value): a layer with multiplier `m` is updated with `m * lr`.
Under Adam, scaling the gradient instead would change nothing (its update is scale
invariant), hence the learning rate.

The multipliers are saved with the optimizer as `{layer name: m}`; which variables they cover
is bound to a model by `bind_layers(model)`, which the trainer calls after building the model.
A name is a layer of the model (`fusion`, `head_dense0`), at any depth (the network inside a
trainer model, a block inside an encoder), or a modality, meaning its `<modality>_encoder`.
Decoupled weight decay (AdamW, or `weight_decay` on any optimizer) is scaled too, as
`m * lr * weight_decay`, so that a small multiplier does not leave weight decay pulling a
pretrained encoder towards zero at the full rate.
"""

import math

from keras import ops


class LearningRateMultipliers:
    """Mixin for a Keras optimizer: per-layer learning-rate multipliers (see module doc)."""

    def __init__(self, *args, lr_multipliers=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lr_multipliers = {str(k): float(v) for k, v in (lr_multipliers or {}).items()}
        for name, value in self.lr_multipliers.items():
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"lr_multipliers['{name}'] must be a finite number >= 0, "
                                 f"got {value}.")
        self._factors = None  # {variable key: multiplier}, set by bind_layers

    def bind_layers(self, model):
        """Resolves the multipliers' layer names against `model` (call before training).

        Names are looked up at any depth (a trainer model that wraps the network, an encoder
        inside it); a name must be unique among the layers with weights. A variable covered by
        two names (`network` and its `audio_encoder`) takes the innermost one's multiplier.
        """
        found = {}  # name -> [(depth, layer)]
        for depth, layer in _layers_with_weights(model):
            found.setdefault(layer.name, []).append((depth, layer))
        matched = []
        for name, value in self.lr_multipliers.items():
            key = name if name in found else f"{name}_encoder"
            if key not in found:
                outer = sorted(n for n, places in found.items() if places[0][0] <= 2)
                deeper = len(found) - len(outer)
                raise ValueError(
                    f"lr_multipliers: the model has no layer '{name}' (nor '{name}_encoder') "
                    f"with weights; its layers with weights are {outer}"
                    + (f" and {deeper} more inside them." if deeper else "."))
            if len(found[key]) > 1:
                raise ValueError(
                    f"lr_multipliers: '{key}' names {len(found[key])} different layers of the "
                    "model; rename them or name a layer that contains only one.")
            matched.append((*found[key][0], value))
        factors = {}
        for _, layer, value in sorted(matched, key=lambda m: m[0]):  # inner names override
            for variable in layer.trainable_weights:
                factors[self._var_key(variable)] = value
        self._factors = factors
        return self

    def _factor(self, variable):
        if not self.lr_multipliers:
            return None
        if self._factors is None:
            raise ValueError("This optimizer has lr_multipliers but no model: call "
                             "optimizer.bind_layers(model) before training.")
        return self._factors.get(self._var_key(variable), 1.0)

    def _apply_weight_decay(self, variables):
        if self.lr_multipliers:
            return  # applied per variable in update_step, scaled by its multiplier
        super()._apply_weight_decay(variables)

    def update_step(self, gradient, variable, learning_rate):
        factor = self._factor(variable)
        if factor is None:
            return super().update_step(gradient, variable, learning_rate)
        learning_rate = learning_rate * factor
        if self.weight_decay is not None and self._use_weight_decay(variable):
            # Keras's decay step (before the update), at this variable's learning rate.
            lr = ops.cast(learning_rate, variable.dtype)
            wd = ops.cast(self.weight_decay, variable.dtype)
            variable.assign_sub(variable * wd * lr)
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        config = super().get_config()
        config["lr_multipliers"] = dict(self.lr_multipliers)
        return config


def _layers_with_weights(model):
    """`(depth, layer)` for every distinct layer with trainable weights inside `model`,
    breadth first (depth 1: `model.layers`); nested models are entered."""
    seen, queue, out = set(), [(1, layer) for layer in model.layers], []
    while queue:
        depth, layer = queue.pop(0)
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if layer.trainable_weights:
            out.append((depth, layer))
        queue += [(depth + 1, inner) for inner in getattr(layer, "layers", ())]
    return out
