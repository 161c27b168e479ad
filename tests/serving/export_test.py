"""Export of a tiny trained model directory in every format, and every artifact used for real.

One tiny early-fusion model (1 epoch on the small AV-MNIST slice, trained in-process with the
trainer) is exported once with the CLI in every format (`SavedModel`, the four TFLite variants,
ONNX); the tests then reload each artifact the way its users do: SavedModel signatures by name,
TFLite through LiteRT signature runners, ONNX in onnxruntime, the warm-up file as
`PredictionLog`s, `models.config` as a `ModelServerConfig`, and the SavedModel behind the local
server over REST (`serve_examples`, base64 Examples) and gRPC (`serving_default`).

The tiny model is barely trained, so its quantized variants are not held to the accuracy
tolerances (the CLI gets relaxed `--tolerance`s); float formats and signatures are held to the
real ones.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.large

TINY = [
    "trainer.epochs=1",
    "trainer.verbose=0",
    "data.batch_size=16",
    "runtime.distribution=default",
    "runtime.cpu_replicas=1",
    "model.image_encoder.filters=[8]",
    "model.audio_encoder.filters=[8]",
    "model.image_encoder.embedding_dim=16",
    "model.audio_encoder.embedding_dim=16",
    "model.head_units=[16]",
]
RELAXED = [
    f"{fmt}.{field}={value}"
    for fmt in ("tflite_f16", "tflite_dynamic", "tflite_int8")
    for field, value in (("min_top1_agreement", 0), ("max_accuracy_drop", "none"),
                         ("max_abs_diff", "none"))
]
VARIANTS = {"tflite": "model.tflite", "tflite_f16": "model_f16.tflite",
            "tflite_dynamic": "model_dynamic.tflite", "tflite_int8": "model_int8.tflite"}
INPUTS = {"image", "audio", "image_present", "audio_present"}



def serialized_examples(columns, count=4):
    """`count` serialized `tf.train.Example`s of the rows' image and audio (an object array)."""
    from mmkeras.data import example_schema

    examples = np.empty(count, dtype=object)
    examples[:] = [example_schema.to_example(image=i, audio=a).SerializeToString()
                   for i, a in zip(columns["image"][:count], columns["audio"][:count])]
    return examples


def ready_grpc_port(stdout_path):
    """The gRPC port on the local server's `READY rest=... grpc=...` line (None if absent)."""
    for line in pathlib.Path(stdout_path).read_text().splitlines():
        if line.startswith("READY "):
            return int(dict(f.split("=") for f in line.split()[1:])["grpc"])
    return None

def _env():
    return dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")


@pytest.fixture(scope="module")
def model_dir(avmnist_small, tmp_path_factory):
    """A tiny trained model directory, exported in every format by the CLI."""
    from mmkeras.configs import load_config
    from training.trainer import train

    directory = tmp_path_factory.mktemp("export") / "tiny"
    config = load_config(REPO / "training/configs/avmnist/early_fusion.yaml",
                         TINY + [f"data.data_dir={avmnist_small}"])
    train(config, directory)
    cmd = [sys.executable, "-m", "serving.export", "--model-dir", str(directory),
           "--format", "savedmodel", "--format", "tflite", "--format", "onnx"]
    cmd += [x for q in ("float32", "float16", "dynamic", "int8") for x in ("--tflite-quant", q)]
    cmd += [x for t in RELAXED for x in ("--tolerance", t)]
    result = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return directory


@pytest.fixture(scope="module")
def loaded(model_dir):
    from serving.export import load_model_dir

    config, model = load_model_dir(model_dir)
    parity = json.loads((model_dir / "export" / "parity.json").read_text())
    return config, model, parity


@pytest.fixture(scope="module")
def test_rows(loaded):
    """Four real test rows (paths, labels) and their pipeline-decoded tensors."""
    from serving.export import _pipeline_inputs
    from serving.export import _rows

    config = loaded[0]
    columns = _rows(config, "test", 4)
    x = _pipeline_inputs(columns, config, sorted(config.model.modalities))
    return columns, {k: v.numpy() for k, v in x.items()}


