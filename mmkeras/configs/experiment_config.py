"""Typed experiment configs: experiment = data + model + trainer + runtime.

Configs are dataclasses with defaults; YAML files under `training/configs/` override them and
`--set a.b=value` overrides those. Unknown keys are rejected with their dotted name. The
resolved config is written into the model directory (`config.yaml`) so that evaluation and
export can run from the directory alone.
"""

import copy
import dataclasses
import math
import pathlib
import typing

import yaml

from mmkeras.errors import UserError


class ConfigError(UserError, ValueError):
    """A config file or override is invalid."""


@dataclasses.dataclass
class DataConfig:
    """Where the examples come from and how they are batched.

    Attributes:
        dataset: dataset name (`"avmnist"`).
        variant: `"weakened"` (the AV-MNIST recipe) or `"clean"`.
        snr_db: audio signal-to-noise ratio of the weakened variant.
        image_energy: fraction of image PCA variance kept by the weakened variant.
        seed: seed of the dataset recipe (splits, pairing, noise).
        data_root: cache root (default: `$MMKERAS_DATA` or `~/.cache/mmkeras`).
        data_dir: an already prepared dataset directory (overrides the recipe fields).
        images_per_class: prepare only a slice (tests, quick runs); None = all.
        clips_per_class: likewise for audio clips.
        max_examples: cap on examples per split after loading (None = all).
        modalities: the modalities fed to the model, in the manifest's column names.
        batch_size: the GLOBAL batch size (split across replicas).
        audio_samples: waveform length after centre crop / zero pad.
        shuffle_buffer: shuffle buffer (0 = no shuffle).
        cache: cache decoded examples in memory after the first epoch.
        deterministic: keep tf.data element order deterministic.
        bad_input: per-modality policy for unreadable files: `error` (stop, naming file and
            row), `skip` (drop the row, count it) or `mask` (keep the row, mark the modality
            missing). A single string applies to every modality.
        image_shape: decoded image shape `[height, width, channels]`.
        image_resize: None (every image must already be `image_shape`; others are bad input),
            `pad` (resized to fit, aspect kept, padded with `image_fill`), `crop` (resized to
            cover, aspect kept, centre-cropped) or `stretch`. With a resize, images of any
            channel count are converted to `image_shape[-1]` (alpha composited on
            `image_fill`).
        image_fill: the padding / background value in [0, 1] (0 black, 1 white).
        max_image_pixels: an image of more pixels (read from its header, before decoding) is
            bad input (None: no limit beyond Pillow's own decompression-bomb guard).
        audio_channels: channels an audio file must have (None: any; the first is used).
        empty_is_missing: an empty file or text cell is a missing modality (presence 0,
            counted in the report's `missing`), not bad input.
        audio_sample_rate: the rate the model expects; files at another rate are resampled
            (tensorflow-io) when `audio_resample` is true, else rejected by the row checks.
        audio_resample: resample audio files to `audio_sample_rate`.
        text_max_tokens: vocabulary size of the `TextVectorization` adapted on the train split.
        text_sequence_length: token ids per text (padded / truncated).
        video_frames: frames per clip (evenly sampled, or padded with the last frame).
        video_shape: decoded frame shape `[height, width, channels]`.
        tabular_numeric: manifest columns read as numbers (the `tabular` modality).
        tabular_categorical: manifest columns read as categories (looked up, embedded).
        tabular_categorical_bins: ids per categorical column: its train-split vocabulary,
            most frequent first, capped at `bins - 1`; id 0 = unknown.
        timeseries_steps: steps per multichannel series (the `timeseries` modality, `.npy`
            files of shape `(steps, channels)`), cropped / zero-padded.
        timeseries_channels: channels of each series.
        modality_types: `{feature: type}` of the features whose name is not their modality
            type (`mmkeras.features.modality_type`): `{title: text, description: text,
            front: image, back: image}` gives each column its own input, presence flag and
            encoder (built from `model.<type>_encoder`; images share `image_shape`, texts
            `text_*`, each text feature gets its own vocabulary). Checked when loaded.
    """

    dataset: str = "avmnist"
    variant: str = "weakened"
    snr_db: float = -6.0
    image_energy: float = 0.25
    seed: int = 0
    data_root: typing.Optional[str] = None
    data_dir: typing.Optional[str] = None
    images_per_class: typing.Optional[int] = None
    clips_per_class: typing.Optional[int] = None
    max_examples: typing.Optional[int] = None
    modalities: typing.List[str] = dataclasses.field(default_factory=lambda: ["image", "audio"])
    batch_size: int = 64
    audio_samples: int = 8000
    shuffle_buffer: int = 10000
    cache: bool = True
    deterministic: bool = True
    bad_input: typing.Any = "error"
    image_shape: typing.List[int] = dataclasses.field(default_factory=lambda: [28, 28, 1])
    image_resize: typing.Optional[str] = None
    image_fill: float = 0.0
    max_image_pixels: typing.Optional[int] = None
    audio_channels: typing.Optional[int] = 1
    empty_is_missing: bool = False
    audio_sample_rate: int = 8000
    audio_resample: bool = False
    text_max_tokens: int = 5000
    text_sequence_length: int = 32
    video_frames: int = 10
    video_shape: typing.List[int] = dataclasses.field(default_factory=lambda: [64, 64, 1])
    tabular_numeric: typing.List[str] = dataclasses.field(default_factory=list)
    tabular_categorical: typing.List[str] = dataclasses.field(default_factory=list)
    tabular_categorical_bins: int = 32
    timeseries_steps: int = 100
    timeseries_channels: int = 6
    modality_types: typing.Dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class ImageEncoderConfig:
    """An image encoder over `data.image_shape` images.

    Attributes:
        type: `cnn` (the small LeNet-style CNN), `resnet` (residual blocks), `application`
            (a `keras.applications` backbone named by `backbone`) or `keras_hub` (a KerasHub
            backbone from `preset`, with `pooling`, `trainable`, `trainable_blocks`,
            `lora_rank` as in `TextEncoderConfig`).
        filters: filters of each block (`cnn`: conv blocks; `resnet`: one stage each).
        blocks_per_stage: residual blocks per stage (`resnet`).
        backbone: a `keras.applications` name, e.g. `MobileNetV2` (`application`).
        weights: None (random init) or a local `.weights.h5` / `.h5` file (`application`);
            nothing is downloaded.
        trainable_backbone: train the backbone's weights (`application`).
    """

    type: str = "cnn"
    filters: typing.List[int] = dataclasses.field(default_factory=lambda: [32, 64])
    embedding_dim: int = 64
    dropout: float = 0.1
    blocks_per_stage: int = 1
    backbone: str = "MobileNetV2"
    weights: typing.Optional[str] = None
    trainable_backbone: bool = True
    preset: typing.Optional[str] = None
    pooling: str = "mean"
    trainable: str = "full"
    trainable_blocks: int = 2
    lora_rank: typing.Optional[int] = None


