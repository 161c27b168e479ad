"""Export with raw inputs in, for text, tabular and image models (issue 15, item 7).

Two real models, each trained one epoch on the real OpenMoji slice and exported once per
session in every format (SavedModel, TFLite, ONNX):
- `own_data`: an own-data table (`own_data.py`: image path, annotation, two numeric columns
  with empty cells, one categorical column) -> an image + text + tabular fusion model,
  exported with `python -m serving.export` as a user does;
- `text_only`: the OpenMoji text-only model (`TextVectorization` of `vocab.txt`).
Every check of the export (`parity.json`) must pass: each format against Keras on the test
split, `serve_raw` / `serve_examples` on raw strings, bytes and table cells (a NaN cell, an
unseen category, a missing modality) against the pipeline's tensors, and the TFLite model
behind the documented client step (`serving.client.tflite_inputs`). A live
`python -m serving.server` answers REST and gRPC requests with raw inputs, and refuses bad
ones with a 400 / INVALID_ARGUMENT naming the input.
"""

import base64
import dataclasses
import json
import pathlib
import subprocess
import sys
import urllib.error
import urllib.request

import numpy as np
import pytest

from tests.serving.conftest import REPO_ROOT
from tests.serving.conftest import start_server
from tests.serving.conftest import stop_server
from tests.serving.own_data import CATEGORICAL
from tests.serving.own_data import NUMERIC
from tests.serving.own_data import overrides
from tests.serving.own_data import write_own_data

pytestmark = pytest.mark.large  # trained and exported models, a live server

TINY = [
    "trainer.epochs=1", "trainer.verbose=0", "data.batch_size=16",
    "runtime.distribution=default", "runtime.cpu_replicas=1",
    "data.image_shape=[16,16,3]", "model.image_encoder.filters=[8]",
    "model.image_encoder.embedding_dim=16", "model.text_encoder.units=8",
    "model.text_encoder.token_dim=8", "model.text_encoder.embedding_dim=16",
    "model.head_units=[16]",
]
CONFIGS = pathlib.Path(REPO_ROOT) / "training" / "configs" / "openmoji"
ROWS = 4
OWN_NAME = "own_data_fusion"


@dataclasses.dataclass
class Exported:
    model_dir: pathlib.Path
    config: object
    report: dict
    version_dir: pathlib.Path


def _env():
    import os

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture(scope="session")
def openmoji_slice(data_root):
    pytest.importorskip("cairosvg")
    from mmkeras.datasets import openmoji

    return openmoji.prepare(size=16, per_class=10, data_root=data_root, verbose=False)


def _export_cli(model_dir):
    result = subprocess.run(
        [sys.executable, "-m", "serving.export", "--model-dir", str(model_dir),
         "--format", "savedmodel", "--format", "tflite", "--format", "onnx"],
        cwd=REPO_ROOT, env=_env(), capture_output=True, text=True, timeout=1500,
    )
    assert result.returncode == 0, f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return json.loads((model_dir / "export" / "parity.json").read_text()), result.stdout


@pytest.fixture(scope="session")
def own_data(openmoji_slice, tmp_path_factory):
    from mmkeras.configs import load_config
    from training.trainer import train

    root = tmp_path_factory.mktemp("own_data")
    table = write_own_data(openmoji_slice, root / "table")
    # A CNN text encoder: the GRU's unrolled graph in every subset signature is what made this
    # export slow (the text-only model below keeps the GRU).
    config = load_config(CONFIGS / "early_fusion.yaml",
                         overrides(table) + TINY + ["model.text_encoder.type=cnn"])
    model_dir = root / "model"
    train(config, model_dir)
    report, stdout = _export_cli(model_dir)
    assert "serve_raw (raw inputs" in stdout and "tflite + client step" in stdout
    version = model_dir / "export" / "savedmodel" / OWN_NAME / "1"
    return Exported(model_dir, config, report, version)