def _keras(model, x):
    return np.asarray(model(x, training=False))


def test_parity_report_covers_every_format(loaded, model_dir):
    _, _, parity = loaded
    assert parity["passed"]
    assert parity["savedmodel"]["max_abs_diff"] <= 1e-5
    assert parity["tflite"]["max_abs_diff"] <= 1e-4
    assert parity["onnx"]["max_abs_diff"] <= 1e-4
    for key in ("savedmodel", "tflite", "onnx"):
        assert parity[key]["top1_agreement"] >= 0.995 and parity[key]["passed"]
    for key in ("savedmodel", *VARIANTS, "onnx"):
        entry = parity[key]
        assert entry["bytes"] > 1000 and os.path.exists(entry["path"])
        assert {"max_abs_diff", "top1_agreement", "accuracy", "tolerance"} <= set(entry)
    for name in ("serve_raw", "serve_examples"):
        assert parity["signatures"][name]["passed"]
        assert parity["signatures"][name]["max_abs_diff_vs_serving_default"] <= 1e-5
    f32 = parity["tflite"]["bytes"]
    assert parity["tflite_f16"]["bytes"] < 0.6 * f32
    assert parity["tflite_dynamic"]["bytes"] < 0.4 * f32
    assert parity["tflite_int8"]["bytes"] < 0.4 * f32
    assert not [p for p in (model_dir / "export").rglob(".tmp*")]


