"""Audio encoder: raw waveform -> log-mel (or MFCC) inside the model -> CNN -> embedding."""

import keras

from mmkeras import features
from mmkeras.encoders.encoder_utils import encoder_outputs
from mmkeras.layers.audio_augmentation import RandomGain
from mmkeras.layers.audio_augmentation import RandomSilencePadding
from mmkeras.layers.audio_augmentation import RandomSpeed
from mmkeras.layers.audio_augmentation import RandomTimeShift
from mmkeras.layers.audio_front_end import LoudnessNormalization
from mmkeras.layers.audio_front_end import SpeechTrimming
from mmkeras.layers.mfcc import MFCC
from mmkeras.layers.spec_augment import SpecAugment

AUDIO_FEATURES = ("log_mel", "mfcc")


def audio_cnn_encoder(
    num_samples=8000,
    sample_rate=8000,
    fft_length=256,
    sequence_stride=128,
    num_mel_bins=40,
    filters=(32, 64),
    embedding_dim=64,
    dropout=0.1,
    input_name=features.AUDIO,
    name="audio_encoder",
    features_type="log_mel",
    num_mfcc=13,
    spec_augment=None,
    return_sequence=False,
    loudness=None,
    trim_silence=False,
    trim_window=256,
    trim_threshold_db=-30.0,
    trim_length=None,
    gain_db=None,
    time_shift=0,
    silence_padding=0,
    speed=0.0,
):
    """Builds a log-mel + CNN encoder that takes waveforms, so exported models do too.

    `keras.layers.MelSpectrogram` computes the log-mel spectrogram in the graph; it converts to
    builtin-only TFLite, so the TFLite model also takes raw waveforms. `MFCC` is a constant
    matrix product and converts too. `SpecAugment` acts only in training.

    Args:
        num_samples: waveform length (mono float32 in [-1, 1]).
        sample_rate: sampling rate in Hz.
        fft_length: FFT size (and window length) in samples.
        sequence_stride: hop between frames in samples.
        num_mel_bins: mel bands.
        filters: filters of each convolution block.
        embedding_dim: size of the output embedding.
        dropout: dropout rate before the embedding layer.
        input_name: name of the `keras.Input` (the feature key).
        name: name of the returned model.
        features_type: `"log_mel"` or `"mfcc"`.
        num_mfcc: cepstral coefficients kept (`"mfcc"`).
        spec_augment: None, or a dict of `SpecAugment` arguments (`freq_masks`,
            `freq_mask_width`, `time_masks`, `time_mask_width`, `seed`).
        return_sequence: also output one token per frame:
            `{"embedding": (batch, embedding_dim), "tokens": (batch, frames', embedding_dim)}`.
        loudness: None, or `"rms"` / `"peak"`: `LoudnessNormalization` of each waveform
            (to RMS 0.1 / peak 0.5) before the spectrogram.
        trim_silence: `SpeechTrimming` before the spectrogram (energy envelope of
            `trim_window` samples, speech within `trim_threshold_db` of the loudest point),
            whose output keeps `trim_length` samples (None: `num_samples`): a long input
            window trimmed to the spectrogram's length.
        gain_db: None, or `(min_db, max_db)`: `RandomGain` in training.
        time_shift: largest `RandomTimeShift` in training, in samples (0: off).
        silence_padding: largest `RandomSilencePadding` at each end, in samples (0: off).
        speed: `RandomSpeed` `max_change` in training (0: off).
            The augmentations act on the waveform, before the front end, in training only.

    Returns:
        A functional `keras.Model` mapping `(batch, num_samples)` to `(batch, embedding_dim)`
        (or the dict above).

    Example:
    ```python
    import numpy as np
    encoder = audio_cnn_encoder(embedding_dim=16)
    encoder(np.zeros((2, 8000), "float32")).shape  # (2, 16)
    ```
    """
    if features_type not in AUDIO_FEATURES:
        raise ValueError(f"features_type must be one of {AUDIO_FEATURES}, got {features_type!r}.")
    inputs = keras.Input(shape=(num_samples,), name=input_name)
    waveform = inputs
    if speed:
        waveform = RandomSpeed(speed, name="random_speed")(waveform)
    if silence_padding:
        waveform = RandomSilencePadding(silence_padding, name="random_silence")(waveform)
    if time_shift:
        waveform = RandomTimeShift(time_shift, name="random_shift")(waveform)
    if gain_db:
        waveform = RandomGain(*gain_db, name="random_gain")(waveform)
    if trim_silence:
        waveform = SpeechTrimming(trim_window, trim_threshold_db, output_length=trim_length,
                                  name="trim_silence")(waveform)
    elif trim_length:
        raise ValueError("trim_length needs trim_silence.")
    if loudness:
        target = 0.1 if loudness == "rms" else 0.5
        waveform = LoudnessNormalization(target, loudness, name="loudness")(waveform)
    x = keras.layers.MelSpectrogram(
        fft_length=fft_length,
        sequence_stride=sequence_stride,
        sampling_rate=sample_rate,
        num_mel_bins=num_mel_bins,
        max_freq=sample_rate / 2,
        power_to_db=True,
        # Keras clips at `max(log_spec) - top_db` over the WHOLE batch, which makes one
        # example's features depend on its batch-mates. Instead every element is floored on its
        # own at `min_power` (-40 dB, about where the batch-wide clip used to land for these
        # [-1, 1] waveforms; -100 dB padding made the audio branch learn far slower), and
        # top_db is set out of reach.
        min_power=1e-4,
        top_db=1e9,
        name="log_mel",
    )(waveform)
    num_features = num_mel_bins
    if features_type == "mfcc":
        x = MFCC(num_mfcc, name="mfcc")(x)
        num_features = num_mfcc
    if spec_augment:
        x = SpecAugment(name="spec_augment", **dict(spec_augment))(x)
    x = keras.layers.Reshape((num_features, -1, 1), name="add_channel")(x)
    x = keras.layers.BatchNormalization(name="input_norm")(x)
    for i, f in enumerate(filters):
        x = keras.layers.Conv2D(f, 3, padding="same", activation="relu", name=f"conv{i}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{i}")(x)
    feature_map = x
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(embedding_dim, activation="relu", name="embedding")(x)
    tokens = None
    if return_sequence:  # (batch, freq, time, c) -> one token per time step.
        freq, time, channels = feature_map.shape[1:]
        tokens = keras.layers.Permute((2, 1, 3), name="time_first")(feature_map)
        tokens = keras.layers.Reshape((time, freq * channels), name="to_tokens")(tokens)
    outputs = encoder_outputs(outputs, tokens, embedding_dim, return_sequence)
    return keras.Model(inputs, outputs, name=name)