@dataclasses.dataclass
class AudioEncoderConfig:
    """Log-mel spectrogram (computed inside the model) + a small CNN."""

    sample_rate: int = 8000
    fft_length: int = 256
    sequence_stride: int = 128
    num_mel_bins: int = 40
    filters: typing.List[int] = dataclasses.field(default_factory=lambda: [32, 64])
    embedding_dim: int = 64
    dropout: float = 0.1
    # `log_mel` or `mfcc` (first `num_mfcc` DCT coefficients of the log-mel spectrogram).
    features: str = "log_mel"
    num_mfcc: int = 13
    # SpecAugment (training only): masks per example and their maximum widths; 0 = off.
    freq_masks: int = 0
    freq_mask_width: int = 8
    time_masks: int = 0
    time_mask_width: int = 10
    # Waveform front end inside the model (mmkeras/layers/audio_front_end.py), applied to
    # whatever a client sends: per-example loudness normalisation (`rms` / `peak`, or none)
    # and energy-based trimming that moves the speech to the start of the window.
    loudness: typing.Optional[str] = None
    trim_silence: bool = False
    trim_window: int = 256
    trim_threshold_db: float = -30.0
    # Samples kept after trimming (None: `data.audio_samples`): with a longer input window
    # (`data.audio_samples: 24000`, 3 s), speech with up to 2 s of silence around it still
    # reaches the spectrogram whole, which then stays `trim_length` long.
    trim_length: typing.Optional[int] = None
    # Waveform augmentation in training only (mmkeras/layers/audio_augmentation.py; 0 = off):
    # random gain, uniform in +-`augment_gain_db` dB; time shift up to `augment_shift` s;
    # silence up to `augment_silence` s added at each end (then centre-cropped); speed
    # perturbation by up to +-`augment_speed` (0.1: 0.9x-1.1x).
    augment_gain_db: float = 0.0
    augment_shift: float = 0.0
    augment_silence: float = 0.0
    augment_speed: float = 0.0
    # What the exported `serve_raw` / `serve_examples` do with a WAV at another rate than
    # `sample_rate`: `resample` (band-limited, in the graph) or `reject` (HTTP 400 / gRPC
    # INVALID_ARGUMENT naming both rates).
    serve_wav_rate: str = "resample"
    # `speech` (the AV-MNIST configs): the front end and augmentation in `SPEECH_RECIPE`, each
    # filled only where the config does not set it, and, unless the config sets
    # `data.audio_samples` or `trim_length`, a window 3x the clip (`trim_length` = the clip):
    # robust to loudness, silence and rate, and as accurate (README "Audio across loudness,
    # silence and sample rates"). `none` (the default): the keys as given, e.g. for sounds
    # whose level or timing carries meaning.
    recipe: str = "none"


@dataclasses.dataclass
class TextEncoderConfig:
    """Token ids (from the `TextVectorization` adapted in tf.data) -> embedding.

    Attributes:
        type: `gru`, `lstm` (bidirectional), `cnn` (1D convolutions), `transformer`, or
            `keras_hub` (a pretrained KerasHub backbone: `preset` and the fields below; its
            tokenizer replaces the `TextVectorization`, `data.text_sequence_length` counts
            its special tokens).
        token_dim: size of the token embeddings.
        units: recurrent units per direction (`gru`, `lstm`), filters (`cnn`) or the
            feed-forward width (`transformer`).
        num_layers: stacked layers (`cnn`, `transformer`).
        num_heads: attention heads (`transformer`).
        embedding_dim: size of the output embedding.
        dropout: dropout rate.
        preset: (`keras_hub`) a KerasHub preset handle, a local directory (KerasHub or
            Hugging Face format) or the short name of an installed offline preset
            (`all-minilm-l6-v2`; `mmkeras.encoders.keras_hub_presets`).
        pooling: (`keras_hub`) `cls`, `mean` (over the padding mask) or `pooled`.
        trainable: (`keras_hub`) `frozen`, `full` or `last_n_blocks`.
        trainable_blocks: (`keras_hub`) blocks trained with `last_n_blocks`.
        lora_rank: (`keras_hub`) LoRA adapters of this rank (None: off).
    """

    type: str = "gru"
    token_dim: int = 64
    units: int = 64
    num_layers: int = 1
    num_heads: int = 2
    embedding_dim: int = 64
    dropout: float = 0.1
    preset: typing.Optional[str] = None
    pooling: str = "mean"
    trainable: str = "full"
    trainable_blocks: int = 2
    lora_rank: typing.Optional[int] = None


