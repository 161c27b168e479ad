"""Waveform front-end layers: per-example loudness normalisation and speech trimming.

Both act on raw waveforms `(batch, samples)` inside the model, so an exported model applies
them to whatever a client sends: a quiet or loud recording, with or without silence around
the words.
"""

import keras
from keras import ops

from mmkeras.api_export import mmkeras_export


def _sliding_sum(x, window, length):
    """`out[:, n] = sum(x[:, n:n + window])` for n < `length` (x has `length + window - 1`
    columns), by doubling: O(log window) slices and adds, where a stride-1 average pool of a
    256-sample window over 24,000 samples took seconds per batch. Every position adds the
    same values in the same order, so a delayed input gives exactly the delayed output."""
    total, offset, block, size = None, 0, x, 1
    while window:
        if window & 1:
            term = block[:, offset:offset + length]
            total = term if total is None else total + term
            offset += size
        window >>= 1
        if window:
            block = block[:, :-size] + block[:, size:]
            size *= 2
    return total


@mmkeras_export("mmkeras.layers.LoudnessNormalization")
class LoudnessNormalization(keras.layers.Layer):
    """Scales each waveform to a fixed loudness, so the model never sees the recording gain.

    `rms` mode divides by the root mean square of the example (the loudness of the whole
    clip), `peak` by its largest absolute sample. Silent examples (level below `epsilon`) are
    left as they are, not amplified into noise.

    Args:
        target: the RMS (or peak) level of the output.
        mode: `"rms"` or `"peak"`.
        epsilon: the smallest level that is normalised.

    Call arguments:
        inputs: float waveforms `(batch, samples)`.

    Example:
    ```python
    import numpy as np
    layer = LoudnessNormalization(target=0.1)
    x = np.sin(np.linspace(0, 100, 8000))[None].astype("float32")
    np.allclose(layer(x), layer(10.0 * x), atol=1e-6)  # True
    ```
    """

    MODES = ("rms", "peak")

    def __init__(self, target=0.1, mode="rms", epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        if mode not in self.MODES:
            raise ValueError(f"LoudnessNormalization mode must be one of {self.MODES}, got {mode!r}.")
        if target <= 0 or epsilon <= 0:
            raise ValueError(f"target and epsilon must be positive, got {target} and {epsilon}.")
        self.target = float(target)
        self.mode = mode
        self.epsilon = float(epsilon)

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        if self.mode == "rms":
            level = ops.sqrt(ops.mean(ops.square(x), axis=-1, keepdims=True))
        else:
            level = ops.max(ops.abs(x), axis=-1, keepdims=True)
        gain = ops.where(level > self.epsilon, self.target / ops.maximum(level, self.epsilon), 1.0)
        return ops.cast(x * gain, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(target=self.target, mode=self.mode, epsilon=self.epsilon)
        return config


@mmkeras_export("mmkeras.layers.SpeechTrimming")
class SpeechTrimming(keras.layers.Layer):
    """Finds the speech by its energy and moves it to the start (or centre) of the window.

    A moving average of the squared waveform (`window` samples, stride 1) is the energy
    envelope; the speech runs from the first to the last sample whose envelope is within
    `threshold_db` of the example's loudest point. That span is copied to the start
    (`align="start"`) or the middle (`align="center"`) of an output of the same length, the
    rest set to zero. Leading and trailing silence therefore stop mattering: a clip and the
    same clip with silence added give the same output, as long as the speech fits the window.
    Examples with no energy at all are returned unchanged. The threshold is relative, so the
    layer is gain invariant; on very noisy audio (noise within `threshold_db` of the speech)
    nothing is trimmed.

    Args:
        window: length of the energy moving average, in samples (~30 ms is usual).
        threshold_db: how far below the loudest point (dB, negative) speech still counts.
        align: `"start"` or `"center"`.
        output_length: samples of the output (default: the input's). A longer input window
            than the model needs (e.g. 3 s cut to 1 s) lets speech that sits anywhere in a
            recording with up to 2 s of silence around it reach the model whole.

    Call arguments:
        inputs: float waveforms `(batch, samples)`.

    Example:
    ```python
    import numpy as np
    speech = np.sin(np.linspace(0, 300, 2000)).astype("float32")
    x = np.zeros((1, 8000), "float32"); x[0, 3000:5000] = speech
    SpeechTrimming(window=200)(x)[0, :2000]  # ~ speech (it now starts at sample 0)
    ```
    """

    ALIGNS = ("start", "center")

    def __init__(self, window=256, threshold_db=-30.0, align="start", output_length=None,
                 **kwargs):
        super().__init__(**kwargs)
        if align not in self.ALIGNS:
            raise ValueError(f"SpeechTrimming align must be one of {self.ALIGNS}, got {align!r}.")
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}.")
        if threshold_db >= 0:
            raise ValueError(f"threshold_db must be negative (dB below the peak), got {threshold_db}.")
        self.window = int(window)
        self.threshold_db = float(threshold_db)
        self.align = align
        if output_length is not None and int(output_length) < 1:
            raise ValueError(f"output_length must be >= 1, got {output_length}.")
        self.output_length = None if output_length is None else int(output_length)

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        length = ops.shape(x)[-1]
        # Zero padding (not "same" pooling, which averages fewer samples at the edges) keeps
        # the envelope exactly shift-equivariant: silence added before the clip shifts it.
        left = self.window // 2
        power = ops.pad(ops.square(x), [[0, 0], [left, self.window - 1 - left]])
        energy = _sliding_sum(power, self.window, length) / float(self.window)
        peak = ops.max(energy, axis=-1, keepdims=True)
        active = energy >= peak * (10.0 ** (self.threshold_db / 10.0))
        active = ops.logical_and(active, peak > 0.0)
        positions = ops.arange(length, dtype="int32")[None, :]
        big = ops.cast(length, "int32")
        first = ops.min(ops.where(active, positions, big), axis=-1, keepdims=True)
        last = ops.max(ops.where(active, positions, -1), axis=-1, keepdims=True)
        silent = last < 0  # nothing found: keep the example as it is
        first = ops.where(silent, 0, first)
        span = ops.where(silent, big, last - first + 1)
        size = big if self.output_length is None else self.output_length
        out_positions = ops.arange(size, dtype="int32")[None, :]
        offset = ops.maximum((size - span) // 2, 0) if self.align == "center" else 0 * span
        source = out_positions - offset + first
        inside = ops.logical_and(out_positions >= offset, out_positions < offset + span)
        inside = ops.logical_and(inside, source < big)
        gathered = ops.take_along_axis(x, ops.clip(source, 0, big - 1), axis=-1)
        return ops.cast(ops.where(inside, gathered, 0.0), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        if self.output_length is None:
            return tuple(input_shape)
        return (*tuple(input_shape)[:-1], self.output_length)

    def get_config(self):
        config = super().get_config()
        config.update(window=self.window, threshold_db=self.threshold_db, align=self.align,
                      output_length=self.output_length)
        return config
