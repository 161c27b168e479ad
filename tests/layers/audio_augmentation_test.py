"""Waveform augmentations: identity at inference, the drawn values within their ranges in
training, and the audio encoder wiring them (with SpecAugment) from the config."""

import numpy as np
import pytest

from mmkeras import layers
from mmkeras.configs import ExperimentConfig
from mmkeras.encoders.from_config import encoder_from_config

LENGTH = 4000


def _burst(batch=8, start=1500, length=1000):
    x = np.zeros((batch, LENGTH), "float32")
    t = np.arange(length)
    x[:, start:start + length] = 0.5 * np.sin(2 * np.pi * 300 * t / 8000) * np.hanning(length)
    return x


def _span(row):
    nonzero = np.flatnonzero(np.abs(row) > 1e-6)
    return nonzero[0], nonzero[-1]


@pytest.mark.parametrize("layer", [
    layers.RandomGain(-20.0, 20.0, seed=1), layers.RandomTimeShift(500, seed=1),
    layers.RandomSilencePadding(2000, seed=1), layers.RandomSpeed(0.2, seed=1),
], ids=lambda layer: type(layer).__name__)
def test_identity_at_inference_and_changes_in_training(layer):
    x = _burst()
    np.testing.assert_array_equal(np.asarray(layer(x)), x)
    np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)
    y = np.asarray(layer(x, training=True))
    assert y.shape == x.shape
    assert not np.allclose(y, x), "training must change the waveforms"
    assert len({tuple(np.round(row[::50], 4)) for row in y}) > 1, "one draw per example"


def test_gain_is_uniform_in_db_and_clips_at_full_scale():
    x = _burst(batch=64) * 0.1  # peak 0.05: +20 dB stays below full scale
    y = np.asarray(layers.RandomGain(-20.0, 20.0, seed=2)(x, training=True))
    gains_db = 20 * np.log10(np.abs(y).max(axis=1) / np.abs(x).max(axis=1))
    assert gains_db.min() >= -20.0 - 1e-3 and gains_db.max() <= 20.0 + 1e-3
    assert gains_db.min() < -10 and gains_db.max() > 10  # spread over the range
    loud = np.asarray(layers.RandomGain(20.0, 20.0, seed=2)(_burst(), training=True))
    assert np.abs(loud).max() == pytest.approx(1.0)  # 0.5 * 10 clipped


def test_shift_and_silence_padding_move_the_burst_within_their_range():
    x = _burst(batch=64)
    start, end = _span(x[0])
    shifted = np.asarray(layers.RandomTimeShift(500, seed=3)(x, training=True))
    moves = np.array([_span(row)[0] - start for row in shifted])
    assert np.abs(moves).max() <= 500 and moves.min() < -100 and moves.max() > 100
    for row, move in zip(shifted, moves):  # moved, not changed
        np.testing.assert_allclose(row[start + move:end + move + 1], x[0, start:end + 1], atol=1e-6)
    padded = np.asarray(layers.RandomSilencePadding(2000, seed=3)(x, training=True))
    moves = np.array([_span(row)[0] - start for row in padded if np.any(row)])
    # lead - floor((lead + trail) / 2) for lead, trail in [0, 2000]: within +-1000.
    assert np.abs(moves).max() <= 1000 and moves.std() > 100


def test_speed_changes_the_duration_by_the_factor():
    x = _burst(batch=64, start=1000, length=2000)
    y = np.asarray(layers.RandomSpeed(0.2, seed=4)(x, training=True))
    durations = np.array([np.subtract(*_span(row)[::-1]) for row in y]) / 1999.0
    factors = 1.0 / durations
    assert factors.min() >= 0.8 - 0.01 and factors.max() <= 1.2 + 0.01
    assert factors.std() > 0.05


def _band_change_db(layer, x):
    """Mean power change (dB) of `x` through `layer` in 8 equal bands up to Nyquist."""
    y = np.asarray(layer(x, training=True))
    middle = slice(1000, 3000)  # away from the ends, where a slower read runs out
    before = np.mean(np.abs(np.fft.rfft(x[:, middle], axis=-1)) ** 2, axis=0)
    after = np.mean(np.abs(np.fft.rfft(y[:, middle], axis=-1)) ** 2, axis=0)
    bands = np.array_split(np.arange(1, len(before)), 8)
    return np.array([10 * np.log10(after[b].mean() / before[b].mean()) for b in bands])


def test_speed_keeps_the_spectrum_of_a_noise_floor():
    noise = (0.1 * np.random.default_rng(5).standard_normal((32, LENGTH))).astype("float32")
    kept = _band_change_db(layers.RandomSpeed(0.1, seed=6), noise)
    # Flat to 3/4 of Nyquist; the top band loses what a faster read must drop against aliasing.
    assert np.abs(kept[:6]).max() < 0.5, kept
    assert -3.0 < kept[7] < -0.5, kept
    linear = _band_change_db(layers.RandomSpeed(0.1, interpolation="linear", seed=6), noise)
    assert linear[5] < -2.5 and linear[7] < -4.0, linear  # what linear reading does instead
    with pytest.raises(ValueError, match="interpolation must be one of"):
        layers.RandomSpeed(0.1, interpolation="cubic")


def test_encoder_from_config_wires_front_end_and_augmentations():
    config = ExperimentConfig()
    a = config.model.audio_encoder
    a.trim_silence, a.trim_length, a.loudness = True, 8000, "rms"
    a.augment_gain_db, a.augment_shift, a.augment_silence, a.augment_speed = 6.0, 0.1, 0.5, 0.1
    a.freq_masks, a.time_masks = 2, 2
    config.data.audio_samples = 24000
    encoder = encoder_from_config("audio", config.model, config.data)
    by_name = {layer.name: layer for layer in encoder.layers}
    assert by_name["random_gain"].min_db == -6.0 and by_name["random_gain"].max_db == 6.0
    assert by_name["random_shift"].max_shift == 800
    assert by_name["random_silence"].max_padding == 4000
    assert by_name["random_speed"].max_change == pytest.approx(0.1)
    assert by_name["spec_augment"].freq_masks == 2
    assert by_name["trim_silence"].output_length == 8000
    assert encoder.input_shape == (None, 24000)
    assert by_name["log_mel"].output.shape[-1] == 8000 // 128 + 1  # a 1 s spectrogram
    x = np.random.default_rng(0).normal(size=(2, 24000)).astype("float32") * 0.1
    np.testing.assert_array_equal(np.asarray(encoder(x)), np.asarray(encoder(x)))  # inference
    assert not np.allclose(np.asarray(encoder(x, training=True)), np.asarray(encoder(x)))
    plain = encoder_from_config("audio", ExperimentConfig().model, ExperimentConfig().data)
    assert not {"random_gain", "random_shift", "random_silence", "random_speed", "spec_augment",
                "trim_silence", "loudness"} & {layer.name for layer in plain.layers}  # off by default