@dataclasses.dataclass
class VideoEncoderConfig:
    """Frames `(time, height, width, channels)` -> embedding.

    Attributes:
        type: `cnn_gru` (TimeDistributed CNN + GRU), `cnn_attention` (TimeDistributed CNN +
            attention pooling over time) or `conv3d`.
    """

    type: str = "cnn_gru"
    filters: typing.List[int] = dataclasses.field(default_factory=lambda: [16, 32])
    units: int = 64
    embedding_dim: int = 64
    dropout: float = 0.1


@dataclasses.dataclass
class TabularEncoderConfig:
    """Normalised numbers + embedded categories -> MLP.

    Attributes:
        category_dim: embedding size per categorical column (`data.tabular_categorical_bins`
            ids each).
        units: hidden units of the MLP.
    """

    category_dim: int = 8
    units: typing.List[int] = dataclasses.field(default_factory=lambda: [64])
    embedding_dim: int = 64
    dropout: float = 0.1


@dataclasses.dataclass
class TimeSeriesEncoderConfig:
    """Multichannel series `(steps, channels)` -> embedding: `cnn` (1D CNN) or `gru`."""

    type: str = "cnn"
    filters: typing.List[int] = dataclasses.field(default_factory=lambda: [32, 64])
    units: int = 64
    embedding_dim: int = 64
    dropout: float = 0.1