def test_every_signature_reloads_and_agrees(loaded, model_dir, test_rows):
    import tensorflow as tf

    from mmkeras.data import example_schema

    config, model, parity = loaded
    columns, x = test_rows
    signatures = tf.saved_model.load(parity["savedmodel"]["path"]).signatures
    assert set(signatures) == {"serving_default", "serve_raw", "serve_examples"}
    expected = _keras(model, x)

    default = signatures["serving_default"](**{k: tf.constant(v) for k, v in x.items()})
    assert set(default) == {"probabilities", "class_id"}
    np.testing.assert_allclose(default["probabilities"].numpy(), expected, atol=1e-5)

    raw = signatures["serve_raw"](
        image_bytes=tf.constant([open(p, "rb").read() for p in columns["image"]]),
        audio_bytes=tf.constant([open(p, "rb").read() for p in columns["audio"]]),
        image_present=tf.ones([4]), audio_present=tf.ones([4]),
    )
    np.testing.assert_allclose(raw["probabilities"].numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(raw["class_id"].numpy(), expected.argmax(-1))

    examples = [example_schema.to_example(image=i, audio=a, label=int(y)).SerializeToString()
                for i, a, y in zip(columns["image"], columns["audio"], columns["label"])]
    # A missing modality: no audio feature at all, its flag inferred as 0.
    examples.append(example_schema.to_example(image=columns["image"][0]).SerializeToString())
    out = signatures["serve_examples"](examples=tf.constant(examples))
    np.testing.assert_allclose(out["probabilities"].numpy()[:4], expected, atol=1e-5)
    masked = {k: v[:1].copy() for k, v in x.items()}
    masked["audio"][:] = 0.0
    masked["audio_present"][:] = 0.0
    np.testing.assert_allclose(out["probabilities"].numpy()[4:], _keras(model, masked), atol=1e-5)


def test_every_tflite_variant_runs_by_signature(loaded, model_dir, test_rows):
    from ai_edge_litert.interpreter import Interpreter

    _, model, parity = loaded
    _, x = test_rows
    expected = _keras(model, x)
    for key, filename in VARIANTS.items():
        path = model_dir / "export" / "tflite" / filename
        interpreter = Interpreter(model_path=str(path))
        signature = interpreter.get_signature_list()["serving_default"]
        assert set(signature["inputs"]) == INPUTS
        assert set(signature["outputs"]) == {"class_id", "probabilities"}
        runner = interpreter.get_signature_runner("serving_default")
        out = runner(**x)
        probs = out["probabilities"]
        assert probs.shape == expected.shape and probs.dtype == np.float32
        np.testing.assert_allclose(probs.sum(-1), 1.0, atol=0.02)
        np.testing.assert_array_equal(out["class_id"], probs.argmax(-1))
        if key == "tflite":
            np.testing.assert_allclose(probs, expected, atol=1e-4)
        ops = {op["op_name"] for op in interpreter._get_ops_details()}
        assert not any(op.startswith("Flex") for op in ops), ops
        if key == "tflite_int8":
            dtypes = {d["dtype"] for d in interpreter.get_tensor_details()}
            assert np.int8 in dtypes
            assert "QUANTIZE" in ops and "RFFT2D" in ops  # int8 CNNs, float log-mel front end


def test_onnx_runs_in_onnxruntime(loaded, model_dir, test_rows):
    from serving.onnx_export import session

    _, model, parity = loaded
    _, x = test_rows
    sess, run = session(model_dir / "export" / "onnx" / "model.onnx")
    assert {i.name.split(":")[0] for i in sess.get_inputs()} == INPUTS
    out = run(x)
    np.testing.assert_allclose(out["probabilities"], _keras(model, x), atol=1e-4)
    assert parity["onnx"]["source"].startswith("savedmodel")


def test_warmup_requests_parse_and_are_valid(loaded):
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    config, model, parity = loaded
    version_dir = parity["savedmodel"]["path"]
    path = os.path.join(version_dir, "assets.extra", "tf_serving_warmup_requests")
    records = list(tf.data.TFRecordDataset(path).as_numpy_iterator())
    assert 1 <= len(records) <= 1000
    signature = tf.saved_model.load(version_dir).signatures["serving_default"]
    for record in records:
        log = prediction_log_pb2.PredictionLog.FromString(record)
        request = log.predict_log.request
        assert request.model_spec.name == config.model.name
        assert request.model_spec.signature_name == "serving_default"
        assert set(request.inputs) == INPUTS
        inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        assert inputs["image"].dtype == np.float32 and inputs["image"].shape[1:] == (28, 28, 1)
        assert inputs["image"].max() > 0  # real examples, not zeros
        out = signature(**{k: tf.constant(v) for k, v in inputs.items()})
        np.testing.assert_allclose(out["probabilities"].numpy(), _keras(model, inputs), atol=1e-5)


def test_models_config_parses(loaded, model_dir):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = loaded[0]
    text = (model_dir / "export" / "savedmodel" / "models.config").read_text()
    parsed = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    (entry,) = parsed.model_config_list.config
    assert entry.name == config.model.name
    assert entry.model_platform == "tensorflow"
    assert os.path.isabs(entry.base_path)
    assert os.path.isfile(os.path.join(entry.base_path, "1", "saved_model.pb"))


def test_tf2onnx_failures_raise(loaded, tmp_path):
    from serving import onnx_export

    parity = loaded[2]
    # The TF Serving SavedModel's log-mel uses RFFT -> Real/Imag, which tf2onnx cannot
    # convert; with --continue_on_error tf2onnx exits 0 and writes a model anyway.
    with pytest.raises(onnx_export.OnnxExportError, match="Unsupported ops|not supported") as e:
        onnx_export.convert(parity["savedmodel"]["path"], tmp_path / "bad.onnx",
                            extra_args=["--continue_on_error"])
    assert "Real" in str(e.value) or "Imag" in str(e.value)
    assert not list(tmp_path.iterdir())  # neither the model nor its temporary file


def test_crash_mid_export_leaves_no_version(tmp_path, monkeypatch):
    import keras

    from serving import export

    image = keras.Input((28, 28, 1), name="image")
    flag = keras.Input((), name="image_present")
    x = keras.layers.Concatenate()([keras.layers.Flatten()(image), keras.layers.Reshape((1,))(flag)])
    probabilities = keras.layers.Dense(3, activation="softmax", name="probabilities")(x)
    model = keras.Model({"image": image, "image_present": flag}, probabilities)
    base = tmp_path / "savedmodel" / "tiny"

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(export, "write_warmup", boom)
    x = {"image": np.zeros((1, 28, 28, 1), np.float32), "image_present": np.ones(1, np.float32)}
    with pytest.raises(RuntimeError, match="disk full"):
        export.export_savedmodel(model, base, warmup_examples=x, model_name="tiny")
    assert list(base.iterdir()) == []  # no version directory, no temporary directory


def test_local_server_serves_examples_over_rest_and_default_over_grpc(loaded, model_dir,
                                                                      test_rows, tmp_path):
    from benchmarks.serving import start_server
    from benchmarks.serving import stop_server
    from serving.client import GrpcClient
    from serving.client import RestClient

    config, model, _ = loaded
    columns, x = test_rows
    expected = _keras(model, x)
    examples = serialized_examples(columns)
    process, rest_port = start_server(model_dir / "export" / "savedmodel", tmp_path)
    try:
        grpc_port = ready_grpc_port(tmp_path / "server.stdout")
        rest = RestClient("localhost", rest_port, config.model.name)
        out = rest.predict({"examples": examples}, signature_name="serve_examples")
        np.testing.assert_allclose(out["probabilities"], expected, atol=1e-5)
        np.testing.assert_array_equal(out["class_id"], expected.argmax(-1))
        with GrpcClient("localhost", grpc_port, config.model.name) as grpc_client:
            out = grpc_client.predict(x)
        np.testing.assert_allclose(out["probabilities"], expected, atol=1e-5)
    finally:
        stop_server(process)


def test_tflite_predict_cli_decodes_like_the_pipeline(model_dir, test_rows, capsys):
    from serving import tflite_predict

    columns, x = test_rows
    np.testing.assert_array_equal(tflite_predict.load_image(columns["image"][0]), x["image"][0])
    np.testing.assert_array_equal(tflite_predict.load_wav(columns["audio"][0], 8000), x["audio"][0])

    model = model_dir / "export" / "tflite" / "model.tflite"
    runner = tflite_predict.signature_runner(model)
    expected = runner(**{k: v[:1] for k, v in x.items()})["probabilities"][0]
    assert tflite_predict.main(["--model", str(model), "--image", columns["image"][0],
                                "--audio", columns["audio"][0], "--json"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    np.testing.assert_allclose(printed["probabilities"], expected, atol=1e-5)
    assert printed["class_id"] == int(np.argmax(expected))
    assert tflite_predict.main(["--model", str(model), "--image", columns["image"][0],
                                "--no-audio"]) == 0
    assert "class_id:" in capsys.readouterr().out


def test_tolerances_and_exit_status(monkeypatch, capsys):
    from serving import export

    t = export.parse_tolerances(["tflite_int8.max_accuracy_drop=0.02", "onnx.max_abs_diff=none"])
    assert t["tflite_int8"].max_accuracy_drop == 0.02 and t["tflite_int8"].min_top1_agreement == 0.97
    assert t["onnx"].max_abs_diff is None
    with pytest.raises(ValueError):
        export.parse_tolerances(["tflite_int9.max_abs_diff=1"])

    int8 = export.TOLERANCES["tflite_int8"]
    ok = export.judge({"max_abs_diff": 0.1, "top1_agreement": 0.98, "accuracy": 0.695}, 0.70, int8)
    assert ok["passed"]
    too_low = export.judge({"max_abs_diff": 0.1, "top1_agreement": 0.98, "accuracy": 0.68}, 0.70, int8)
    assert not too_low["passed"]
    better = export.judge({"max_abs_diff": 0.1, "top1_agreement": 0.98, "accuracy": 0.75}, 0.70, int8)
    assert better["passed"]

    failing = {"formats": ["tflite_int8"], "keras": {"accuracy": 0.7}, "passed": False,
               "tflite_int8": dict(too_low, path="x", bytes=1)}
    monkeypatch.setattr(export, "export", lambda *a, **k: failing)
    assert export.main(["--model-dir", "unused", "--format", "tflite",
                        "--tflite-quant", "int8"]) == 1
    assert "FAILED" in capsys.readouterr().out
