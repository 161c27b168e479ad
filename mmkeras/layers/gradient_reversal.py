"""Domain-adversarial pieces: gradient reversal, DANN's lambda schedule, and a discriminator
that trains on the true domains while its adversarial signal reaches only the encoders.

Two adversaries are provided (`AdversarialDiscriminator(adversary=...)`):

- `reversal` (Ganin & Lempitsky, 2015): the encoders get `-lambda` times the gradient of the
  discriminator's loss. Maximising a cross-entropy is unbounded: the encoders can make the
  discriminator confidently *wrong* (swap the domains), which leaves the domains exactly as
  separable as before.
- `confusion` (Tzeng et al., 2015): the encoders minimise the cross-entropy of the
  discriminator's prediction against the uniform distribution (`domain_confusion_loss`),
  whose minimum is the uniform prediction itself, so there is nothing to gain by flipping.
"""

import math

import keras
from keras import ops

from mmkeras.api_export import mmkeras_export


def _scaled_identity(x, factor):
    """`x` forward; the upstream gradient times `factor` (a scalar tensor) backward."""

    @ops.custom_gradient
    def _identity(inputs):
        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            return upstream * ops.cast(factor, upstream.dtype)

        return ops.copy(inputs), grad

    return _identity(x)


def reverse_gradient(x, scale):
    """`x` in the forward pass; the upstream gradient times `-scale` in the backward pass."""
    return _scaled_identity(x, ops.negative(ops.convert_to_tensor(scale, dtype="float32")))


def scale_gradient(x, scale):
    """`x` in the forward pass; the upstream gradient times `scale` in the backward pass."""
    return _scaled_identity(x, ops.convert_to_tensor(scale, dtype="float32"))


def _scale_weight(layer, value):
    """`layer`'s non-trainable float32 scalar `scale` (lambda), starting at `value`;
    `GradientReversalSchedule` assigns it."""
    return layer.add_weight(shape=(), initializer=keras.initializers.Constant(value),
                            trainable=False, name="scale", dtype="float32")


def dann_lambda(progress, gamma=10.0):
    """DANN's adaptation factor `2 / (1 + exp(-gamma p)) - 1` at training progress
    `p in [0, 1]` (clipped): 0 at the start, 0.987 at `p = 0.5`, 0.99991 at `p = 1`
    (gamma 10). Ramping lambda up this way lets the task shape the embedding before the
    adversary's noisy early gradients reach it."""
    p = min(max(float(progress), 0.0), 1.0)
    return 2.0 / (1.0 + math.exp(-gamma * p)) - 1.0


@mmkeras_export("mmkeras.layers.GradientReversal")
class GradientReversal(keras.layers.Layer):
    """Gradient reversal layer (GRL): the identity, whose gradient is multiplied by `-scale`.

    Placed between a shared representation and a discriminator (e.g. one that predicts which
    modality an embedding came from), it lets one optimiser step train the discriminator to
    tell the modalities apart while pushing the encoders to make them indistinguishable.
    `scale` (DANN's lambda) is held in a non-trainable weight, so a callback can anneal it
    (`GradientReversalSchedule`, DANN's `2 / (1 + exp(-10 p)) - 1` ramp).

    Args:
        scale: the factor `lambda >= 0` of the reversed gradient.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: any tensor.

    Example:
    ```python
    import numpy as np
    import tensorflow as tf
    import mmkeras
    layer = mmkeras.layers.GradientReversal(scale=0.5)
    x = tf.constant(np.ones((2, 3), "float32"))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.reduce_sum(layer(x) * 2.0)
    tape.gradient(y, x)  # -1.0 everywhere: -0.5 * 2
    ```

    References:
        - [Ganin & Lempitsky, 2015](https://arxiv.org/abs/1409.7495), unsupervised domain
          adaptation by backpropagation.
    """

    def __init__(self, scale=1.0, **kwargs):
        super().__init__(**kwargs)
        if scale < 0:
            raise ValueError(f"scale must be >= 0, got {scale}.")
        self.initial_scale = float(scale)
        self.scale = _scale_weight(self, self.initial_scale)
        self.built = True

    def call(self, inputs):
        return reverse_gradient(inputs, ops.convert_to_tensor(self.scale))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"scale": self.initial_scale})
        return config


ADVERSARIES = ("reversal", "confusion", "inverted")


