"""`model.audio_encoder.recipe`: `speech` fills the audio front end and augmentation keys that
a config does not set; the AV-MNIST classification configs use it and `none` is one setting
away."""

import pathlib

import pytest
import yaml

from mmkeras.configs import ConfigError
from mmkeras.configs import config_from_dict
from mmkeras.configs import load_config
from mmkeras.configs import save_config
from mmkeras.configs import to_dict
from mmkeras.configs.experiment_config import SPEECH_RECIPE
from mmkeras.encoders.from_config import encoder_from_config

AVMNIST = pathlib.Path("training/configs/avmnist")
EARLY = AVMNIST / "early_fusion.yaml"
FRONT_END = {"trim_silence", "loudness", "random_shift", "random_speed", "spec_augment"}


def _recipe_keys(audio):
    return {key: getattr(audio, key) for key in SPEECH_RECIPE}


def test_speech_fills_the_front_end_augmentation_and_a_three_clip_window(tmp_path):
    config = load_config(EARLY)
    audio = config.model.audio_encoder
    assert audio.recipe == "speech" and _recipe_keys(audio) == SPEECH_RECIPE
    assert (config.data.audio_samples, audio.trim_length) == (24000, 8000)
    encoder = encoder_from_config("audio", config.model, config.data)
    assert FRONT_END <= {layer.name for layer in encoder.layers}
    assert encoder.input_shape == (None, 24000)
    # The resolved config is saved with every value: it reloads unchanged either way.
    save_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == config
    assert config_from_dict(to_dict(config)) == config


def test_none_is_one_setting_away_and_a_directory_from_before_reloads_as_none():
    plain = load_config(EARLY, ["model.audio_encoder.recipe=none"])
    assert plain.data.audio_samples == 8000 and plain.model.audio_encoder.trim_length is None
    assert plain.model.audio_encoder.loudness is None and not plain.model.audio_encoder.trim_silence
    encoder = encoder_from_config("audio", plain.model, plain.data)
    assert not FRONT_END & {layer.name for layer in encoder.layers}
    values = to_dict(plain)
    del values["model"]["audio_encoder"]["recipe"]  # a config.yaml written before the key
    assert config_from_dict(values) == plain


def test_keys_the_config_sets_win_over_the_recipe():
    config = load_config(EARLY, ["model.audio_encoder.freq_masks=0", "data.audio_samples=2000"])
    audio = config.model.audio_encoder
    assert audio.freq_masks == 0 and audio.time_masks == 1 and audio.loudness == "rms"
    # A window the config sets is kept, and nothing is cut from it.
    assert config.data.audio_samples == 2000 and audio.trim_length is None
    config = load_config(EARLY, ["model.audio_encoder.trim_length=4000"])
    assert (config.data.audio_samples, config.model.audio_encoder.trim_length) == (8000, 4000)
    with pytest.raises(ConfigError, match="model.audio_encoder.recipe"):
        load_config(EARLY, ["model.audio_encoder.recipe=robust"])


def test_every_avmnist_classifier_with_audio_uses_the_speech_recipe():
    """A new AV-MNIST config gets the recipe the fusion table and robustness table measure;
    the cross-modal tasks keep their own encoders, and the front-end ablation opts out."""
    checked = []
    for path in sorted(AVMNIST.glob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        if raw.get("task", "classification") != "classification" or "audio" not in raw["model"].get(
                "modalities", []) or path.stem == "early_fusion_audio_front_end":
            continue
        assert load_config(path).model.audio_encoder.recipe == "speech", path
        checked.append(path.stem)
    assert {"audio_only", "early_fusion", "transformer_fusion", "late_fusion"} <= set(checked)
    assert load_config(AVMNIST / "image_only.yaml").model.audio_encoder.recipe == "none"
