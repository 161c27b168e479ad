"""Encoder transfer (`model.init_from`): checks, loaded weights, frozen vs fine-tuned, saving,
and one tiny `training.train` run with a transferred encoder and task heads, then export: the
main head by default, every head with `serving.export --all-heads` (signatures, TFLite, the
local server over REST and gRPC)."""

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


@pytest.fixture(scope="module")
def multitask_run(avmnist_small, tmp_path_factory):
    """One tiny `training.train` run with a frozen transferred audio encoder and two task
    heads (`audio_digit`, `parity`): `(model_dir, source_dir, source, source_weights)`."""
    from tests.training.train_export_integration_test import TINY as TRAIN_TINY
    from tests.training.train_export_integration_test import _run

    root = tmp_path_factory.mktemp("transfer")
    # The source: a tiny audio-only model directory with the same encoder settings (the
    # AV-MNIST configs' speech recipe: a 3-s window trimmed to 1 s).
    keras.utils.set_random_seed(1)
    source_config = load_config("training/configs/avmnist/audio_only.yaml", TRAIN_TINY)
    source = build_classifier(source_config.model, source_config.data)
    source_dir = root / "audio_only"
    source_dir.mkdir()
    source.save(source_dir / "model.keras")
    source_weights = _weights(source.get_layer("audio_encoder"))

    model_dir = root / "transfer"
    sets = TRAIN_TINY + [
        f"data.data_dir={avmnist_small}",
        "runtime.cpu_replicas=1",
        "trainer.epochs=1",
        "trainer.monitor_every=1",  # the monitor reads the main head of the multi-task model
        "trainer.monitor_examples=32",
        f"model.init_from=[{{model_dir: '{source_dir}', modalities: [audio], trainable: false}}]",
        "model.tasks=[{name: audio_digit, input: audio, loss_weight: 0.5}, "
        "{name: parity, target: parity, loss_weight: 0.2}]",
    ]
    _run(["training.train", "--config", "training/configs/avmnist/early_fusion.yaml",
          "--model-dir", str(model_dir), *[x for s in sets for x in ("--set", s)]])
    return model_dir, source_dir, source, source_weights


@pytest.mark.large
def test_train_with_transferred_frozen_encoder_and_task_heads_then_export(
        multitask_run, tmp_path):
    import tensorflow as tf

    from tests.training.train_export_integration_test import _run

    model_dir, source_dir, source, source_weights = multitask_run
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

    # Export (SavedModel) without --all-heads sees a single-task classifier, as before (in
    # this process: the `all_heads_export` fixture runs the export command line).
    from serving import export

    export.export(model_dir, ["savedmodel"])
    parity = json.loads((model_dir / "export" / "parity.json").read_text())
    assert parity["passed"] and not parity["all_heads"] and "head_check" not in parity
    assert parity["savedmodel"]["heads"] == ["probabilities"]
    for signature in tf.saved_model.load(parity["savedmodel"]["path"]).signatures.values():
        assert set(signature.structured_outputs) == {"probabilities", "class_id"}

    # A source that changed since is refused (the pinned checksum), with exit status 2.
    source.get_layer("audio_encoder").set_weights(
        [w + 1.0 for w in source.get_layer("audio_encoder").get_weights()])
    source.save(source_dir / "model.keras")
    result = _run(["training.train", "--config", str(model_dir / "config.yaml"),
                   "--model-dir", str(tmp_path / "again")], check=False)
    assert result.returncode == 2 and "sha256" in result.stderr


# Serving every head (`serving.export --all-heads`).

HEAD_OUTPUTS = {"probabilities", "class_id", "audio_digit_probabilities", "audio_digit_class_id",
                "parity_probabilities", "parity_class_id"}


@pytest.fixture(scope="module")
def all_heads_export(multitask_run):
    """The multi-task run exported by the CLI with `--all-heads` (SavedModel + TFLite):
    `(model_dir, parity report, test columns, pipeline inputs)`."""
    from serving.export import _pipeline_inputs
    from serving.export import _rows
    from serving.export import load_model_dir
    from tests.training.train_export_integration_test import _run

    model_dir = multitask_run[0]
    result = _run(["serving.export", "--model-dir", str(model_dir), "--all-heads",
                   "--format", "savedmodel", "--format", "tflite", "--version", "10"])
    assert "head parity" in result.stdout, result.stdout
    parity = json.loads((model_dir / "export" / "parity.json").read_text())
    config, _ = load_model_dir(model_dir)
    columns = _rows(config, "test", 4)
    x = _pipeline_inputs(columns, config, sorted(config.model.modalities))
    return model_dir, parity, columns, {k: v.numpy() for k, v in x.items()}


def _keras_heads(model_dir, x):
    """`{signature output: expected array}`: main head from `model.keras`, the others from
    `multitask.keras`."""
    main = np.asarray(keras.saving.load_model(model_dir / "model.keras")(x, training=False))
    full = keras.saving.load_model(model_dir / "multitask.keras")(x, training=False)
    expected = {"probabilities": main, "class_id": main.argmax(-1)}
    for head in ("audio_digit", "parity"):
        expected[f"{head}_probabilities"] = np.asarray(full[head])
        expected[f"{head}_class_id"] = np.asarray(full[head]).argmax(-1)
    return expected


def _assert_heads(out, expected, atol=1e-5):
    assert set(out) == set(expected)
    for name, value in expected.items():
        if name.endswith("class_id"):
            np.testing.assert_array_equal(np.asarray(out[name]), value, err_msg=name)
        else:
            np.testing.assert_allclose(np.asarray(out[name]), value, atol=atol, err_msg=name)