@mmkeras_export("mmkeras.layers.AdversarialDiscriminator")
class AdversarialDiscriminator(keras.layers.Layer):
    """A domain discriminator (an MLP) whose adversarial gradient reaches only its input.

    The discriminator itself always learns the *true* domains: its weights get only the
    ordinary gradient of the cross-entropy of `probabilities` (the first output) against the
    domain labels. What the encoders below receive depends on `adversary`:

    - `reversal`: `probabilities` is computed behind a gradient reversal, so the encoders get
      `-scale` times that same gradient (DANN). Returns `probabilities`.
    - `confusion`: `probabilities` is computed on the stopped input (it trains the
      discriminator only); a second output `confusion` is the same MLP with its weights held
      constant, applied to the input with its gradient scaled by `scale`. Train `confusion`
      with `domain_confusion_loss` (cross-entropy against the uniform distribution): it
      moves only the encoders, towards embeddings the current discriminator cannot tell
      apart. Returns `(probabilities, confusion)`.
    - `inverted`: the same two outputs as `confusion`; train `confusion` against the *other*
      domains' labels (the non-saturating inverted-label GAN loss, as in ADDA), whose gradient
      stays strong while the discriminator is right.

    `scale` (lambda) is a non-trainable weight, annealed by `GradientReversalSchedule`.

    Args:
        num_domains: number of domains (modalities) to tell apart.
        units: hidden units of the MLP (ReLU).
        adversary: `reversal`, `confusion` or `inverted`.
        scale: `lambda >= 0`, the weight of the adversarial gradient (0: the discriminator
            learns, the encoders are left alone).
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: `(batch, features)` embeddings.

    Example:
    ```python
    import numpy as np
    import mmkeras
    layer = mmkeras.layers.AdversarialDiscriminator(2, units=(8,), adversary="confusion")
    probabilities, confusion = layer(np.zeros((4, 3), "float32"))  # (4, 2) each, equal
    ```

    References:
        - [Ganin & Lempitsky, 2015](https://arxiv.org/abs/1409.7495), unsupervised domain
          adaptation by backpropagation.
        - [Tzeng et al., 2015](https://arxiv.org/abs/1510.02192), simultaneous deep transfer
          across domains and tasks (the domain confusion loss).
    """

    def __init__(self, num_domains, units=(64,), adversary="reversal", scale=1.0, **kwargs):
        super().__init__(**kwargs)
        if adversary not in ADVERSARIES:
            raise ValueError(f"adversary must be one of {ADVERSARIES}, got '{adversary}'.")
        if scale < 0:
            raise ValueError(f"scale must be >= 0, got {scale}.")
        if num_domains < 2:
            raise ValueError(f"num_domains must be >= 2, got {num_domains}.")
        self.num_domains = int(num_domains)
        self.units = [int(u) for u in units]
        self.adversary = adversary
        self.initial_scale = float(scale)
        self.scale = _scale_weight(self, self.initial_scale)
        self.dense_layers = [
            keras.layers.Dense(u, dtype=self.dtype_policy, name=f"hidden_{i}")
            for i, u in enumerate(self.units)
        ] + [keras.layers.Dense(self.num_domains, dtype=self.dtype_policy, name="logits")]

    def build(self, input_shape):
        shape = tuple(input_shape)
        for dense in self.dense_layers:
            dense.build(shape)
            shape = dense.compute_output_shape(shape)
        self.built = True

    def _logits(self, x, frozen=False):
        for i, dense in enumerate(self.dense_layers):
            kernel, bias = dense.kernel, dense.bias
            if frozen:
                kernel, bias = ops.stop_gradient(kernel), ops.stop_gradient(bias)
            x = ops.matmul(x, ops.cast(kernel, x.dtype)) + ops.cast(bias, x.dtype)
            if i < len(self.dense_layers) - 1:
                x = ops.relu(x)
        return ops.cast(x, "float32")

    def _mlp(self, x, frozen=False):
        return ops.softmax(self._logits(x, frozen), axis=-1)

    def logits(self, inputs):
        """The discriminator's logits on `inputs`, with ordinary gradients to both the
        weights and the inputs (for custom losses, e.g. a gradient penalty)."""
        return self._logits(inputs)

    def log_probabilities(self, inputs, branch="judge"):
        """Log-probabilities over the domains (a stable `log_softmax` of the logits: unlike
        the log of the clipped `probabilities`, its gradient does not vanish when the
        discriminator is confident beyond the clip, `p < 1e-7`), for custom training loops:

        - `judge`: on the stopped input: trains the discriminator only;
        - `reversal`: behind the gradient reversal (the encoders get `-scale` times the
          gradient of whatever loss is built on it; the weights the ordinary one);
        - `confusion`: the MLP with its weights held constant, on the input with its
          gradient scaled by `scale`: moves only the encoders.
        """
        scale = ops.convert_to_tensor(self.scale)
        if branch == "judge":
            return ops.log_softmax(self._logits(ops.stop_gradient(inputs)), axis=-1)
        if branch == "reversal":
            return ops.log_softmax(self._logits(reverse_gradient(inputs, scale)), axis=-1)
        if branch == "confusion":
            return ops.log_softmax(
                self._logits(scale_gradient(inputs, scale), frozen=True), axis=-1)
        raise ValueError(f"branch must be 'judge', 'reversal' or 'confusion', got '{branch}'.")

    def call(self, inputs):
        scale = ops.convert_to_tensor(self.scale)
        if self.adversary == "reversal":
            return self._mlp(reverse_gradient(inputs, scale))
        probabilities = self._mlp(ops.stop_gradient(inputs))
        confusion = self._mlp(scale_gradient(inputs, scale), frozen=True)
        return probabilities, confusion

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)[:-1] + (self.num_domains,)
        return shape if self.adversary == "reversal" else (shape, shape)

    def compute_output_spec(self, inputs):
        shape = tuple(inputs.shape)[:-1] + (self.num_domains,)
        spec = keras.KerasTensor(shape, dtype="float32")
        if self.adversary == "reversal":
            return spec
        return spec, keras.KerasTensor(shape, dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_domains": self.num_domains,
            "units": self.units,
            "adversary": self.adversary,
            "scale": self.initial_scale,
        })
        return config


