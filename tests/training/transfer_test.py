"""Encoder transfer (`model.init_from`): checks, loaded weights, frozen vs fine-tuned, saving,
and one tiny `training.train` run with a transferred encoder and task heads, then export."""

import json

import keras
import numpy as np
import pytest
import yaml

from mmkeras.configs import ConfigError
from mmkeras.configs import load_config
from mmkeras.configs import save_config
from mmkeras.models import build_classifier
from mmkeras.models import multitask
from mmkeras.models import transfer
from tests.models.fusion_classifier_test import TINY
from tests.models.fusion_classifier_test import _inputs


def _source_dir(tmp_path, name="audio_only", extra=(), seed=1):
    """A model directory as `training.train` leaves it (config.yaml + model.keras), with a
    randomly initialised tiny audio-only model (what matters is that its weights are known)."""
    keras.utils.set_random_seed(seed)
    config = load_config(None, TINY + ["model.modalities=[audio]", *extra])
    model = build_classifier(config.model, config.data)
    model_dir = tmp_path / name
    model_dir.mkdir()
    save_config(config, model_dir / "config.yaml")
    model.save(model_dir / "model.keras")
    return model_dir, model


def _target(source_dir, *extra, trainable=False, modalities="[audio]"):
    keras.utils.set_random_seed(0)
    config = load_config(None, TINY + [
        f"model.init_from=[{{model_dir: '{source_dir}', modalities: {modalities}, "
        f"trainable: {str(trainable).lower()}}}]",
        *extra,
    ])
    return config, build_classifier(config.model, config.data)


def _weights(layer):
    return [np.array(w) for w in layer.get_weights()]


def test_loaded_encoder_equals_the_source_and_nothing_else_changes(tmp_path):
    source_dir, source = _source_dir(tmp_path)
    _, model = _target(source_dir)
    for ours, theirs in zip(_weights(model.get_layer("audio_encoder")),
                            _weights(source.get_layer("audio_encoder"))):
        np.testing.assert_array_equal(ours, theirs)
    # The other weights are initialised exactly as without transfer (same seed).
    keras.utils.set_random_seed(0)
    scratch = build_classifier(load_config(None, TINY).model)
    for name in ("image_encoder", "head_dense0", "logits_softmax"):
        for ours, theirs in zip(_weights(model.get_layer(name)), _weights(scratch.get_layer(name))):
            np.testing.assert_array_equal(ours, theirs)


def _train_step(model, config):
    model.compile(optimizer=keras.optimizers.Adam(0.05),
                  loss=keras.losses.SparseCategoricalCrossentropy())
    x = _inputs(model, batch=8)
    model.train_on_batch(x, np.arange(8) % config.model.num_classes)


@pytest.mark.parametrize("trainable", [False, True])
def test_frozen_stays_fine_tuned_moves(tmp_path, trainable):
    source_dir, _ = _source_dir(tmp_path)
    config, model = _target(source_dir, trainable=trainable)
    audio, image = model.get_layer("audio_encoder"), model.get_layer("image_encoder")
    assert audio.trainable is trainable
    audio_before, image_before = _weights(audio), _weights(image)
    _train_step(model, config)
    audio_changed = [not np.array_equal(a, b) for a, b in zip(audio_before, _weights(audio))]
    if trainable:
        assert any(audio_changed)
    else:
        # Every weight, BatchNormalization moving statistics included.
        assert not any(audio_changed)
        assert not any(id(w) in {id(v) for v in model.trainable_weights} for w in audio.weights)
    assert any(not np.array_equal(a, b) for a, b in zip(image_before, _weights(image)))


