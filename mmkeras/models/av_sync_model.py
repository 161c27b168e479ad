"""Audio-video synchronisation: is the audio in sync with the frames, and by how much is it off?

SyncNet-style (Chung and Zisserman, 2016): a video stream and an audio stream each map their
input to one embedding per video frame time step; the offset logits are the (scaled, cosine)
similarities of the video embeddings with the audio embeddings shifted by each candidate
offset, averaged over time. The two streams are convolutional in time, so a shift of the
audio shifts its embeddings and the correct offset keeps the highest similarity whatever it
is: one score function serves every candidate offset (no per-offset parameters), and training
with the offset cross-entropy is contrastive, the in-sync pairing against `2 * max_offset`
shifted negatives of the same example.

The sync logit is derived from the offset logits: the log-odds of offset 0 against the others
under a uniform prior over the shifted negatives,
`logit_0 - logsumexp(logits_{d != 0}) + log(2 * max_offset)`, so 0 is the decision threshold
for a balanced in-sync / out-of-sync question.
"""

import keras
from keras import ops

from mmkeras import features
from mmkeras.api_export import mmkeras_export
from mmkeras.layers.sync_offset_scores import SyncOffsetScores

OFFSET_LOGITS = "offset_logits"
SYNC_LOGIT = "sync_logit"


