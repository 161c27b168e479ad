"""The experiment config of audio-video synchronisation: the standard experiment + `av_sync`.

`AVSyncExperimentConfig` extends `mmkeras.configs.ExperimentConfig` with one section, so YAML
files and `--set` overrides are checked as strictly as every other experiment's. Of the shared
sections `data` gives `data_root`, `data_dir`, `seed`, `batch_size`, `shuffle_buffer` and
`max_examples` (a cap per split); `model` gives `name`; `trainer` and `runtime` are used as in
every other script.
"""

import dataclasses
import typing

from mmkeras.configs.experiment_config import ExperimentConfig
from mmkeras.configs.experiment_config import load_config


@dataclasses.dataclass
class AVSyncConfig:
    """The dataset recipe, the candidate offsets and the model of the `av_sync` task.

    Attributes:
        train_examples: examples of the train split (`mmkeras.datasets.av_sync`).
        validation_examples: examples of the validation split.
        test_examples: examples of the test split.
        duration: seconds of video per example.
        fps: video frame rate (12.5 fps: 80 ms, 640 samples a frame).
        margin_frames: audio beyond the video on each side in the dataset, in frames
            (at least `2 * max_offset`).
        noise_std: white noise over the whole audio timeline.
        visual: `"hold"` (each word's digit stays on screen until the next word starts: no
            blank frames, the timing cues are the image changes and the digit identity) or
            `"blank"` (the digit is shown only while its word is spoken, blank in the gaps:
            frame brightness alone tracks the speech energy, an easy task).
        jitter_frames: largest per-word random visual lag/lead in frames (0 to 0.5).
        max_offset: offsets are `-max_offset..max_offset` frames (`2 * max_offset + 1`
            classes); training draws one uniformly per example and epoch.
        video_filters: filters of the per-frame conv blocks.
        frame_units: per-frame embedding units before the temporal convolutions.
        audio_filters: filters of the 1-D convolutions over log-mel frames.
        num_mel_bins: mel bands.
        fft_length: FFT size of the log-mel spectrogram.
        mel_hop: hop of the log-mel frames (divides the 640 samples of a video frame).
        embedding_dim: per-step embedding size of both streams.
        temporal_kernel: width of the temporal convolutions.
        temperature: initial temperature of the offset logits (learned).
        validation_seed: seed of the fixed validation shifts.
    """

    train_examples: int = 3000
    validation_examples: int = 500
    test_examples: int = 1000
    duration: float = 2.0
    fps: float = 12.5
    margin_frames: int = 8
    noise_std: float = 0.005
    visual: str = "hold"
    jitter_frames: float = 0.5
    max_offset: int = 4
    video_filters: typing.List[int] = dataclasses.field(default_factory=lambda: [16, 32])
    frame_units: int = 64
    audio_filters: typing.List[int] = dataclasses.field(default_factory=lambda: [64])
    num_mel_bins: int = 40
    fft_length: int = 256
    mel_hop: int = 128
    embedding_dim: int = 64
    temporal_kernel: int = 3
    temperature: float = 0.1
    validation_seed: int = 1


@dataclasses.dataclass
class AVSyncExperimentConfig(ExperimentConfig):
    """An `ExperimentConfig` with an `av_sync` section."""

    name: str = "av_sync"
    task: str = "av_sync"
    av_sync: AVSyncConfig = dataclasses.field(default_factory=AVSyncConfig)


def load_av_sync_config(path=None, overrides=()):
    """Defaults <- YAML file <- `key=value` overrides, checked strictly."""
    return load_config(path, overrides, base=AVSyncExperimentConfig())