@pytest.fixture(scope="session")
def text_only(openmoji_slice, tmp_path_factory):
    from mmkeras.configs import load_config
    from serving import export as export_lib
    from training.trainer import train

    model_dir = tmp_path_factory.mktemp("text_only") / "model"
    config = load_config(CONFIGS / "text_only.yaml", TINY + [f"data.data_dir={openmoji_slice}"])
    train(config, model_dir)
    report = export_lib.export(model_dir, ("savedmodel", "tflite", "onnx"), log=lambda _: None)
    version = model_dir / "export" / "savedmodel" / config.model.name / "1"
    return Exported(model_dir, config, report, version)


_LOADED = {}


def _signatures(version_dir):
    import tensorflow as tf

    if str(version_dir) not in _LOADED:
        _LOADED[str(version_dir)] = tf.saved_model.load(str(version_dir))
    return _LOADED[str(version_dir)].signatures


def _call(version_dir, name, inputs):
    import tensorflow as tf

    specs = _signatures(version_dir)[name].structured_input_signature[1]
    out = _signatures(version_dir)[name](
        **{k: tf.constant(v, dtype=specs[k].dtype) for k, v in inputs.items()})
    return {k: v.numpy() for k, v in out.items()}


def _assert_every_check_passed(report, formats=("savedmodel", "tflite", "onnx")):
    assert report["passed"] and report["published"]
    for fmt in formats:
        entry = report[fmt]
        assert entry["passed"] and entry["top1_agreement"] == 1.0, (fmt, entry)
        assert entry["max_abs_diff"] <= report[fmt]["tolerance"]["max_abs_diff"]
    for name in ("serve_raw", "serve_examples"):
        entry = report["signatures"][name]
        assert entry["passed"] and entry["max_abs_diff_vs_keras"] <= 1e-5, (name, entry)
    assert report["tflite_client_step"]["passed"], report["tflite_client_step"]


# Export and parity.


def test_own_data_model_exports_with_raw_inputs_and_every_check_passes(own_data):
    report = own_data.report
    _assert_every_check_passed(report)
    raw = report["raw_inputs"]
    assert [i["name"] for i in raw["inputs"]] == [
        "image_bytes", "image_present", *NUMERIC, *CATEGORICAL, "tabular_present",
        "text", "text_present"]
    assert raw["nan_inputs"] == list(NUMERIC)
    assert raw["groups"]["tabular_present"] == [*NUMERIC, *CATEGORICAL]
    assert report["signatures"]["serve_raw"]["nan_cells"] == 1  # the injected NaN cell
    assert report["tflite_client_step"]["token_ids_equal_pipeline"] == {"text": True}
    assert {"serve_raw", "serve_examples", "serve_text", "serve_image_tabular_only"} <= set(
        report["savedmodel"]["signatures"])
    assets = own_data.model_dir / "export" / "tflite" / "assets"
    assert (assets / "vocab.txt").read_text() == (own_data.model_dir / "vocab.txt").read_text()
    assert json.loads((assets / "tabular.json").read_text())["numeric"] == list(NUMERIC)
    saved = json.loads((own_data.version_dir / "assets.extra" / "raw_inputs.json").read_text())
    assert saved["nan_inputs"] == list(NUMERIC)


def test_text_only_model_exports_with_raw_strings(text_only):
    report = text_only.report
    _assert_every_check_passed(report)
    assert [i["name"] for i in report["raw_inputs"]["inputs"]] == ["text", "text_present"]
    out = _call(text_only.version_dir, "serve_raw", {
        "text": np.array([b"grinning face", b"flag: Peru", b""], object),
        "text_present": np.array([1, 1, 0], np.float32)})
    ids = _call(text_only.version_dir, "serving_default", {
        "text": _pipeline_ids(text_only, ["grinning face", "flag: Peru", ""]),
        "text_present": np.array([1, 1, 0], np.float32)})
    np.testing.assert_allclose(out["probabilities"], ids["probabilities"], atol=1e-6)


def _pipeline_ids(exported, texts):
    import tensorflow as tf

    from mmkeras.data.preprocessing import Preprocessing

    pre = Preprocessing.load(exported.model_dir, exported.config.data, ["text"])
    return pre.text_ids(tf.constant(texts)).numpy()


