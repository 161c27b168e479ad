import pathlib

import pytest

from mmkeras.configs import ConfigError
from mmkeras.configs import ExperimentConfig
from mmkeras.configs import config_from_dict
from mmkeras.configs import load_config
from mmkeras.configs import parse_override
from mmkeras.configs import save_config
from mmkeras.configs import to_dict

CONFIGS = sorted((pathlib.Path(__file__).resolve().parents[2] / "training" / "configs").rglob("*.yaml"))


def test_defaults_are_an_experiment():
    config = load_config()
    assert isinstance(config, ExperimentConfig)
    assert config.model.fusion.type == "concat"


def loader_for(path):
    """The loader of a bundled YAML: its top-level section says which config type it is."""
    import yaml

    sections = yaml.safe_load(path.read_text()) or {}
    if "cross_modal" in sections:  # dual encoders, CCA, autoencoders, invariance
        from mmkeras.configs.cross_modal_config import load_cross_modal_config

        return load_cross_modal_config
    if "av_sync" in sections:
        from mmkeras.configs.av_sync_config import load_av_sync_config

        return load_av_sync_config
    if "captioning" in sections:
        from mmkeras.configs.captioning_config import load_captioning_config

        return load_captioning_config
    return load_config


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_bundled_yaml_loads(path):
    config = loader_for(path)(path)
    assert config.name


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("trainer:\n  epochs: 3\nmodel:\n  fusion:\n    type: late\n")
    config = load_config(path, ["trainer.epochs=5", "data.modalities=[image]", "runtime.cpu_replicas=2"])
    assert config.trainer.epochs == 5
    assert config.model.fusion.type == "late"
    assert config.data.modalities == ["image"]
    assert config.runtime.cpu_replicas == 2