@dataclasses.dataclass
class FusionConfig:
    """The fusion method.

    Attributes:
        type: a name in `mmkeras.layers.fusion.FUSION_LAYERS` (feature/model level, e.g.
            `concat`), or `late` (decision level: one head per modality, predictions combined).
        args: keyword arguments of the fusion layer.
    """

    type: str = "concat"
    args: typing.Dict[str, typing.Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class MissingModalityConfig:
    """How the model treats missing modalities (the defaults change nothing).

    Attributes:
        dropout: per-modality probability of dropping the modality of a training example
            (`mmkeras.layers.ModalityDropout`), e.g. `{image: 0.3, audio: 0.3}`; empty: none.
        allow_all_missing: let modality dropout remove every modality of an example (by
            default one of the example's present modalities is then kept).
        imputation: `none` (the fusion layer masks a missing modality), or `zero`, `learned`,
            `mean`: the missing embedding is replaced (`mmkeras.layers.ModalityImputation`)
            and the fusion layer sees every modality as present.
        mean_momentum: momentum of the running mean embedding (`imputation: mean`).
    """

    dropout: typing.Dict[str, float] = dataclasses.field(default_factory=dict)
    allow_all_missing: bool = False
    imputation: str = "none"
    mean_momentum: float = 0.99


# Targets a task head can learn, each derived from the example's class label (the functions
# are in `mmkeras.models.multitask.TARGETS`).
TASK_TARGETS = ("label", "parity")
# Output and input names a task may not take.
_RESERVED_TASK_NAMES = ("probabilities", "class_id", "embedding", "tokens", "label", "fused")


@dataclasses.dataclass
class TaskConfig:
    """An auxiliary head trained beside the main one (multi-task learning).

    The model then has one output per head: the main head's `probabilities` and one
    `<name>` output per task; the training loss is `main_loss_weight * main loss +
    sum(loss_weight * task loss)`. The model of record (`model.keras`, what serving exports)
    keeps the main head only; `multitask.keras` keeps every head.

    Attributes:
        name: the head's output name (metrics `<name>_accuracy`, `val_<name>_accuracy`).
        input: what the head reads: a modality (that encoder's embedding, e.g. `audio`: a
            per-modality auxiliary head) or `fused` (the fusion output the main head reads;
            feature-level fusion only).
        target: `label` (the class label) or `parity` (label % 2, a second task derived from
            the label).
        loss_weight: weight of the head's cross-entropy in the total loss.
        head_units: hidden ReLU units before the head's softmax (empty: a linear softmax).
    """

    name: str = ""
    input: str = "fused"
    target: str = "label"
    loss_weight: float = 1.0
    head_units: typing.List[int] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class EncoderSourceConfig:
    """Encoders whose weights come from another experiment's model directory (transfer).

    Attributes:
        model_dir: a model directory written by `training.train` (e.g. `runs/x/audio_only`).
        modalities: the encoders to take from it; each must be in `model.modalities` and in
            the source model. Empty: every modality the two models share.
        trainable: fine-tune the loaded encoders (true) or freeze them (false: their weights,
            BatchNormalization statistics included, stay as loaded; the flag is saved with
            the model).
        model_file: the model file inside `model_dir` (`model.keras`, the model of record, or
            e.g. `checkpoints/best.keras`).
        sha256: the expected SHA-256 of that file (None: not checked). The trainer writes the
            checksum it loaded into the run's `config.yaml`, so a run started again from that
            file loads the same weights or stops with a `ConfigError`.
    """

    model_dir: str = ""
    modalities: typing.List[str] = dataclasses.field(default_factory=list)
    trainable: bool = False
    model_file: str = "model.keras"
    sha256: typing.Optional[str] = None


@dataclasses.dataclass
class ModelConfig:
    """A multi-input classifier: one encoder per modality, a fusion, a head.

    Attributes:
        name: the model's name (also the TF Serving model name on export).
        modalities: modalities the model takes (a subset of `data.modalities`); one modality
            gives a unimodal baseline.
        num_classes: classes of the head (labels of a `multilabel` target; ignored for
            `regression`, which has one output).
        target: what the head predicts (`TARGET_KINDS`): `multiclass` (a softmax over
            `num_classes`; the default), `binary` (the same, two classes), `multilabel` (one
            sigmoid per label; the manifest label is a JSON list of 0/1) or `regression` (a
            number: a linear head whose output is un-standardised with the training targets'
            mean and standard deviation, so the model outputs real units; the output is
            named `value`).
        head_units: hidden units of the MLP head (empty: a linear head).
        head_dropout: dropout before the output layer.
        missing: modality dropout and imputation of missing modalities.
        tasks: auxiliary heads (multi-task learning, `TaskConfig`), e.g. one softmax per
            modality embedding; empty: the main head only.
        main_loss_weight: weight of the main head's loss when there are tasks.
        init_from: encoders loaded from other model directories (transfer,
            `EncoderSourceConfig`), frozen or fine-tuned.
    """

    name: str = "avmnist_fusion"
    modalities: typing.List[str] = dataclasses.field(default_factory=lambda: ["image", "audio"])
    num_classes: int = 10
    target: str = "multiclass"
    image_encoder: ImageEncoderConfig = dataclasses.field(default_factory=ImageEncoderConfig)
    audio_encoder: AudioEncoderConfig = dataclasses.field(default_factory=AudioEncoderConfig)
    text_encoder: TextEncoderConfig = dataclasses.field(default_factory=TextEncoderConfig)
    video_encoder: VideoEncoderConfig = dataclasses.field(default_factory=VideoEncoderConfig)
    tabular_encoder: TabularEncoderConfig = dataclasses.field(default_factory=TabularEncoderConfig)
    timeseries_encoder: TimeSeriesEncoderConfig = dataclasses.field(
        default_factory=TimeSeriesEncoderConfig
    )
    fusion: FusionConfig = dataclasses.field(default_factory=FusionConfig)
    head_units: typing.List[int] = dataclasses.field(default_factory=lambda: [64])
    head_dropout: float = 0.2
    missing: MissingModalityConfig = dataclasses.field(default_factory=MissingModalityConfig)
    tasks: typing.List[TaskConfig] = dataclasses.field(default_factory=list)
    main_loss_weight: float = 1.0
    init_from: typing.List[EncoderSourceConfig] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class TrainerConfig:
    """Optimisation and checkpointing (`training/optimizers.py`, `training/losses.py`).

    `recipe` picks the values of the recipe keys (optimizer, weight decay, schedule, warm-up,
    clipping, label smoothing) that the config leaves unset, when it is loaded (`load_config`):
    `standard` is `STANDARD_RECIPE` (AdamW, weight decay 0.05, a 1-epoch warm-up then cosine
    decay, clipnorm 1, label smoothing 0.1 where the target has one-hot classes: +2.1 points on
    AV-MNIST early fusion over 3 seeds, README "Training recipe"); `legacy` is this class's own
    defaults (Adam, constant learning rate), the recipe before issue #18; `auto` (the default)
    is `standard` for the classification task and `legacy` for the other tasks, where it was
    not measured. A key the config sets always wins; the loaded config records the recipe used.

    The model of record (`model.keras`) is always the best epoch by `monitor` (the best
    checkpoint), so early stopping with the best weights restored is
    `early_stopping_patience: N`: training stops after N epochs without improvement and the
    best epoch's model is what is saved, evaluated and exported.

    Attributes:
        optimizer: `adam`, `adamw` or `sgd` (momentum `momentum`).
        weight_decay: decoupled weight decay (`variable -= lr * weight_decay * variable`,
            Keras 3's rule for every optimizer). None: the optimizer's own default (AdamW
            0.004, Adam and SGD none), the behaviour before the option existed.
        momentum: SGD momentum.
        lr_schedule: `constant` or `cosine` (cosine decay to `learning_rate * min_lr_ratio`
            over the steps after the warm-up).
        warmup_epochs: linear warm-up from 0 to `learning_rate` over this many epochs
            (fractions allowed); `warmup_steps` (if set) counts optimizer steps instead.
        min_lr_ratio: the cosine schedule's final learning rate, as a fraction of
            `learning_rate`.
        clipnorm: clip each weight's gradient to this norm (None: off).
        global_clipnorm: clip all gradients together to this global norm (None: off; not
            with `clipnorm`).
        label_smoothing: the main head's cross-entropy against `(1 - s) * one_hot + s / K`
            (K classes); 0 = plain sparse cross-entropy.
        lr_multipliers: `{layer: m}` trains that layer of the model at `m` times the learning
            rate (and weight decay); a modality name means its encoder (`audio` =
            `audio_encoder`), e.g. `{image: 0.1}` for a pretrained image encoder. Empty: off.
    """

    epochs: int = 10
    learning_rate: float = 1e-3
    recipe: str = "auto"
    optimizer: str = "adam"
    scale_lr_with_replicas: bool = False
    steps_per_epoch: typing.Optional[int] = None
    seed: int = 0
    monitor: str = "val_accuracy"
    early_stopping_patience: typing.Optional[int] = None
    verbose: int = 2
    # TensorBoard monitoring (training/monitoring.py) every N epochs; 0 = off.
    monitor_every: int = 0
    monitor_examples: int = 256
    weight_decay: typing.Optional[float] = None
    momentum: float = 0.9
    lr_schedule: str = "constant"
    warmup_epochs: float = 0.0
    warmup_steps: typing.Optional[int] = None
    min_lr_ratio: float = 0.0
    clipnorm: typing.Optional[float] = None
    global_clipnorm: typing.Optional[float] = None
    label_smoothing: float = 0.0
    lr_multipliers: typing.Dict[str, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class TuningConfig:
    """A hyperparameter search (`python -m training.tune`, `training/tune.py`).

    Attributes:
        algorithm: `random`, `bayesian` or `hyperband` (KerasTuner's oracles).
        max_trials: trials to run in all (a resumed search counts the earlier ones).
        time_limit_s: wall-clock budget of the search in seconds, summed over every run of it
            (None: no limit). A trial still running when it is spent is killed (its backup
            keeps its last completed epoch); re-running with a larger limit resumes it.
        objective: the history key to optimise (`val_accuracy`, `val_loss`, ...); a trial's
            value is its best epoch's; the direction follows the name (`loss` -> min).
        max_epochs: `hyperband`: the most epochs a trial trains (default `trainer.epochs`).
        hyperband_factor: `hyperband`: the reduction factor between rounds.
        seed: the oracle's random seed.
        space: dotted config key -> its range: `{type: float, min, max, log}`,
            `{type: int, min, max, step, log}` or `{type: choice, values: [...]}`; an optional
            `when: {other.key: [values]}` makes the key active only for those values of
            another key in the space (e.g. fusion arguments of one fusion type).
    """

    algorithm: str = "random"
    max_trials: int = 10
    time_limit_s: typing.Optional[float] = None
    objective: str = "val_accuracy"
    max_epochs: typing.Optional[int] = None
    hyperband_factor: int = 3
    seed: int = 0
    space: typing.Dict[str, typing.Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class RuntimeConfig:
    """Where and how the training runs.

    Attributes:
        distribution: `"mirrored"` (MirroredStrategy over all GPUs, or over `cpu_replicas`
            logical CPU devices when there is no GPU), `"multi_worker"`
            (MultiWorkerMirroredStrategy from `TF_CONFIG`, trained by the custom loop of
            `training/custom_loop.py`) or `"default"` (no strategy).
        cpu_replicas: logical CPU devices to split the host CPU into when no GPU is present.
        mixed_precision: None, `"mixed_float16"` or `"mixed_bfloat16"`.
        jit_compile: XLA compilation (`"auto"`, true or false). On CPU XLA was measured
            slower for these models: keep false unless a benchmark says otherwise.
        deterministic: make TensorFlow ops deterministic
            (`tf.config.experimental.enable_op_determinism`): the same seed gives the same
            run, at some speed cost.
        worker_timeout_s: `multi_worker` only: how long a worker waits for its peers at
            start-up; then it names the peers it cannot reach and exits (None: no limit).
    """

    distribution: str = "mirrored"
    cpu_replicas: int = 1
    mixed_precision: typing.Optional[str] = None
    jit_compile: typing.Any = False
    deterministic: bool = False
    # multi_worker: seconds a worker waits for every peer at start-up before it names the
    # ones it cannot reach and exits (None: wait forever).
    worker_timeout_s: typing.Optional[float] = 600.0


@dataclasses.dataclass
class ExperimentConfig:
    """One experiment: what to train on, what to build, how to train it, where.

    `task` names the task that trains it (`mmkeras.configs.tasks.TASKS`): `classification`
    here; the tasks with a section of their own (`cross_modal`, `av_sync`, `captioning`)
    subclass this config.
    """

    name: str = "avmnist_early_fusion"
    task: str = "classification"
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    trainer: TrainerConfig = dataclasses.field(default_factory=TrainerConfig)
    runtime: RuntimeConfig = dataclasses.field(default_factory=RuntimeConfig)
    tuning: TuningConfig = dataclasses.field(default_factory=TuningConfig)


def _is_dataclass_type(tp):
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _merge(instance, overrides, path):
    """Returns a copy of dataclass `instance` with `overrides` (a dict) applied, strictly."""
    if not isinstance(overrides, dict):
        raise ConfigError(f"'{path or '<root>'}' must be a mapping, got {overrides!r}.")
    hints = typing.get_type_hints(type(instance))
    fields = {f.name for f in dataclasses.fields(instance)}
    updated = {}
    for key, value in overrides.items():
        dotted = f"{path}.{key}" if path else str(key)
        if key not in fields:
            raise ConfigError(
                f"Unknown config key '{dotted}'. Known keys here: {sorted(fields)}."
            )
        current = getattr(instance, key)
        if dataclasses.is_dataclass(current):
            updated[key] = _merge(current, value, dotted)
        else:
            updated[key] = _coerce(value, hints[key], dotted)
    return dataclasses.replace(instance, **updated)


def _coerce(value, tp, dotted):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is typing.Any:
        return copy.deepcopy(value)
    if origin is typing.Union:  # Optional[X]
        if value is None:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], dotted)
    if origin in (list, typing.List):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"'{dotted}' must be a list, got {value!r}.")
        if args and _is_dataclass_type(args[0]):
            return [
                v if isinstance(v, args[0]) else _merge(args[0](), v, f"{dotted}[{i}]")
                for i, v in enumerate(value)
            ]
        return [_coerce(v, args[0], dotted) if args else v for v in value]
    if origin in (dict, typing.Dict):
        if not isinstance(value, dict):
            raise ConfigError(f"'{dotted}' must be a mapping, got {value!r}.")
        return copy.deepcopy(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"'{dotted}' must be true or false, got {value!r}.")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"'{dotted}' must be an integer, got {value!r}.")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"'{dotted}' must be a number, got {value!r}.")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"'{dotted}' must be a string, got {value!r}.")
        return value
    return value


