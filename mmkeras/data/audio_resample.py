"""Band-limited resampling of a waveform in the TensorFlow graph (any rate ratio, any length).

`resample(waveform, rate_in, rate_out)` works on the whole clip in the frequency domain: the
real FFT of the `n` input samples is cut (downsampling: an ideal low-pass at the new Nyquist
frequency, so nothing aliases) or zero-padded (upsampling) to the `m // 2 + 1` bins of
`m = round(n * rate_out / rate_in)` output samples, and transformed back. The rates may be
tensors known only when the graph runs (a WAV header's), the length may be unknown, and the
ratio need not be rational-friendly (22050 -> 8000 is as cheap as 16000 -> 8000): it runs in a
serving signature (`serving/serving_module.py`, `serve_raw`) and in `tf.data`.

The FFT treats the clip as periodic, so the first and last few samples may ring a little when
the clip does not start and end near zero (speech recordings with silence around them do).
Only core ops (`RFFT`, `IRFFT`) are used, so a SavedModel needs no extra kernels.
"""

import tensorflow as tf


def resampled_length(length, rate_in, rate_out):
    """`round(length * rate_out / rate_in)` as an int32 tensor (at least 1 for a non-empty clip)."""
    length = tf.cast(length, tf.float64)
    ratio = tf.cast(rate_out, tf.float64) / tf.cast(rate_in, tf.float64)
    out = tf.cast(tf.round(length * ratio), tf.int32)
    return tf.where(length > 0, tf.maximum(out, 1), 0)


def resample(waveform, rate_in, rate_out):
    """Resamples a 1-D float waveform from `rate_in` to `rate_out` Hz (band-limited, via FFT).

    Args:
        waveform: float tensor `(samples,)`, any length (also unknown when traced).
        rate_in: the waveform's rate in Hz (int scalar, Python or tensor).
        rate_out: the wanted rate in Hz.

    Returns:
        float32 `(round(samples * rate_out / rate_in),)`. Equal rates return the input.

    Example:
    ```python
    import numpy as np
    x = np.sin(2 * np.pi * 440 * np.arange(16000) / 16000).astype("float32")
    y = resample(x, 16000, 8000)  # 8000 samples of the same 440 Hz tone
    ```
    """
    waveform = tf.convert_to_tensor(waveform, tf.float32)
    rate_in = tf.cast(rate_in, tf.int64)
    rate_out = tf.cast(rate_out, tf.int64)
    n = tf.shape(waveform)[0]
    m = resampled_length(n, rate_in, rate_out)

    def convert():
        spectrum = tf.signal.rfft(waveform, fft_length=tf.reshape(n, [1]))
        keep = m // 2 + 1
        bins = n // 2 + 1
        spectrum = spectrum[:keep]
        spectrum = tf.pad(spectrum, [[0, tf.maximum(keep - bins, 0)]])
        # When the shorter length is even, its Nyquist bin stands for both signs of that
        # frequency: cutting keeps the pair (x2, `irfft` reads the real part), padding splits
        # it between the two bins it becomes (x0.5).
        shorter = tf.minimum(n, m)
        nyquist = shorter // 2
        scale = tf.where(m < n, 2.0, 0.5)
        fix = tf.logical_and(tf.equal(shorter % 2, 0), tf.not_equal(n, m))
        weights = tf.where(
            tf.logical_and(fix, tf.equal(tf.range(keep), nyquist)), scale, 1.0)
        spectrum = spectrum * tf.cast(weights, spectrum.dtype)
        out = tf.signal.irfft(spectrum, fft_length=tf.reshape(m, [1]))
        return out * (tf.cast(m, tf.float32) / tf.cast(n, tf.float32))

    same = tf.logical_or(tf.equal(rate_in, rate_out), tf.equal(n, 0))
    return tf.cond(same, lambda: waveform, convert)