def test_client_step_tokenizes_like_text_vectorization(text_only):
    from serving import client

    texts = ["Grinning FACE", "flag:  Côte d’Ivoire", "  red-apple!!", "ÉCLAIR tea\tcup",
             "a b c d e f g h i j k l m n o p", ""]
    assets = client.load_tflite_assets(text_only.model_dir / "export" / "tflite" / "assets")
    got = client.text_vectorization_ids(texts, assets["tensors"]["text"]["text"])
    np.testing.assert_array_equal(got, _pipeline_ids(text_only, texts))
    assert got[0].tolist()[:2] != [1, 1]  # real vocabulary ids, not all out-of-vocabulary


def _own_rows(own_data, count=ROWS):
    """Raw inputs of the first test rows of the own-data table, as a client has them."""
    import csv

    with open(pathlib.Path(own_data.config.data.data_dir) / "manifest.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "test"][:count]
    return {
        "image_bytes": np.array([pathlib.Path(r["image"]).read_bytes() for r in rows], object),
        "text": np.array([r["text"].encode() for r in rows], object),
        "brightness": np.array([float(r["brightness"] or "nan") for r in rows], np.float32),
        "words": np.array([float(r["words"]) for r in rows], np.float32),
        "block": np.array([r["block"].encode() for r in rows], object),
        "image_present": np.ones(len(rows), np.float32),
        "text_present": np.ones(len(rows), np.float32),
        "tabular_present": np.ones(len(rows), np.float32),
    }


def test_nan_is_imputed_with_the_training_mean_and_unknown_categories_share_id_0(own_data):
    stats = json.loads((own_data.model_dir / "tabular.json").read_text())
    raw = _own_rows(own_data)
    nan = dict(raw, brightness=np.full(ROWS, np.nan, np.float32))
    mean = dict(raw, brightness=np.full(ROWS, stats["mean"][0], np.float32))
    far = dict(raw, brightness=np.full(ROWS, stats["mean"][0] + 50 * stats["std"][0],
                                       np.float32))
    out = {k: _call(own_data.version_dir, "serve_raw", v)["probabilities"]
           for k, v in (("nan", nan), ("mean", mean), ("far", far))}
    np.testing.assert_allclose(out["nan"], out["mean"], atol=1e-6)
    assert np.abs(out["nan"] - out["far"]).max() > 1e-4  # the column reaches the model
    unseen = [_call(own_data.version_dir, "serve_raw", dict(raw, block=np.array(
        [value] * ROWS, object)))["probabilities"] for value in (b"zzz", b"not a block")]
    np.testing.assert_allclose(unseen[0], unseen[1], atol=1e-7)


# The server: REST and gRPC with raw inputs.


@pytest.fixture(scope="module")
def own_server(own_data, tmp_path_factory):
    proc = start_server(
        ["--model-base-path", str(own_data.model_dir / "export" / "savedmodel"),
         "--rest-port", "0", "--grpc-port", "0", "--poll-seconds", "5"],
        str(tmp_path_factory.mktemp("raw_server_logs")))
    try:
        yield proc
    finally:
        stop_server(proc.process)


def _post(server, body):
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.rest_port}/v1/models/{OWN_NAME}:predict",
        data=json.dumps(body).encode())
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _json_column(name, values):
    if values.dtype == object:
        if name.endswith("_bytes"):
            return [{"b64": base64.b64encode(v).decode()} for v in values]
        return [v.decode() for v in values]
    return [None if np.isnan(v) else float(v) for v in values]