def _check_tasks_and_sources(config):
    """Checks `model.tasks` and `model.init_from` beyond their types (names, targets, which
    modalities); the files named by `init_from` are checked when the model is built
    (`mmkeras.models.transfer`). Returns `config`."""
    import re

    model = config.model
    names = set()
    reserved = set(_RESERVED_TASK_NAMES) | set(model.modalities) | {
        f"{m}_present" for m in model.modalities
    }
    for i, task in enumerate(model.tasks):
        where = f"model.tasks[{i}]"
        if not re.fullmatch(r"[a-z][a-z0-9_]*", task.name or ""):
            raise ConfigError(
                f"'{where}.name' must be a lowercase identifier (the output name), got "
                f"{task.name!r}."
            )
        if task.name in reserved or task.name in names:
            raise ConfigError(
                f"'{where}.name' {task.name!r} is taken (by another task, a model input or "
                f"output); reserved here: {sorted(reserved)}."
            )
        names.add(task.name)
        if task.input != "fused" and task.input not in model.modalities:
            raise ConfigError(
                f"'{where}.input' must be 'fused' or one of model.modalities "
                f"{sorted(model.modalities)}, got {task.input!r}."
            )
        if task.target not in TASK_TARGETS:
            raise ConfigError(
                f"'{where}.target' must be one of {list(TASK_TARGETS)}, got {task.target!r}."
            )
        if task.loss_weight < 0:
            raise ConfigError(f"'{where}.loss_weight' must be >= 0, got {task.loss_weight}.")
    if model.main_loss_weight < 0:
        raise ConfigError(
            f"'model.main_loss_weight' must be >= 0, got {model.main_loss_weight}."
        )
    if model.target in ("multilabel", "regression"):
        if model.tasks:
            raise ConfigError(
                f"'model.tasks' derive class targets from the label; they need model.target "
                f"multiclass or binary, got {model.target!r}."
            )
        if model.fusion.type in ("late", "decision"):
            raise ConfigError(
                f"'model.fusion.type' {model.fusion.type!r} combines class probabilities; "
                f"model.target {model.target!r} needs a feature-level fusion (e.g. concat)."
            )
    taken = {}
    for i, source in enumerate(model.init_from):
        where = f"model.init_from[{i}]"
        if not source.model_dir:
            raise ConfigError(f"'{where}.model_dir' is required (a trained model directory).")
        unknown = sorted(set(source.modalities) - set(model.modalities))
        if unknown:
            raise ConfigError(
                f"'{where}.modalities' names {unknown}, which are not among model.modalities "
                f"{sorted(model.modalities)}."
            )
        for m in source.modalities:
            if m in taken:
                raise ConfigError(
                    f"'{where}.modalities': the {m} encoder is already loaded by "
                    f"model.init_from[{taken[m]}]."
                )
            taken[m] = i
        if source.sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", source.sha256):
            raise ConfigError(
                f"'{where}.sha256' must be 64 lowercase hex digits, got {source.sha256!r}."
            )
    return config