def test_int_is_accepted_for_float_and_kept_as_float():
    config = load_config(None, ["trainer.learning_rate=1"])
    assert config.trainer.learning_rate == 1.0
    assert isinstance(config.trainer.learning_rate, float)


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.fusion.typo=1", "model.fusion.typo"),
        ("nope=1", "'nope'"),
        ("trainer.epochs=many", "trainer.epochs"),
        ("runtime.cpu_replicas=1.5", "runtime.cpu_replicas"),
        ("data.cache=maybe", "data.cache"),
        ("data.modalities=image", "data.modalities"),
    ],
)
def test_bad_keys_and_values_are_named(override, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_config(None, [override])


def test_unknown_key_in_file_names_file_and_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  encoderz: {}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "model.encoderz" in str(info.value) and "bad.yaml" in str(info.value)


def test_override_parsing():
    assert parse_override("a.b.c=3") == {"a": {"b": {"c": 3}}}
    assert parse_override("a=[1, 2]") == {"a": [1, 2]}
    assert parse_override("a=null") == {"a": None}
    with pytest.raises(ConfigError):
        parse_override("novalue")


def test_save_and_reload_round_trip(tmp_path):
    config = load_config(None, ["model.fusion.args={combiner: geometric}", "trainer.epochs=2"])
    save_config(config, tmp_path / "config.yaml")
    import yaml

    again = config_from_dict(yaml.safe_load((tmp_path / "config.yaml").read_text()))
    assert to_dict(again) == to_dict(config)


@pytest.mark.parametrize(
    "override, key, allowed",
    [
        ("data.batch_size=-4", "data.batch_size", "> 0"),
        ("data.batch_size=0", "data.batch_size", "> 0"),
        ("trainer.epochs=0", "trainer.epochs", "> 0"),
        ("trainer.learning_rate=-0.001", "trainer.learning_rate", "> 0"),
        ("trainer.steps_per_epoch=0", "trainer.steps_per_epoch", "> 0"),
        ("runtime.worker_timeout_s=0", "runtime.worker_timeout_s", "> 0"),
        ("data.bad_input=ignore", "data.bad_input", "'error', 'skip', 'mask'"),
        ("data.bad_input={audio: drop}", "data.bad_input.audio", "'error', 'skip', 'mask'"),
        ("data.bad_input={audoi: skip}", "data.bad_input.audoi", "'split'"),
        ("trainer.optimizer=adagrad", "trainer.optimizer", "'adam', 'adamw', 'sgd'"),
        ("runtime.distribution=tpu", "runtime.distribution", "'multi_worker'"),
        ("runtime.mixed_precision=float16", "runtime.mixed_precision", "'mixed_float16'"),
        ("model.image_encoder.type=vit", "model.image_encoder.type", "'keras_hub'"),
        ("model.text_encoder.type=bert", "model.text_encoder.type", "'keras_hub'"),
        ("model.video_encoder.type=gru", "model.video_encoder.type", "'conv3d'"),
        ("model.timeseries_encoder.type=lstm", "model.timeseries_encoder.type", "'gru'"),
        ("model.audio_encoder.features=mel", "model.audio_encoder.features", "'log_mel'"),
        ("model.fusion.type=concatenate", "model.fusion.type", "'concat'"),
        ("model.missing.imputation=median", "model.missing.imputation", "'learned'"),
    ],
)
def test_values_are_checked_at_load(override, key, allowed):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    message = str(info.value)
    assert f"'{key}'" in message, message
    assert allowed in message, message


def test_accepted_values():
    config = load_config(None, [
        "data.bad_input={default: skip, audio: mask, label: error, split: skip}",
        "trainer.optimizer=AdamW", "runtime.mixed_precision=mixed_bfloat16",
        "runtime.worker_timeout_s=null", "trainer.steps_per_epoch=null",
    ])
    assert config.data.bad_input["audio"] == "mask"


def test_allowed_names_match_the_builders():
    """The config's lists are the builders' registries (plus `keras_hub`, built elsewhere)."""
    from mmkeras.configs import experiment_config as ec
    from mmkeras.encoders.audio_cnn_encoder import AUDIO_FEATURES
    from mmkeras.encoders.text_encoder import TEXT_ENCODER_TYPES
    from mmkeras.encoders.timeseries_encoder import TIMESERIES_ENCODER_TYPES
    from mmkeras.encoders.video_encoder import VIDEO_ENCODER_TYPES
    from mmkeras.layers import DECISION_FUSION_LAYERS
    from mmkeras.layers import FUSION_LAYERS
    from mmkeras.layers import ModalityImputation

    assert ec.FUSION_TYPES == tuple(FUSION_LAYERS) + tuple(DECISION_FUSION_LAYERS)
    assert set(ec.TEXT_ENCODER_TYPES) - {"keras_hub"} == set(TEXT_ENCODER_TYPES)
    assert ec.VIDEO_ENCODER_TYPES == VIDEO_ENCODER_TYPES
    assert ec.TIMESERIES_ENCODER_TYPES == TIMESERIES_ENCODER_TYPES
    assert ec.AUDIO_FEATURES == tuple(AUDIO_FEATURES)
    assert ec.IMPUTATIONS == ("none",) + ModalityImputation.methods


TYPES = "data.modality_types={title: text, description: text, front: image, back: image}"


def test_modality_types_round_trip_and_name_each_feature_type(tmp_path):
    import yaml

    from mmkeras import features

    config = load_config(None, [TYPES, "model.modalities=[title, description, front, back]",
                                "data.modalities=[title, description, front, back]"])
    save_config(config, tmp_path / "config.yaml")
    again = config_from_dict(yaml.safe_load((tmp_path / "config.yaml").read_text()))
    assert again.data.modality_types == {"title": "text", "description": "text",
                                         "front": "image", "back": "image"}
    assert features.modality_types(again.model.modalities, again.data.modality_types) == {
        "title": "text", "description": "text", "front": "image", "back": "image"}
    assert features.modality_type("image", again.data.modality_types) == "image"  # a base type
    assert load_config(None, [TYPES, "data.bad_input={front: mask}"]).data.bad_input == {
        "front": "mask"}


@pytest.mark.parametrize("override, message", [
    ("data.modality_types={title: words}",
     "'data.modality_types.title': unknown modality type 'words'; use one of ['image', "),
    ("data.modality_types={image: text}", "'image' is itself a modality type"),
    ("data.modality_types={Title: text}", "must be a lowercase identifier"),
    ("data.modality_types={label: text}", "'label' is reserved"),
    ("data.modality_types={title_encoder: text}", "'title_encoder' is reserved (or ends"),
    ("data.modality_types={prices: tabular}", "the tabular modality is one feature"),
    ("model.modalities=[title]", "'model.modalities': 'title' is no modality type"),
])
def test_a_bad_modality_type_is_one_line(override, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert message in str(info.value) and "\n" not in str(info.value)
