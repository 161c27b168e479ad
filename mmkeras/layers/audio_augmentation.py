"""Waveform augmentations for training: random gain, time shift, silence padding and speed.

Each acts on raw waveforms `(batch, samples)` inside the model, draws one value per example,
and is the identity at inference (`training=False`), so an exported model is unaffected. They
keep the waveform length: samples moved in from outside the clip are zeros (silence).
"""

import keras
from keras import ops

from mmkeras.api_export import mmkeras_export


def _read_at(x, positions):
    """`x` (batch, n) read at float `positions` (batch, m) by linear interpolation; 0 outside."""
    n = ops.shape(x)[-1]
    last = ops.cast(n - 1, "float32")
    low = ops.floor(positions)
    frac = positions - low
    low_i = ops.cast(ops.clip(low, 0.0, last), "int32")
    high_i = ops.cast(ops.clip(low + 1.0, 0.0, last), "int32")
    value = (ops.take_along_axis(x, low_i, axis=-1) * (1.0 - frac)
             + ops.take_along_axis(x, high_i, axis=-1) * frac)
    inside = ops.logical_and(positions >= 0.0, positions <= last)
    return ops.where(inside, value, 0.0)


def _read_at_band_limited(x, positions, cutoff, oversampling=4):
    """`x` (batch, n) read at float `positions` (batch, m), band-limited; 0 outside.

    Linear interpolation low-passes whatever it reads at fractional positions (on average -1.8
    dB at half the Nyquist frequency, -4.8 dB at it), so a speed-perturbed noisy recording would
    train the model on a noise floor that no real recording has. Here `x` is first upsampled
    `oversampling` times by zero-padding its spectrum, keeping only the band below `cutoff`
    (batch, 1; a fraction of Nyquist, below 1 for a faster read, against aliasing), and then
    read linearly: on the finer grid the original band sits low enough that linear reading
    costs at most ~0.5 dB (4x). Two FFTs per example, where a windowed-sinc gather of 16 taps
    was about 18x slower on CPU."""
    n = x.shape[-1]
    if n is None:
        raise ValueError("Band-limited reading needs a fixed waveform length (the FFT sizes); "
                         "use RandomSpeed(interpolation='linear') for variable lengths.")
    real, imag = ops.rfft(x)
    bins = n // 2 + 1
    band = ops.arange(bins, dtype="float32")[None, :] / float(n // 2)
    keep = ops.cast(band < cutoff, "float32")  # the Nyquist bin goes too (it has no sign)
    widths = [[0, 0], [0, (oversampling * n) // 2 + 1 - bins]]
    spectrum = (ops.pad(real * keep, widths), ops.pad(imag * keep, widths))
    fine = ops.irfft(spectrum, fft_length=oversampling * n) * float(oversampling)
    value = _read_at(fine, positions * float(oversampling))
    inside = ops.logical_and(positions >= 0.0, positions <= float(n - 1))
    return ops.where(inside, value, 0.0)


class _WaveformAugmentation(keras.layers.Layer):
    """Base: seeded, training-only, shape-preserving. Subclasses implement `augment(x)`."""

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.built = True

    def _uniform(self, x, low, high):
        batch = ops.shape(x)[0]
        return keras.random.uniform((batch, 1), low, high, seed=self.seed_generator)

    def call(self, inputs, training=False):
        if not training:
            return inputs
        x = ops.cast(inputs, "float32")
        return ops.cast(self.augment(x), self.compute_dtype)

    def _shifted(self, x, shift):
        """`x` delayed by `shift` (batch, 1) whole samples, zeros moved in: one gather, where
        `_read_at` would take two (whole-sample positions need no interpolation)."""
        n = ops.shape(x)[-1]
        source = ops.arange(n, dtype="int32")[None, :] - ops.cast(ops.round(shift), "int32")
        inside = ops.logical_and(source >= 0, source < n)
        value = ops.take_along_axis(x, ops.clip(source, 0, n - 1), axis=-1)
        return ops.where(inside, value, 0.0)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(seed=self.seed)
        return config


@mmkeras_export("mmkeras.layers.RandomGain")
class RandomGain(_WaveformAugmentation):
    """Multiplies each waveform by a random gain, uniform in dB (training only).

    Args:
        min_db: lowest gain in dB.
        max_db: highest gain in dB.
        clip: clip the result to [-1, 1], as a 16-bit WAV of the louder recording would be.
        seed: optional int seed.

    Call arguments:
        inputs: float waveforms `(batch, samples)`.
        training: the gain is applied only when True.

    Example:
    ```python
    import numpy as np
    layer = RandomGain(-6.0, 6.0, seed=0)
    louder_or_quieter = layer(np.ones((2, 100), "float32") * 0.1, training=True)
    ```
    """

    def __init__(self, min_db=-6.0, max_db=6.0, clip=True, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        if min_db > max_db:
            raise ValueError(f"min_db must be <= max_db, got {min_db} and {max_db}.")
        self.min_db = float(min_db)
        self.max_db = float(max_db)
        self.clip = bool(clip)

    def augment(self, x):
        gain_db = self._uniform(x, self.min_db, self.max_db)
        x = x * ops.power(10.0, gain_db / 20.0)
        return ops.clip(x, -1.0, 1.0) if self.clip else x

    def get_config(self):
        config = super().get_config()
        config.update(min_db=self.min_db, max_db=self.max_db, clip=self.clip)
        return config


@mmkeras_export("mmkeras.layers.RandomTimeShift")
class RandomTimeShift(_WaveformAugmentation):
    """Moves each waveform earlier or later by up to `max_shift` samples (training only).

    The shift is uniform in `[-max_shift, max_shift]` whole samples; what leaves the window is
    dropped, what enters is silence.

    Args:
        max_shift: the largest shift, in samples.
        seed: optional int seed.

    Call arguments:
        inputs: float waveforms `(batch, samples)`.
        training: the shift is applied only when True.

    Example:
    ```python
    import numpy as np
    shifted = RandomTimeShift(800, seed=0)(np.ones((2, 8000), "float32"), training=True)
    ```
    """

    def __init__(self, max_shift=800, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        if max_shift < 0:
            raise ValueError(f"max_shift must be >= 0, got {max_shift}.")
        self.max_shift = int(max_shift)

    def augment(self, x):
        shift = self._uniform(x, -float(self.max_shift), float(self.max_shift))
        return self._shifted(x, shift)

    def get_config(self):
        config = super().get_config()
        config.update(max_shift=self.max_shift)
        return config


@mmkeras_export("mmkeras.layers.RandomSilencePadding")
class RandomSilencePadding(_WaveformAugmentation):
    """Adds random leading and trailing silence, then keeps the centre (training only).

    Each example gets `lead` and `trail` zeros (each uniform in `[0, max_padding]` samples)
    before and after it, and the centre `samples` of the longer clip are kept: what the
    decoders (`fix_length`: centre crop) make of a recording with that much silence added.
    Unlike `RandomTimeShift`, its shifts follow the distribution of real silence padding
    (both ends padded independently; long paddings push the speech out of the window).

    Args:
        max_padding: the most silence added at each end, in samples.
        seed: optional int seed.

    Call arguments:
        inputs: float waveforms `(batch, samples)`.
        training: the padding is applied only when True.

    Example:
    ```python
    import numpy as np
    padded = RandomSilencePadding(4000, seed=0)(np.ones((2, 8000), "float32"), training=True)
    ```
    """

    def __init__(self, max_padding=4000, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        if max_padding < 0:
            raise ValueError(f"max_padding must be >= 0, got {max_padding}.")
        self.max_padding = int(max_padding)

    def augment(self, x):
        lead = ops.floor(self._uniform(x, 0.0, self.max_padding + 1.0))
        trail = ops.floor(self._uniform(x, 0.0, self.max_padding + 1.0))
        start = ops.floor((lead + trail) / 2.0)  # fix_length's centre crop of the longer clip
        return self._shifted(x, lead - start)

    def get_config(self):
        config = super().get_config()
        config.update(max_padding=self.max_padding)
        return config


@mmkeras_export("mmkeras.layers.RandomSpeed")
class RandomSpeed(_WaveformAugmentation):
    """Speed perturbation: plays each waveform faster or slower (training only).

    The factor is uniform in `[1 - max_change, 1 + max_change]`; the waveform is resampled
    around the centre of the window (tempo and pitch change together, as in Ko et al.'s speed
    perturbation), keeping its length: a faster clip gets silence at both ends, a slower one
    loses its ends. The resampling is band-limited (4x oversampled by FFT, anti-aliased when
    faster), so the spectrum is kept, noise floor included; `interpolation="linear"` reads the
    waveform itself linearly, which is cheaper but attenuates the upper band (about -5 dB at
    the Nyquist frequency).

    Args:
        max_change: the largest relative change of speed (0.1: 0.9x to 1.1x).
        interpolation: `"band_limited"` or `"linear"`.
        seed: optional int seed.

    Call arguments:
        inputs: float waveforms `(batch, samples)`.
        training: the change is applied only when True.

    Example:
    ```python
    import numpy as np
    x = np.sin(np.arange(8000) * 0.1)[None].astype("float32")
    faster_or_slower = RandomSpeed(0.1, seed=0)(x, training=True)
    ```

    References:
        - [Ko et al., 2015](https://www.isca-archive.org/interspeech_2015/ko15_interspeech.html),
          Audio augmentation for speech recognition.
    """

    INTERPOLATIONS = ("band_limited", "linear")

    def __init__(self, max_change=0.1, interpolation="band_limited", seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        if not 0.0 <= max_change < 1.0:
            raise ValueError(f"max_change must be in [0, 1), got {max_change}.")
        if interpolation not in self.INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {self.INTERPOLATIONS}, "
                             f"got {interpolation!r}.")
        self.max_change = float(max_change)
        self.interpolation = interpolation

    def augment(self, x):
        factor = self._uniform(x, 1.0 - self.max_change, 1.0 + self.max_change)
        length = ops.shape(x)[-1]
        centre = (ops.cast(length, "float32") - 1.0) / 2.0
        positions = ops.arange(length, dtype="float32")[None, :]
        positions = centre + (positions - centre) * factor
        if self.interpolation == "linear":
            return _read_at(x, positions)
        # Reading `factor` times faster keeps frequencies below Nyquist / factor.
        return _read_at_band_limited(x, positions, ops.minimum(1.0, 1.0 / factor))

    def get_config(self):
        config = super().get_config()
        config.update(max_change=self.max_change, interpolation=self.interpolation)
        return config