# Allowed values, checked when a config is loaded (`check_values`). One tuple per family so that
# a new encoder or fusion adds its name in one place; the builders raise on anything else. The
# tests check these against the builders' own registries.
BAD_INPUT_POLICIES = ("error", "skip", "mask")
BAD_INPUT_KEYS = ("default", "label", "split")  # besides the modalities
OPTIMIZERS = ("adam", "adamw", "sgd")
RECIPES = ("auto", "standard", "legacy")
# `trainer.recipe: standard`: the trainer keys it sets when the config does not (TrainerConfig).
STANDARD_RECIPE = {"optimizer": "adamw", "weight_decay": 0.05, "lr_schedule": "cosine",
                   "warmup_epochs": 1.0, "clipnorm": 1.0, "label_smoothing": 0.1}
AUDIO_RECIPES = ("none", "speech")
# `model.audio_encoder.recipe: speech`: the audio encoder keys it sets when the config does not.
SPEECH_RECIPE = {"loudness": "rms", "trim_silence": True, "augment_speed": 0.1,
                 "augment_shift": 0.1, "freq_masks": 1, "time_masks": 1}
SPEECH_WINDOW_CLIPS = 3  # the input window, in clips, when the config sets neither length
LR_SCHEDULES = ("constant", "cosine")
TUNING_ALGORITHMS = ("random", "bayesian", "hyperband")
DISTRIBUTIONS = ("mirrored", "multi_worker", "default")
MIXED_PRECISION = (None, "float32", "mixed_float16", "mixed_bfloat16")
IMAGE_ENCODER_TYPES = ("cnn", "resnet", "application", "keras_hub")
AUDIO_ENCODER_TYPES = ("cnn", "keras_hub")
AUDIO_FEATURES = ("log_mel", "mfcc")
TEXT_ENCODER_TYPES = ("gru", "lstm", "cnn", "transformer", "keras_hub")
VIDEO_ENCODER_TYPES = ("cnn_gru", "cnn_attention", "conv3d")
TIMESERIES_ENCODER_TYPES = ("cnn", "gru")
FUSION_TYPES = (  # mmkeras.layers.fusion.FUSION_LAYERS, then DECISION_FUSION_LAYERS
    "concat", "mean", "product", "weighted_sum", "bilinear", "stacking", "attention", "gated",
    "tensor", "low_rank_tensor", "graph", "cross_modal_attention", "transformer",
    "late", "decision",
)
IMPUTATIONS = ("none", "zero", "learned", "mean")
IMAGE_RESIZE = (None, "pad", "crop", "stretch")
TARGET_KINDS = ("multiclass", "binary", "multilabel", "regression")  # mmkeras.models.heads
MODALITY_NAMES = ("image", "audio", "text", "video", "tabular", "timeseries")

