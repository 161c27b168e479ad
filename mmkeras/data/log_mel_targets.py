"""Reconstruction targets for audio: the standardised log-mel spectrogram of a clip,
computed in tf.data with the audio encoder's settings (what the shared autoencoder rebuilds)."""

import keras
import tensorflow as tf


def log_mel_layer(audio_config):
    """A `keras.layers.MelSpectrogram` (power in dB) with `audio_config`'s settings
    (`fft_length`, `sequence_stride`, `sample_rate`, `num_mel_bins`)."""
    return keras.layers.MelSpectrogram(
        fft_length=audio_config.fft_length, sequence_stride=audio_config.sequence_stride,
        sampling_rate=audio_config.sample_rate, num_mel_bins=audio_config.num_mel_bins,
        max_freq=audio_config.sample_rate / 2, power_to_db=True,
    )


def standardized_log_mel(mel_layer, audio):
    """`(batch, samples)` -> the flattened log-mel of each clip, standardised per clip."""
    mel = mel_layer(audio)
    mel = tf.reshape(mel, [tf.shape(mel)[0], -1])
    mean = tf.reduce_mean(mel, axis=1, keepdims=True)
    std = tf.math.reduce_std(mel, axis=1, keepdims=True) + 1e-6
    return (mel - mean) / std


def log_mel_size(mel_layer, samples):
    """The length of `standardized_log_mel`'s output for clips of `samples` samples."""
    shape = mel_layer.compute_output_shape((1, samples))[1:]
    size = 1
    for dim in shape:
        size *= int(dim)
    return size
