"""In-graph band-limited resampling, and the front end's output for a 16 kHz recording
resampled to 8 kHz against the native 8 kHz recording (real FSDD clips)."""

import io
import wave

import keras
import numpy as np
import pytest
import scipy.signal
import tensorflow as tf

from mmkeras.data import example_schema
from mmkeras.data.audio_resample import resample
from mmkeras.layers import LoudnessNormalization
from mmkeras.layers import SpeechTrimming


def _tone(rate, seconds=0.5, freq=440.0):
    t = np.arange(int(rate * seconds)) / rate
    return (np.sin(2 * np.pi * freq * t) * np.hanning(len(t))).astype("float32"), t


@pytest.mark.parametrize("rate_in,rate_out", [(16000, 8000), (22050, 8000), (8000, 22050),
                                              (44100, 16000), (8000, 8000)])
def test_tone_is_resampled_to_the_same_tone(rate_in, rate_out):
    x, _ = _tone(rate_in)
    y = resample(x, rate_in, rate_out).numpy()
    expected, _ = _tone(rate_out)
    assert y.shape == (round(len(x) * rate_out / rate_in),)
    n = min(len(y), len(expected))
    np.testing.assert_allclose(y[:n], expected[:n], atol=2e-3)


def test_downsampling_removes_what_the_new_rate_cannot_hold():
    """A 6 kHz tone at 22.05 kHz has no place at 8 kHz (Nyquist 4 kHz): it must vanish, not
    fold back to 2 kHz as dropping samples would."""
    x, _ = _tone(22050, freq=6000.0)
    y = resample(x, 22050, 8000).numpy()
    assert np.sqrt(np.mean(y ** 2)) < 1e-3 * np.sqrt(np.mean(x ** 2))
    naive = x[np.round(np.arange(len(y)) * 22050 / 8000).astype(int)]
    assert np.sqrt(np.mean(naive ** 2)) > 0.1  # what a rate-blind decoder would keep


def test_matches_scipy_fft_resampling_for_odd_and_even_lengths():
    rng = np.random.default_rng(0)
    for n, rate_in, rate_out in [(1000, 16000, 8000), (1001, 22050, 8000), (999, 8000, 16000)]:
        x = rng.normal(size=n)
        expected = scipy.signal.resample(x, round(n * rate_out / rate_in))
        np.testing.assert_allclose(resample(x.astype("float32"), rate_in, rate_out).numpy(),
                                   expected, atol=1e-5)


def test_runs_in_a_graph_with_unknown_length_and_rates():
    fn = tf.function(resample, input_signature=[
        tf.TensorSpec([None], tf.float32), tf.TensorSpec([], tf.int32),
        tf.TensorSpec([], tf.int32)])
    for n, rate in ((11025, 22050), (8001, 16000), (0, 16000)):
        out = fn(tf.zeros([n]), rate, 8000)
        assert out.shape == (round(n * 8000 / rate),)


def _wav(samples, rate):
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.clip(np.rint(samples * 32767), -32768, 32767).astype("<i2").tobytes())
    return buffer.getvalue()


@pytest.fixture(scope="module")
def fsdd_clips(avmnist_small, data_root):
    """Clean FSDD recordings (8 kHz), from the archive the AV-MNIST slice was prepared from."""
    from mmkeras.datasets import avmnist

    _, fsdd_npz = avmnist.fetch_sources(data_root / "downloads", verbose=False)
    samples, offsets, lengths, _ = avmnist.load_fsdd(fsdd_npz)
    return [samples[o:o + n].astype(np.float64) for o, n in zip(offsets[:8], lengths[:8])]


# The largest mean absolute difference of the front end's log-mel output (dB) between a
# recording sent at 16 kHz / 22.05 kHz and the same recording at its native 8 kHz (single
# cells near the -40 dB floor differ by a few dB; the mean is what the CNN sees).
LOG_MEL_TOLERANCE_DB = 0.25


def test_front_end_output_of_a_resampled_recording_matches_the_native_one(fsdd_clips):
    inputs = keras.Input((8000,))
    x = SpeechTrimming(window=256, threshold_db=-30.0)(inputs)
    x = LoudnessNormalization(target=0.1)(x)
    x = keras.layers.MelSpectrogram(
        fft_length=256, sequence_stride=128, sampling_rate=8000, num_mel_bins=40,
        max_freq=4000, power_to_db=True, min_power=1e-4, top_db=1e9)(x)
    front_end = keras.Model(inputs, x)

    def decoded(wav):
        return example_schema.decode_wav_bytes(tf.constant(wav), 1.0, 8000, 8000).numpy()

    for rate in (16000, 22050):
        for clip in fsdd_clips:
            native = decoded(_wav(clip, 8000))
            # The recording at `rate`, made by another method (polyphase) than the decoder's.
            up = scipy.signal.resample_poly(clip, rate // 50, 160)
            sent = decoded(_wav(up, rate))
            error = np.sqrt(np.mean((sent - native) ** 2) / np.mean(native ** 2))
            a, b = front_end(native[None]), front_end(sent[None])
            # Measured: error <= 0.13, mean log-mel difference <= 0.09 dB over these clips.
            assert error < 0.2, rate
            assert float(np.mean(np.abs(a - b))) < LOG_MEL_TOLERANCE_DB, rate
            # A rate-blind decoder (the old behaviour) is far off.
            blind = example_schema.decode_wav_bytes(tf.constant(_wav(up, rate)), 1.0, 8000).numpy()
            assert float(np.mean(np.abs(front_end(blind[None]) - a))) > 10 * LOG_MEL_TOLERANCE_DB


def test_decoder_rejects_another_rate_naming_both():
    wav = _wav(_tone(22050)[0], 22050)
    with pytest.raises(tf.errors.InvalidArgumentError, match="22050 Hz.*8000 Hz"):
        example_schema.decode_wav_bytes(tf.constant(wav), 1.0, 8000, 8000, "reject")
    ok = example_schema.decode_wav_bytes(tf.constant(_wav(_tone(8000)[0], 8000)), 1.0, 8000,
                                         8000, "reject")
    assert ok.shape == (8000,)
    with pytest.raises(ValueError, match="wav_rate"):
        example_schema.decode_wav_bytes(tf.constant(wav), 1.0, 8000, 8000, "drop")