@mmkeras_export("mmkeras.models.AVSyncModel")
class AVSyncModel(keras.Model):
    """Scores whether an audio window and a frame sequence are in sync, and their offset.

    A functional model with two streams and `SyncOffsetScores`:

    - video: a small CNN on every frame (`TimeDistributed`: conv blocks, flatten, dense), then
      temporal 1-D convolutions -> `(batch, frames, embedding_dim)`;
    - audio: the raw waveform -> log-mel spectrogram inside the model (the settings of
      `mmkeras.encoders.audio_cnn_encoder`: per-element floor at -40 dB) -> a 1-D convolution
      over mel frames, max-pooled to the video frame rate (`frame_samples / mel_hop` mel frames
      per video frame), temporal 1-D convolutions -> `(batch, frames + 2 * max_offset,
      embedding_dim)`.

    Args:
        frames: video frames per example.
        frame_size: frame height and width (grayscale frames, one channel).
        frame_samples: audio samples per video frame (`sample_rate / fps`).
        max_offset: largest offset in frames; the audio input has `frames + 2 * max_offset`
            frames of samples, the window in sync with the video in its middle.
        sample_rate: audio sampling rate in Hz.
        video_filters: filters of the per-frame conv blocks (3x3 conv + 2x2 max-pool each).
        frame_units: units of the per-frame dense layer.
        audio_filters: filters of the 1-D convolutions over mel frames (width 5); the first
            is followed by the pooling to the video rate.
        fft_length: FFT size of the log-mel spectrogram.
        mel_hop: hop between mel frames (must divide `frame_samples`).
        num_mel_bins: mel bands.
        embedding_dim: size of the per-step embeddings.
        temporal_kernel: width of the temporal convolutions of both streams.
        temperature: initial temperature of the offset logits.
        **kwargs: `keras.Model` arguments (`name`).

    Call arguments:
        inputs: `{"video": (batch, frames, frame_size, frame_size, 1) in [0, 1],
            "audio": (batch, (frames + 2 * max_offset) * frame_samples) in [-1, 1]}`.

    Returns:
        `{"offset_logits": (batch, 2 * max_offset + 1), "sync_logit": (batch,)}`.

    Example:
    ```python
    import numpy as np
    model = AVSyncModel(frames=4, max_offset=1, video_filters=(4,), frame_units=8,
                        audio_filters=(8,), embedding_dim=8)
    x = {"video": np.zeros((2, 4, 28, 28, 1), "float32"),
         "audio": np.zeros((2, 6 * 640), "float32")}
    model(x)["offset_logits"].shape  # (2, 3)
    ```
    """

    def __init__(
        self,
        frames=25,
        frame_size=28,
        frame_samples=640,
        max_offset=4,
        sample_rate=8000,
        video_filters=(16, 32),
        frame_units=64,
        audio_filters=(64,),
        fft_length=256,
        mel_hop=128,
        num_mel_bins=40,
        embedding_dim=64,
        temporal_kernel=3,
        temperature=0.1,
        **kwargs,
    ):
        if frame_samples % mel_hop:
            raise ValueError(f"mel_hop={mel_hop} must divide frame_samples={frame_samples}.")
        if not audio_filters:
            raise ValueError("audio_filters needs at least one entry.")
        per_frame = frame_samples // mel_hop
        audio_steps = frames + 2 * max_offset

        # Video stream.
        video = keras.Input((frames, frame_size, frame_size, 1), name=features.VIDEO)
        frame = keras.Input((frame_size, frame_size, 1))
        x = frame
        for i, f in enumerate(video_filters):
            x = keras.layers.Conv2D(f, 3, padding="same", activation="relu", name=f"conv{i}")(x)
            x = keras.layers.MaxPooling2D(2, name=f"pool{i}")(x)
        x = keras.layers.Flatten(name="flatten")(x)
        x = keras.layers.Dense(frame_units, activation="relu", name="frame_embedding")(x)
        frame_cnn = keras.Model(frame, x, name="frame_cnn")
        v = keras.layers.TimeDistributed(frame_cnn, name="per_frame")(video)
        v = keras.layers.Conv1D(embedding_dim, temporal_kernel, padding="same", activation="relu",
                                name="video_temporal")(v)
        v = keras.layers.Conv1D(embedding_dim, 1, name="video_embedding")(v)

        # Audio stream.
        audio = keras.Input((audio_steps * frame_samples,), name=features.AUDIO)
        a = keras.layers.MelSpectrogram(
            fft_length=fft_length,
            sequence_stride=mel_hop,
            sampling_rate=sample_rate,
            num_mel_bins=num_mel_bins,
            max_freq=sample_rate / 2,
            power_to_db=True,
            min_power=1e-4,  # per-element floor, as in audio_cnn_encoder
            top_db=1e9,
            name="log_mel",
        )(audio)
        a = keras.layers.Permute((2, 1), name="time_first")(a)  # (batch, mel frames, mel)
        extra = a.shape[1] - audio_steps * per_frame  # centred STFT: one frame more
        if extra:
            a = keras.layers.Cropping1D((0, extra), name="crop_mel")(a)
        a = keras.layers.BatchNormalization(name="input_norm")(a)
        for i, f in enumerate(audio_filters):
            a = keras.layers.Conv1D(f, 5, padding="same", activation="relu",
                                    name=f"audio_conv{i}")(a)
            if i == 0:
                a = keras.layers.MaxPooling1D(per_frame, name="to_frame_rate")(a)
        a = keras.layers.Conv1D(embedding_dim, temporal_kernel, padding="same", activation="relu",
                                name="audio_temporal")(a)
        a = keras.layers.Conv1D(embedding_dim, 1, name="audio_embedding")(a)

        offset_logits, sync_logit = SyncOffsetScores(
            max_offset, temperature=temperature, name="offset_scores")(v, a)
        super().__init__(
            inputs={features.VIDEO: video, features.AUDIO: audio},
            outputs={OFFSET_LOGITS: offset_logits, SYNC_LOGIT: sync_logit},
            **kwargs,
        )
        self.frames = int(frames)
        self.frame_size = int(frame_size)
        self.frame_samples = int(frame_samples)
        self.max_offset = int(max_offset)
        self.sample_rate = int(sample_rate)
        self.video_filters = [int(f) for f in video_filters]
        self.frame_units = int(frame_units)
        self.audio_filters = [int(f) for f in audio_filters]
        self.fft_length = int(fft_length)
        self.mel_hop = int(mel_hop)
        self.num_mel_bins = int(num_mel_bins)
        self.embedding_dim = int(embedding_dim)
        self.temporal_kernel = int(temporal_kernel)
        self.temperature = float(temperature)

    @property
    def offsets(self):
        """The candidate offsets in frames, in logit order (`-max_offset..max_offset`)."""
        return list(range(-self.max_offset, self.max_offset + 1))

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "frames": self.frames,
            "frame_size": self.frame_size,
            "frame_samples": self.frame_samples,
            "max_offset": self.max_offset,
            "sample_rate": self.sample_rate,
            "video_filters": self.video_filters,
            "frame_units": self.frame_units,
            "audio_filters": self.audio_filters,
            "fft_length": self.fft_length,
            "mel_hop": self.mel_hop,
            "num_mel_bins": self.num_mel_bins,
            "embedding_dim": self.embedding_dim,
            "temporal_kernel": self.temporal_kernel,
            "temperature": self.temperature,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