@pytest.mark.large
def test_all_heads_signatures_return_every_head(all_heads_export):
    import tensorflow as tf

    from mmkeras.data import example_schema

    model_dir, parity, columns, x = all_heads_export
    assert parity["passed"] and parity["all_heads"]
    assert parity["savedmodel"]["source"] == "multitask.keras"
    assert parity["savedmodel"]["heads"] == ["probabilities", "audio_digit", "parity"]
    assert set(parity["savedmodel"]["outputs"]) == HEAD_OUTPUTS
    assert parity["tflite"]["heads"] == ["probabilities"]
    assert parity["savedmodel"]["max_abs_diff"] <= 1e-5  # main head vs model.keras, test split
    for head in ("probabilities", "audio_digit", "parity"):
        check = parity["head_check"][head]
        assert check["passed"] and check["max_abs_diff"] <= 1e-5 and check["examples"] == 6
    assert parity["head_check"]["probabilities"]["reference"] == "model.keras"
    assert parity["head_check"]["parity"]["reference"] == "multitask.keras"
    assert all(s["passed"] for s in parity["signatures"].values())

    signatures = tf.saved_model.load(parity["savedmodel"]["path"]).signatures
    assert set(signatures) == {"serving_default", "serve_raw", "serve_examples",
                               "serve_audio_only", "serve_image_only"}
    assert all(s["passed"] for s in parity["subset_signatures"].values())
    for signature in signatures.values():
        assert set(signature.structured_outputs) == HEAD_OUTPUTS
    expected = _keras_heads(model_dir, x)
    _assert_heads(signatures["serving_default"](**{k: tf.constant(v) for k, v in x.items()}),
                  expected)
    raw = signatures["serve_raw"](
        image_bytes=tf.constant([open(p, "rb").read() for p in columns["image"]]),
        audio_bytes=tf.constant([open(p, "rb").read() for p in columns["audio"]]),
        image_present=tf.ones([4]), audio_present=tf.ones([4]),
    )
    _assert_heads(raw, expected)
    examples = [example_schema.to_example(image=i, audio=a).SerializeToString()
                for i, a in zip(columns["image"], columns["audio"])]
    _assert_heads(signatures["serve_examples"](examples=tf.constant(examples)), expected)
    # Every head of the image-only signature is serving_default's with the audio missing.
    no_audio = {k: np.asarray(v) for k, v in x.items()}
    no_audio["audio"] = np.zeros_like(no_audio["audio"])
    no_audio["audio_present"] = np.zeros_like(no_audio["audio_present"])
    no_audio["image_present"] = np.ones_like(no_audio["image_present"])
    _assert_heads(signatures["serve_image_only"](image=tf.constant(x["image"])),
                  _keras_heads(model_dir, no_audio))


@pytest.mark.large
def test_all_heads_tflite_keeps_the_main_head(all_heads_export):
    from ai_edge_litert.interpreter import Interpreter

    model_dir, parity, _, x = all_heads_export
    interpreter = Interpreter(model_path=parity["tflite"]["path"])
    assert set(interpreter.get_signature_list()["serving_default"]["outputs"]) == {
        "probabilities", "class_id"}
    out = interpreter.get_signature_runner("serving_default")(**x)
    np.testing.assert_allclose(out["probabilities"], _keras_heads(model_dir, x)["probabilities"],
                               atol=1e-4)
    assert parity["tflite"]["passed"]
    assert not list((model_dir / "export").rglob(".tmp*"))  # the main-head staging is gone


@pytest.mark.large
def test_local_server_returns_every_head_over_rest_and_grpc(all_heads_export, tmp_path):
    from benchmarks.serving import start_server
    from benchmarks.serving import stop_server
    from serving.client import GrpcClient
    from serving.client import RestClient
    from tests.serving.export_test import ready_grpc_port
    from tests.serving.export_test import serialized_examples

    model_dir, parity, columns, x = all_heads_export
    expected = _keras_heads(model_dir, x)
    name = parity["model_name"]
    examples = serialized_examples(columns)
    process, rest_port = start_server(model_dir / "export" / "savedmodel", tmp_path)
    try:
        grpc_port = ready_grpc_port(tmp_path / "server.stdout")
        rest = RestClient("localhost", rest_port, name)
        metadata = rest.metadata()["metadata"]["signature_def"]["signature_def"]
        assert set(metadata["serving_default"]["outputs"]) == HEAD_OUTPUTS
        _assert_heads(rest.predict(x), expected)  # the newest version: the --all-heads one
        _assert_heads(rest.predict({"examples": examples}, signature_name="serve_examples"),
                      expected)
        with GrpcClient("localhost", grpc_port, name) as grpc_client:
            _assert_heads(grpc_client.predict(x), expected)
    finally:
        stop_server(process)


def test_all_heads_without_multitask_keras_is_an_error_naming_the_file(tmp_path, capsys):
    from serving import export

    model_dir, _ = _source_dir(tmp_path)
    with pytest.raises(FileNotFoundError, match="multitask.keras"):
        export.export(model_dir, ["savedmodel"], all_heads=True)
    assert export.main(["--model-dir", str(model_dir), "--all-heads"]) == 2
    assert str(model_dir / "multitask.keras") in capsys.readouterr().err
    assert not (model_dir / "export").exists()


def test_missing_source_dir_exits_2_from_the_cli(tmp_path):
    from tests.training.train_export_integration_test import _run

    result = _run(["training.train", "--config", "training/configs/avmnist/early_fusion.yaml",
                   "--model-dir", str(tmp_path / "x"),
                   "--set", f"model.init_from=[{{model_dir: '{tmp_path / 'nope'}'}}]"],
                  check=False)
    assert result.returncode == 2
    assert "model.init_from[0].model_dir" in result.stderr
    assert not (tmp_path / "x" / "config.yaml").exists()