@keras.saving.register_keras_serializable(package="mmkeras")
def domain_confusion_loss(y_true, y_pred):
    """Cross-entropy of `y_pred` (a discriminator's probabilities over `K` domains) against
    the uniform distribution: `-mean_k log p_k`, per example. `y_true` is ignored (it is
    there for `Model.fit`). Its minimum, `log K`, is reached exactly at the uniform
    prediction (Tzeng et al., 2015)."""
    del y_true
    p = ops.clip(ops.cast(y_pred, "float32"), 1e-7, 1.0)
    return -ops.mean(ops.log(p), axis=-1)


class GradientReversalSchedule(keras.callbacks.Callback):
    """Anneals lambda with DANN's ramp after an optional warm-up: before each training batch,
    every `GradientReversal` and `AdversarialDiscriminator` in the model (searched
    recursively, so a wrapper model around the network works too) gets
    `scale = initial_scale * ramp`, with `ramp = 0` for the first `warmup_steps` steps and
    then `2 / (1 + exp(-gamma p)) - 1`, `p = (step - warmup_steps) / (total_steps -
    warmup_steps)`. A model attribute `ramp` (a non-trainable scalar variable, e.g. the weight
    of a moment-matching term) is set to `ramp` itself. The current scale is logged as
    `reversal_scale` at the end of each epoch.

    The warm-up lets the task shape the embedding before any adversarial (or alignment)
    gradient reaches it: with DANN's ramp alone lambda is already 0.46 at 10% of training.

    The step count starts, at each `fit`, from the model's `optimizer.iterations` (when the
    model has an optimizer), so a run resumed from a backup continues the ramp.

    Args:
        total_steps: training steps the warm-up and ramp span (default: `epochs * steps` of
            `fit`).
        gamma: steepness of the ramp (DANN: 10).
        warmup_steps: steps with `ramp = 0` before the ramp starts.
    """

    def __init__(self, total_steps=None, gamma=10.0, warmup_steps=0):
        super().__init__()
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}.")
        self.total_steps = total_steps
        self.gamma = float(gamma)
        self.warmup_steps = int(warmup_steps)
        self.step = 0
        self.value = 0.0
        self._resume = False

    def _layers(self):
        return [layer for layer in self.model._flatten_layers(include_self=False)
                if isinstance(layer, (GradientReversal, AdversarialDiscriminator))]

    def on_train_begin(self, logs=None):
        self._resume = True
        if not self._layers() and getattr(self.model, "ramp", None) is None:
            raise ValueError("GradientReversalSchedule: the model has no GradientReversal or "
                             "AdversarialDiscriminator layer (nor a `ramp` variable).")
        if self.total_steps is None:
            steps, epochs = self.params.get("steps"), self.params.get("epochs")
            if not steps or not epochs:
                raise ValueError("GradientReversalSchedule needs total_steps when fit does not "
                                 "know its steps per epoch.")
            self.total_steps = steps * epochs

    def ramp_value(self, step):
        """The ramp (0 to 1) at training step `step`."""
        if step < self.warmup_steps:
            return 0.0
        span = max(1, self.total_steps - self.warmup_steps)
        return dann_lambda((step - self.warmup_steps) / span, self.gamma)

    def on_train_batch_begin(self, batch, logs=None):
        if self._resume:
            # The first step of this `fit`: continue from the optimizer's step count, which a
            # restore (`BackupAndRestore`, in `on_train_begin`) may have brought back.
            self._resume = False
            optimizer = getattr(self.model, "optimizer", None)
            if optimizer is not None:
                self.step = int(keras.ops.convert_to_numpy(optimizer.iterations))
        self.value = self.ramp_value(self.step)
        for layer in self._layers():
            layer.scale.assign(layer.initial_scale * self.value)
        ramp = getattr(self.model, "ramp", None)
        if ramp is not None:
            ramp.assign(self.value)
        self.step += 1

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            layers = self._layers()
            logs["reversal_scale"] = (float(ops.convert_to_numpy(layers[0].scale)) if layers
                                      else self.value)
