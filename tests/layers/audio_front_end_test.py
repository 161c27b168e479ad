"""Loudness normalisation and speech trimming: invariance to gain and to added silence, on a
real FSDD recording from the AV-MNIST slice, and TFLite with builtin ops."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mmkeras.layers import LoudnessNormalization
from mmkeras.layers import SpeechTrimming

LENGTH = 8000


@pytest.fixture(scope="module")
def clean_recordings(avmnist_small, data_root):
    """Clean FSDD recordings (8 kHz, their own leading/trailing silence), from the archive
    the AV-MNIST slice was prepared from."""
    from mmkeras.datasets import avmnist

    _, fsdd_npz = avmnist.fetch_sources(data_root / "downloads", verbose=False)
    samples, offsets, lengths, _ = avmnist.load_fsdd(fsdd_npz)
    return [samples[o:o + n] for o, n in zip(offsets[:20], lengths[:20]) if n <= 5000][:5]


def _tone_burst(start, length, total=LENGTH, seed=0):
    rng = np.random.default_rng(seed)
    x = np.zeros(total, "float32")
    t = np.arange(length)
    x[start:start + length] = (np.sin(2 * np.pi * 440 * t / 8000) * np.hanning(length)
                               + 0.05 * rng.normal(size=length)).astype("float32")
    return x


def test_loudness_normalisation_removes_gain():
    x = _tone_burst(1000, 3000)[None]
    layer = LoudnessNormalization(target=0.1)
    out = np.asarray(layer(x))
    assert np.sqrt(np.mean(out ** 2)) == pytest.approx(0.1, rel=1e-4)
    for gain_db in (-20.0, -6.0, 6.0, 20.0):
        scaled = x * 10 ** (gain_db / 20)
        np.testing.assert_allclose(np.asarray(layer(scaled)), out, atol=1e-5)
    peak = LoudnessNormalization(target=0.5, mode="peak")
    assert np.abs(np.asarray(peak(3.0 * x))).max() == pytest.approx(0.5, rel=1e-5)
    silent = np.zeros((1, 100), "float32")
    np.testing.assert_array_equal(np.asarray(layer(silent)), silent)  # not amplified


@pytest.mark.parametrize("align", ["start", "center"])
def test_trimming_removes_leading_and_trailing_silence(align):
    layer = SpeechTrimming(window=200, threshold_db=-30.0, align=align)
    base = _tone_burst(500, 3000)
    reference = np.asarray(layer(base[None]))[0]
    # Any start at least half a window from either edge (the envelope must fit the clip).
    for start in (100, 1234, 4000, 4900):
        shifted = _tone_burst(start, 3000)
        np.testing.assert_allclose(np.asarray(layer(shifted[None]))[0], reference, atol=1e-6)
    active = np.flatnonzero(np.abs(reference) > 0)
    if align == "start":  # the span starts at most half a window before the burst
        assert active[0] <= 100 and active[-1] < 3000 + 200
    else:
        assert abs((active[0] + active[-1]) / 2 - LENGTH / 2) < 150


def test_front_end_on_real_recordings_is_gain_and_silence_invariant(clean_recordings):
    front = keras.Sequential([SpeechTrimming(window=256, threshold_db=-30.0),
                              LoudnessNormalization(target=0.1)])
    assert clean_recordings, "no FSDD recording shorter than 5000 samples in the first 20"
    for clip in clean_recordings:
        x = np.zeros((1, LENGTH), "float32")
        x[0, 200:200 + len(clip)] = clip
        reference = np.asarray(front(x))
        for gain, silence in ((0.1, 2500), (3.0, 1000), (1.0, LENGTH - 200 - len(clip))):
            moved = np.zeros((1, LENGTH), "float32")
            moved[0, silence:silence + len(clip)] = gain * clip  # -20 dB / +9.5 dB, later start
            np.testing.assert_allclose(np.asarray(front(moved)), reference, atol=1e-5)


def test_layers_convert_to_builtin_tflite(tmp_path):
    inputs = keras.Input((LENGTH,), name="audio")
    outputs = LoudnessNormalization()(SpeechTrimming(window=128)(inputs))
    model = keras.Model(inputs, outputs)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    flatbuffer = converter.convert()
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer)
    runner = interpreter.get_signature_runner()
    x = _tone_burst(2100, 2500)[None]
    (out,) = runner(audio=x).values()
    np.testing.assert_allclose(out, np.asarray(model(x)), atol=1e-5)


def test_long_window_trimmed_to_one_second_ignores_up_to_1_5_s_of_silence_and_gain(
        clean_recordings):
    """The robustness recipe: a 3 s input window trimmed to the speech and cut to 1 s
    (`output_length`), then loudness-normalised. A real recording with 0 to 1.5 s of silence
    before it, and -20 to +20 dB of gain, gives the same 1 s output (atol 1e-5)."""
    window = 24000
    front = keras.Sequential([SpeechTrimming(window=256, threshold_db=-30.0, output_length=8000),
                              LoudnessNormalization(target=0.1)])
    for clip in clean_recordings:
        x = np.zeros((1, window), "float32")
        x[0, 200:200 + len(clip)] = clip
        reference = np.asarray(front(x))
        assert reference.shape == (1, 8000) and np.abs(reference).max() > 0
        for gain_db, silence_s in ((-20.0, 0.0), (20.0, 0.5), (0.0, 1.5), (-6.0, 1.5)):
            start = 200 + int(silence_s * 8000)
            moved = np.zeros((1, window), "float32")
            moved[0, start:start + len(clip)] = clip * 10 ** (gain_db / 20)
            np.testing.assert_allclose(np.asarray(front(moved)), reference, atol=1e-5)