def test_rest_and_grpc_answer_raw_strings_bytes_and_table_cells(own_data, own_server):
    from serving import client as client_lib

    raw = _own_rows(own_data)
    raw["brightness"][1] = np.nan  # a missing cell: null over REST, NaN over gRPC
    raw["text_present"][2] = 0.0
    raw["text"][2] = b""
    expected = _call(own_data.version_dir, "serve_raw", raw)
    columns = {k: _json_column(k, v) for k, v in raw.items()}
    status, body = _post(own_server, {"signature_name": "serve_raw", "inputs": columns})
    assert status == 200, body
    np.testing.assert_allclose(body["outputs"]["probabilities"], expected["probabilities"],
                               atol=1e-6)
    assert body["outputs"]["class_id"] == expected["class_id"].tolist()

    # Row format; row 3 leaves the whole tabular modality out (flag 0 filled in).
    instances = [{k: v[i] for k, v in columns.items()} for i in range(ROWS)]
    for name in [*NUMERIC, *CATEGORICAL, "tabular_present"]:
        del instances[3][name]
    status, body = _post(own_server, {"signature_name": "serve_raw", "instances": instances})
    assert status == 200, body
    without_table = dict(raw, tabular_present=np.array([1, 1, 1, 0], np.float32))
    want = _call(own_data.version_dir, "serve_raw", without_table)["probabilities"]
    np.testing.assert_allclose([p["probabilities"] for p in body["predictions"]], want,
                               atol=1e-6)

    with client_lib.GrpcClient("127.0.0.1", own_server.grpc_port, OWN_NAME) as grpc_client:
        outputs = grpc_client.predict(raw, signature_name="serve_raw")
    np.testing.assert_allclose(outputs["probabilities"], expected["probabilities"], atol=1e-6)

    described = json.loads((own_data.version_dir / "assets.extra" / "raw_inputs.json").read_text())
    assert described["groups"]["image_present"] == ["image_bytes"]
    status, body = _post(own_server, {"signature_name": "serve_examples", "inputs": {
        "examples": [{"b64": base64.b64encode(e).decode()}
                     for e in _examples(own_data, raw)]}})
    assert status == 200, body
    np.testing.assert_allclose(body["outputs"]["probabilities"], expected["probabilities"],
                               atol=1e-5)


def _examples(own_data, raw):
    """Serialized Examples of the raw rows (a NaN cell left out: missing)."""
    from mmkeras.data.preprocessing import Preprocessing
    from mmkeras.model_dir import load_model_dir
    from serving import raw_inputs
    from serving import serving_module as sm

    config, model = load_model_dir(own_data.model_dir)
    pre = Preprocessing.load(own_data.model_dir, config.data, config.model.modalities)
    features = sm.raw_features(model, pre)
    result = []
    for i in range(ROWS):
        values = {k: v[i] for k, v in raw.items()
                  if not (v.dtype != object and np.isnan(v[i]))}
        result.append(raw_inputs.to_example(values, features).SerializeToString())
    return result


@pytest.mark.parametrize("case, change, fragments", [
    ("number as a string", {"words": ["two", 1, 2, 3]}, ["'words'", "float32"]),
    ("text as a number", {"text": [1, 2, 3, 4]}, ["'text'", "string"]),
    ("missing column", {"block": None}, ["'block'"]),
    ("infinite number", {"brightness": [1e39, 1.0, 2.0, 3.0]}, ["'brightness'", "inf"]),
    ("undecodable image", {"image_bytes": [{"b64": base64.b64encode(b"not a png").decode()}] * 4},
     ["image_bytes"]),
])
def test_bad_raw_input_is_a_400_naming_the_input(own_data, own_server, case, change, fragments):
    raw = _own_rows(own_data)
    columns = {k: _json_column(k, v) for k, v in raw.items()}
    for name, value in change.items():
        if value is None:
            del columns[name]
        else:
            columns[name] = value
    status, body = _post(own_server, {"signature_name": "serve_raw", "inputs": columns})
    assert status == 400, (case, body)
    for fragment in fragments:
        assert fragment in body["error"], (case, body)
    assert own_server.process.poll() is None


def test_grpc_bad_raw_input_is_invalid_argument_naming_the_input(own_data, own_server):
    from serving import client as client_lib
    from serving.errors import ServingError

    raw = _own_rows(own_data)
    with client_lib.GrpcClient("127.0.0.1", own_server.grpc_port, OWN_NAME) as grpc_client:
        for change, fragment in (({"words": None}, "'words'"),
                                 ({"block": np.arange(ROWS, dtype=np.float32)}, "'block'")):
            inputs = dict(raw)
            for name, value in change.items():
                if value is None:
                    del inputs[name]
                else:
                    inputs[name] = value
            with pytest.raises(ServingError) as error:
                grpc_client.predict(inputs, signature_name="serve_raw")
            assert "INVALID_ARGUMENT" in str(error.value.code) and fragment in error.value.message
