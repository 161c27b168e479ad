"""The experiment config of image captioning: the standard experiment + `captioning`.

`CaptioningExperimentConfig` extends `mmkeras.configs.ExperimentConfig` with one section (the
image encoder is `model.image_encoder`, the data `data`, the optimiser `trainer`), so YAML files
and `--set` overrides are checked as strictly as every other experiment's and the resolved
config is written to the model directory.
"""

import dataclasses

from mmkeras.configs.experiment_config import ExperimentConfig
from mmkeras.configs.experiment_config import load_config


@dataclasses.dataclass
class CaptioningConfig:
    """The vocabulary, the decoder, decoding and the evaluation of a captioner.

    Attributes:
        min_count: a training-caption word seen fewer times is mapped to `<unk>`.
        max_words: captions are cut to this many words (the decoder's sequence length is
            `max_words + 1`: `<start>` + words as input, words + `<end>` as target).
        hidden_dim: decoder width.
        num_layers: decoder blocks.
        num_heads: attention heads.
        intermediate_dim: feed-forward width of each block.
        dropout: decoder dropout.
        beam_width: beams of beam search.
        length_penalty: GNMT length-normalisation exponent of beam search (0 = none).
        decode_batch_size: images decoded together.
        samples: test images written with their captions to `samples.md`.
        constant_candidates: training captions tried as the best constant caption (the most
            frequent first; 0 = all distinct training captions), chosen on the validation split.
        smoothing_epsilon: epsilon of the smoothed BLEU also reported (Chen & Cherry method 1).
    """

    min_count: int = 2
    max_words: int = 10
    hidden_dim: int = 128
    num_layers: int = 2
    num_heads: int = 4
    intermediate_dim: int = 256
    dropout: float = 0.2
    beam_width: int = 3
    length_penalty: float = 0.0
    decode_batch_size: int = 512
    samples: int = 20
    constant_candidates: int = 0
    smoothing_epsilon: float = 0.1


@dataclasses.dataclass
class CaptioningExperimentConfig(ExperimentConfig):
    """An `ExperimentConfig` with a `captioning` section."""

    name: str = "openmoji_captioning"
    task: str = "captioning"
    captioning: CaptioningConfig = dataclasses.field(default_factory=CaptioningConfig)


def load_captioning_config(path=None, overrides=()):
    """Defaults <- YAML file <- `key=value` overrides, checked strictly."""
    return load_config(path, overrides, base=CaptioningExperimentConfig())