def test_frozen_encoder_stays_frozen_through_keras_round_trip(tmp_path):
    source_dir, _ = _source_dir(tmp_path)
    config, model = _target(source_dir, f"model.tasks=[{{name: audio_digit, input: audio}}]")
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert loaded.get_layer("audio_encoder").trainable is False
    assert len(loaded.trainable_weights) == len(model.trainable_weights)
    main = multitask.main_model(loaded)
    main.save(tmp_path / "main.keras")
    reloaded = keras.saving.load_model(tmp_path / "main.keras")
    assert reloaded.get_layer("audio_encoder").trainable is False
    audio = reloaded.get_layer("audio_encoder")
    before = _weights(audio)
    _train_step(reloaded, config)
    assert all(np.array_equal(a, b) for a, b in zip(before, _weights(audio)))


def test_empty_modalities_take_every_shared_encoder(tmp_path):
    source_dir, source = _source_dir(tmp_path)
    _, model = _target(source_dir, modalities="[]")
    np.testing.assert_array_equal(_weights(model.get_layer("audio_encoder"))[0],
                                  _weights(source.get_layer("audio_encoder"))[0])
    assert model.get_layer("image_encoder").trainable


def test_pinned_checksum_and_provenance(tmp_path):
    source_dir, _ = _source_dir(tmp_path)
    config = load_config(None, TINY + [f"model.init_from=[{{model_dir: '{source_dir}'}}]"])
    pinned = transfer.pin_sources(config.model)
    digest = transfer.file_sha256(source_dir / "model.keras")
    assert pinned.init_from[0].sha256 == digest
    [info] = transfer.describe_sources(pinned)
    assert info["sha256"] == digest and info["model_file"].endswith("model.keras")
    bad = load_config(None, TINY + [
        f"model.init_from=[{{model_dir: '{source_dir}', sha256: '{'0' * 64}'}}]"])
    with pytest.raises(ConfigError, match=r"init_from\[0\]\.sha256"):
        build_classifier(bad.model, bad.data)


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing_dir", "is not a directory"),
        ("no_model_file", "no model file"),
        ("modality_not_in_source", "has no image encoder"),
        ("incompatible_shapes", "incompatible audio encoders"),
        ("incompatible_inputs", "takes inputs of shape"),
    ],
)
def test_file_problems_are_config_errors(tmp_path, case, message):
    source_dir, _ = _source_dir(tmp_path)
    modalities, extra = "[audio]", []
    if case == "missing_dir":
        source_dir = tmp_path / "nope"
    elif case == "no_model_file":
        (source_dir / "model.keras").unlink()
    elif case == "modality_not_in_source":
        modalities = "[image]"
    elif case == "incompatible_shapes":
        extra = ["model.audio_encoder.filters=[6]"]
    elif case == "incompatible_inputs":
        extra = ["data.audio_samples=3000"]
    with pytest.raises(ConfigError, match=message) as info:
        _target(source_dir, *extra, modalities=modalities)
    assert "model.init_from[0]" in str(info.value)


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.init_from=[{modalities: [audio]}]", r"init_from\[0\]\.model_dir"),
        ("model.init_from=[{model_dir: x, modalities: [text]}]", r"init_from\[0\]\.modalities"),
        ("model.init_from=[{model_dir: x, trainabel: true}]", r"init_from\[0\]\.trainabel"),
        ("model.init_from=[{model_dir: x, trainable: sometimes}]", r"init_from\[0\]\.trainable"),
        ("model.init_from=[{model_dir: x, sha256: abc}]", r"init_from\[0\]\.sha256"),
        ("model.init_from=[{model_dir: x, modalities: [audio]}, "
         "{model_dir: y, modalities: [audio]}]", r"init_from\[1\]\.modalities"),
        ("model.init_from={model_dir: x}", r"model\.init_from"),
    ],
)
def test_bad_init_from_is_named(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


@pytest.mark.large
def test_train_with_transferred_frozen_encoder_and_task_heads_then_export(
        avmnist_small, tmp_path):
    from tests.training.train_export_integration_test import TINY as TRAIN_TINY
    from tests.training.train_export_integration_test import _run

    # The source: a tiny audio-only model directory with the same encoder settings.
    keras.utils.set_random_seed(1)
    source_config = load_config(None, TRAIN_TINY + ["model.modalities=[audio]"])
    source = build_classifier(source_config.model, source_config.data)
    source_dir = tmp_path / "audio_only"
    source_dir.mkdir()
    source.save(source_dir / "model.keras")
    source_weights = _weights(source.get_layer("audio_encoder"))

    model_dir = tmp_path / "transfer"
    sets = TRAIN_TINY + [
        f"data.data_dir={avmnist_small}",
        "runtime.cpu_replicas=1",
        "trainer.monitor_every=1",  # the monitor reads the main head of the multi-task model
        "trainer.monitor_examples=32",
        f"model.init_from=[{{model_dir: '{source_dir}', modalities: [audio], trainable: false}}]",
        "model.tasks=[{name: audio_digit, input: audio, loss_weight: 0.5}, "
        "{name: parity, target: parity, loss_weight: 0.2}]",
    ]
    _run(["training.train", "--config", "training/configs/avmnist/early_fusion.yaml",
          "--model-dir", str(model_dir), *[x for s in sets for x in ("--set", s)]])

    report = json.loads((model_dir / "report.json").read_text())
    digest = transfer.file_sha256(source_dir / "model.keras")
    [info] = report["init_from"]
    assert info["sha256"] == digest and info["trainable"] is False
    assert info["modalities"] == ["audio"]
    saved = yaml.safe_load((model_dir / "config.yaml").read_text())
    assert saved["model"]["init_from"][0]["sha256"] == digest
    assert set(report["tasks"]) == {"probabilities", "audio_digit", "parity"}
    assert report["tasks"]["probabilities"]["accuracy"] == report["test"]["accuracy"]
    assert report["tasks"]["parity"]["target"] == "parity"
    history = (model_dir / "history.csv").read_text().splitlines()[0].split(",")
    assert {"accuracy", "val_accuracy", "val_parity_accuracy", "audio_digit_loss"} <= set(history)

    # The model of record is the main head with the frozen, unchanged source encoder.
    model = keras.saving.load_model(model_dir / "model.keras")
    assert not isinstance(model.output, dict)
    audio = model.get_layer("audio_encoder")
    assert audio.trainable is False
    for ours, theirs in zip(_weights(audio), source_weights):
        np.testing.assert_array_equal(ours, theirs)
    full = keras.saving.load_model(model_dir / "multitask.keras")
    assert set(full.output) == {"probabilities", "audio_digit", "parity"}
    assert full.get_layer("audio_encoder").trainable is False
    assert list((model_dir / "logs" / "monitor").rglob("events.out.tfevents.*"))

    # Export (SavedModel) sees a single-task classifier.
    _run(["serving.export", "--model-dir", str(model_dir), "--format", "savedmodel"])
    parity = json.loads((model_dir / "export" / "parity.json").read_text())
    assert parity["passed"]

    # A source that changed since is refused (the pinned checksum), with exit status 2.
    source.get_layer("audio_encoder").set_weights(
        [w + 1.0 for w in source.get_layer("audio_encoder").get_weights()])
    source.save(source_dir / "model.keras")
    result = _run(["training.train", "--config", str(model_dir / "config.yaml"),
                   "--model-dir", str(tmp_path / "again")], check=False)
    assert result.returncode == 2 and "sha256" in result.stderr


def test_missing_source_dir_exits_2_from_the_cli(tmp_path):
    from tests.training.train_export_integration_test import _run

    result = _run(["training.train", "--config", "training/configs/avmnist/early_fusion.yaml",
                   "--model-dir", str(tmp_path / "x"),
                   "--set", f"model.init_from=[{{model_dir: '{tmp_path / 'nope'}'}}]"],
                  check=False)
    assert result.returncode == 2
    assert "model.init_from[0].model_dir" in result.stderr
    assert not (tmp_path / "x" / "config.yaml").exists()