# Dotted key -> allowed values (a key the config does not have is not checked).
CHOICES = {
    "task": ("classification", "retrieval", "invariance", "shared_autoencoder", "av_sync",
             "captioning"),  # mmkeras.configs.tasks.TASKS
    "trainer.optimizer": OPTIMIZERS,
    "trainer.recipe": RECIPES,
    "trainer.lr_schedule": LR_SCHEDULES,
    "tuning.algorithm": TUNING_ALGORITHMS,
    "runtime.distribution": DISTRIBUTIONS,
    "runtime.mixed_precision": MIXED_PRECISION,
    "model.image_encoder.type": IMAGE_ENCODER_TYPES,
    "model.audio_encoder.type": AUDIO_ENCODER_TYPES,
    "model.audio_encoder.features": AUDIO_FEATURES,
    "model.audio_encoder.recipe": AUDIO_RECIPES,
    "model.text_encoder.type": TEXT_ENCODER_TYPES,
    "model.video_encoder.type": VIDEO_ENCODER_TYPES,
    "model.timeseries_encoder.type": TIMESERIES_ENCODER_TYPES,
    "model.fusion.type": FUSION_TYPES,
    "model.missing.imputation": IMPUTATIONS,
    "model.target": TARGET_KINDS,
    "data.image_resize": IMAGE_RESIZE,
}
# Keys that must be > 0 (None, where allowed, passes).
POSITIVE = (
    "data.batch_size", "data.max_examples", "data.max_image_pixels", "data.audio_channels", "trainer.epochs", "trainer.learning_rate",
    "trainer.steps_per_epoch", "runtime.cpu_replicas", "runtime.worker_timeout_s",
    "trainer.clipnorm", "trainer.global_clipnorm", "trainer.warmup_steps", "tuning.max_trials",
    "tuning.time_limit_s", "tuning.max_epochs",
)
# Keys that must be >= 0, and fractions in [0, 1) (None passes).
NON_NEGATIVE = ("trainer.weight_decay", "trainer.warmup_epochs", "trainer.momentum")
FRACTIONS = ("trainer.label_smoothing", "trainer.min_lr_ratio")
_MISSING = object()


def _get(config, dotted):
    value = config
    for part in dotted.split("."):
        value = getattr(value, part, _MISSING)
        if value is _MISSING:
            return _MISSING
    return value


def check_values(config):
    """Checks values beyond their types: positive sizes and rates, known names. Raises a
    `ConfigError` naming the dotted key and what is allowed; returns `config`."""
    for key in POSITIVE:
        value = _get(config, key)
        if value is not _MISSING and value is not None and not value > 0:
            raise ConfigError(f"'{key}' must be > 0, got {value!r}.")
    for key in NON_NEGATIVE:
        value = _get(config, key)
        if value is not _MISSING and value is not None and value < 0:
            raise ConfigError(f"'{key}' must be >= 0, got {value!r}.")
    for key in FRACTIONS:
        value = _get(config, key)
        if value is not _MISSING and value is not None and not 0 <= value < 1:
            raise ConfigError(f"'{key}' must be in [0, 1), got {value!r}.")
    if _get(config, "trainer.clipnorm") not in (_MISSING, None) and _get(
            config, "trainer.global_clipnorm") not in (_MISSING, None):
        raise ConfigError("Set one of 'trainer.clipnorm' and 'trainer.global_clipnorm', not both.")
    multipliers = _get(config, "trainer.lr_multipliers")
    for name, value in (multipliers.items() if isinstance(multipliers, dict) else ()):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                math.isfinite(value) and value >= 0):
            raise ConfigError(f"'trainer.lr_multipliers.{name}' must be a number >= 0, "
                              f"got {value!r}.")
    target = _get(config, "model.target")
    if _get(config, "trainer.label_smoothing") and target in ("multilabel", "regression"):
        raise ConfigError(
            f"'trainer.label_smoothing' smooths one-hot class targets; model.target {target!r} "
            "has none: set it to 0."
        )
    if _get(config, "trainer.label_smoothing") and _get(config, "model.tasks"):
        raise ConfigError(
            "'trainer.label_smoothing' applies to a single-task classifier; with 'model.tasks' "
            "every head uses plain cross-entropy: set it to 0."
        )
    for key, allowed in CHOICES.items():
        value = _get(config, key)
        if value is _MISSING:
            continue
        if key == "trainer.optimizer" and isinstance(value, str):
            value = value.lower()
        if value not in allowed:
            raise ConfigError(f"'{key}' must be one of {list(allowed)}, got {value!r}.")
    _check_modality_types(config)
    bad_input = _get(config, "data.bad_input")
    declared = tuple(_get(config, "data.modality_types") or ()) if _get(
        config, "data.modality_types") is not _MISSING else ()
    if bad_input is not _MISSING:
        policies = bad_input.items() if isinstance(bad_input, dict) else [(None, bad_input)]
        for name, policy in policies:
            key = "data.bad_input" if name is None else f"data.bad_input.{name}"
            if name is not None and name not in BAD_INPUT_KEYS + MODALITY_NAMES + declared:
                raise ConfigError(
                    f"Unknown key '{key}': use a modality {list(MODALITY_NAMES + declared)} or "
                    f"one of {list(BAD_INPUT_KEYS)}."
                )
            if policy not in BAD_INPUT_POLICIES:
                raise ConfigError(
                    f"'{key}' must be one of {list(BAD_INPUT_POLICIES)}"
                    f"{'' if name is not None else ' (or a mapping modality -> policy)'}, "
                    f"got {policy!r}."
                )
    return config


def _check_modality_types(config):
    """`data.modality_types` (`mmkeras.features.check_modality_types`), and every name of
    `data.modalities` / `model.modalities` has a type."""
    from mmkeras import features

    types = _get(config, "data.modality_types")
    if types is _MISSING:
        return
    error = features.check_modality_types(types)
    if error is not None:
        raise ConfigError(error + ".")
    for key in ("data.modalities", "model.modalities"):
        names = _get(config, key)
        if names is _MISSING:
            continue
        for name in names:
            if name not in types and name not in features.TYPES:
                raise ConfigError(
                    f"'{key}': {name!r} is no modality type {list(features.TYPES)}; declare "
                    f"its type in data.modality_types (e.g. data.modality_types.{name}=text).")


def parse_override(text):
    """Parses `a.b.c=value` into a nested dict; the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"Override '{text}' must look like key.path=value.")
    key, raw = text.split("=", 1)
    value = yaml.safe_load(raw) if raw.strip() else ""
    nested = value
    for part in reversed(key.strip().split(".")):
        if not part:
            raise ConfigError(f"Override '{text}' has an empty key part.")
        nested = {part: nested}
    return nested


def _deep_update(base, update):
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = value
    return base


def _given(raw, *keys):
    """The keys that `raw` (the YAML and overrides as given) sets under the dotted `keys`."""
    for key in keys:
        raw = raw.get(key) if isinstance(raw, dict) else None
    return set(raw) if isinstance(raw, dict) else set()


def apply_recipe(config, raw):
    """Resolves `trainer.recipe` (see `TrainerConfig`): fills the recipe keys that `raw` (the
    YAML and overrides as given) does not set, and records `standard` or `legacy`."""
    trainer = getattr(config, "trainer", None)
    if not isinstance(getattr(trainer, "recipe", None), str):
        return config
    recipe = trainer.recipe
    if recipe == "auto":
        recipe = "standard" if getattr(config, "task", None) == "classification" else "legacy"
    if recipe not in RECIPES:
        return config  # check_values names the key and the choices
    given = _given(raw, "trainer")
    updates = {"recipe": recipe}
    if recipe == "standard":
        model = getattr(config, "model", None)
        one_hot = (getattr(model, "target", "multiclass") in ("multiclass", "binary")
                   and not getattr(model, "tasks", None))
        for key, value in STANDARD_RECIPE.items():
            if (key in given
                    # its weight decay comes with its optimizer
                    or (key == "weight_decay" and "optimizer" in given)
                    or (key == "clipnorm" and trainer.global_clipnorm is not None)
                    or (key == "warmup_epochs" and trainer.warmup_steps is not None)
                    or (key == "label_smoothing" and not one_hot)):
                continue
            updates[key] = value
    config.trainer = dataclasses.replace(trainer, **updates)
    return config


def apply_audio_recipe(config, raw):
    """Resolves `model.audio_encoder.recipe` (see `AudioEncoderConfig`): with `speech`, fills
    the `SPEECH_RECIPE` keys that `raw` does not set and, when it sets neither
    `data.audio_samples` nor `trim_length`, widens the window to `SPEECH_WINDOW_CLIPS` clips
    and trims back to one."""
    model = getattr(config, "model", None)
    audio = getattr(model, "audio_encoder", None)
    if getattr(audio, "recipe", None) != "speech":
        return config
    given = _given(raw, "model", "audio_encoder")
    updates = {key: value for key, value in SPEECH_RECIPE.items() if key not in given}
    data = getattr(config, "data", None)
    if (data is not None and "trim_length" not in given
            and "audio_samples" not in _given(raw, "data")):
        updates["trim_length"] = data.audio_samples
        config.data = dataclasses.replace(
            data, audio_samples=SPEECH_WINDOW_CLIPS * data.audio_samples)
    model.audio_encoder = dataclasses.replace(audio, **updates)
    return config


def load_config(path=None, overrides=(), base=None):
    """Builds an `ExperimentConfig` from defaults, a YAML file and `key=value` overrides.

    Args:
        path: a YAML file (or None for the defaults).
        overrides: iterable of `"a.b=value"` strings or dicts.
        base: the config to start from (default: `ExperimentConfig()`).
    """
    raw = {}
    if path is not None:
        path = pathlib.Path(path)
        if not path.is_file():
            raise ConfigError(f"Config file not found: {path}")
        with open(path) as f:
            loaded = yaml.safe_load(f) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping.")
        raw = loaded
    for override in overrides:
        update = parse_override(override) if isinstance(override, str) else override
        _deep_update(raw, copy.deepcopy(update))
    try:
        config = _merge(base or ExperimentConfig(), raw, "")
        config = apply_audio_recipe(apply_recipe(config, raw), raw)
        return check_values(_check_tasks_and_sources(config))
    except ConfigError as e:
        where = f"{path}: " if path is not None else ""
        raise ConfigError(f"{where}{e}") from None


def to_dict(config):
    return dataclasses.asdict(config)


def save_config(config, path):
    """Writes the resolved config as YAML (atomically)."""
    path = pathlib.Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        yaml.safe_dump(to_dict(config), f, sort_keys=False)
    tmp.replace(path)


def config_from_dict(values, base=None):
    """A config from a resolved dict (e.g. a model directory's `config.yaml`), checked.

    A resolved trainer section without `recipe` was written before `trainer.recipe` existed:
    its values are the legacy recipe's, and it is labelled so."""
    trainer = values.get("trainer")
    if isinstance(trainer, dict) and "recipe" not in trainer:
        values = {**values, "trainer": {**trainer, "recipe": "legacy"}}
    return check_values(_check_tasks_and_sources(_merge(base or ExperimentConfig(), values, "")))
