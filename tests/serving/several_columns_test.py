"""Several columns of one modality type, end to end (issue 15, item 2): a table with two image
columns (`front`: the OpenMoji picture of the row, `back`: another emoji's picture) and two
text columns (`title`, `description`) around the real OpenMoji slice.

`mmkeras train --data` (one epoch) makes four modalities, each with its own encoder; predict
marks one empty image cell missing; `serving.export` publishes a SavedModel and a TFLite
model whose checks all pass (raw inputs: `front_bytes`, `back_bytes`, `title`,
`description`); one REST request with raw strings and image bytes for each feature to a
live `python -m serving.server` answers what the SavedModel answers in process (and a bad
front image is a 400 naming `front_bytes`); the TFLite CLI takes a file per image feature;
`explain` maps each image feature. Text encoders are CNNs: an unrolled GRU made the export of
17 signatures (2**4 - 2 subsets) take minutes.
"""

import base64
import csv
import json
import pathlib
import urllib.error
import urllib.request

import numpy as np
import pytest

from tests.serving.conftest import start_server
from tests.serving.conftest import stop_server
from training import own_data_train
from training import predict

pytestmark = pytest.mark.large  # a trained and exported model, a live server

FEATURES = ["back", "description", "front", "title"]
TINY = ["trainer.epochs=1", "trainer.verbose=0", "data.batch_size=16",
        "runtime.distribution=default", "runtime.cpu_replicas=1",
        "data.image_shape=[16,16,3]", "model.image_encoder.filters=[8]",
        "model.image_encoder.embedding_dim=8", "model.text_encoder.units=8",
        "model.text_encoder.token_dim=8", "model.text_encoder.embedding_dim=8",
        "model.text_encoder.type=cnn", "model.head_units=[16]"]


@pytest.fixture(scope="session")
def two_images_table(data_root, tmp_path_factory):
    pytest.importorskip("cairosvg")
    from mmkeras.datasets import openmoji

    source = openmoji.prepare(size=16, per_class=10, data_root=data_root, verbose=False)
    with open(source / "manifest.csv", newline="") as f:
        manifest = list(csv.DictReader(f))
    root = tmp_path_factory.mktemp("two_images")
    rows = []
    for i, r in enumerate(manifest):
        other = manifest[(i + 7) % len(manifest)]
        rows.append({
            "sku": f"SKU{i:05d}",
            "Front": str(source / r["image"]),
            "Back": "" if i % 8 == 3 else str(source / other["image"]),  # some backs missing
            "Title": r["text"],
            "Description": f"{r['text']} in the {r['group']} group" if i % 5 else "",
            "kind": r["label"],
        })
    table = root / "two_images.csv"
    with open(table, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root, rows, table


@pytest.fixture(scope="session")
def two_images_model(two_images_table):
    root, rows, table = two_images_table
    model_dir = root / "run"
    args = ["--data", str(table), "--target", "kind", "--model-dir", str(model_dir)]
    for override in TINY:
        args += ["--set", override]
    assert own_data_train.main(args) == 0
    return model_dir


def test_two_image_and_two_text_columns_train_as_four_modalities(two_images_model, capsys):
    import keras

    model_dir = two_images_model
    layout = json.loads((model_dir / "table.json").read_text())
    assert layout["types"] == {"back": "image", "description": "text", "front": "image",
                               "title": "text"}
    assert layout["columns"] == {"back": ["Back"], "description": ["Description"],
                                 "front": ["Front"], "title": ["Title"]}
    report = json.loads((model_dir / "report.json").read_text())
    assert report["config"]["model"]["modalities"] == FEATURES
    missing = {s: p["missing"] for s, p in report["data_problems"].items()}
    assert sum(m.get("back", 0) for m in missing.values()) > 0
    assert sum(m.get("front", 0) for m in missing.values()) == 0
    model = keras.saving.load_model(model_dir / "model.keras", compile=False)
    encoders = {m: model.get_layer(f"{m}_encoder") for m in FEATURES}
    front, back = encoders["front"].weights[0].numpy(), encoders["back"].weights[0].numpy()
    assert front.shape == back.shape and not np.allclose(front, back)  # own weights


def test_predict_marks_only_the_empty_image_missing(two_images_table, two_images_model):
    root, rows, _ = two_images_table
    new = [{k: v for k, v in r.items() if k != "kind"} for r in rows[1:5]]
    for row in new:  # every cell given, then one emptied per row
        row["Back"] = row["Back"] or rows[0]["Front"]
        assert row["Description"]
    new[0]["Back"] = ""
    new[1]["Front"] = ""
    new[2]["Description"] = ""
    new[3]["Back"] = new[3]["Front"] = ""
    table = root / "new.csv"
    with open(table, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(new[0]))
        writer.writeheader()
        writer.writerows(new)
    out = root / "predictions.csv"
    summary = predict.predict_table(two_images_model, table, out)
    assert summary["predicted"] == 4
    with open(out, newline="") as f:
        predictions = list(csv.DictReader(f))
    assert [p["missing"] for p in predictions] == ["back", "front", "description", "back|front"]


@pytest.fixture(scope="session")
def two_images_export(two_images_model):
    from serving import export as export_lib

    report = export_lib.export(two_images_model, ("savedmodel", "tflite"), log=lambda _: None)
    name = json.loads((two_images_model / "export" / "parity.json").read_text())["model_name"]
    return report, two_images_model / "export" / "savedmodel" / name / "1", name


def test_export_takes_raw_inputs_per_feature_and_every_check_passes(two_images_export):
    report, version_dir, _ = two_images_export
    assert report["passed"] and report["published"]
    for fmt in ("savedmodel", "tflite"):
        assert report[fmt]["passed"] and report[fmt]["top1_agreement"] == 1.0, report[fmt]
    for name in ("serve_raw", "serve_examples"):
        entry = report["signatures"][name]
        assert entry["passed"] and entry["max_abs_diff_vs_keras"] <= 1e-5, (name, entry)
    assert report["tflite_client_step"]["passed"], report["tflite_client_step"]
    assert report["tflite_client_step"]["token_ids_equal_pipeline"] == {
        "description": True, "title": True}
    assert report["text_signature"]["passed"]
    assert [i["name"] for i in report["raw_inputs"]["inputs"]] == [
        "back_bytes", "back_present", "description", "description_present",
        "front_bytes", "front_present", "title", "title_present"]
    assets = version_dir.parents[2] / "tflite" / "assets"
    inputs = json.loads((assets / "inputs.json").read_text())
    assert inputs["tensors"]["title"]["text"]["vocabulary"] == "vocab_title.txt"
    assert (assets / "vocab_description.txt").read_text() == (
        version_dir.parents[3] / "vocab_description.txt").read_text()


def test_one_rest_request_with_raw_strings_and_bytes_per_feature(
        two_images_table, two_images_export, tmp_path_factory):
    import tensorflow as tf

    _, rows, _ = two_images_table
    report, version_dir, name = two_images_export
    rows = rows[:3]
    raw = {
        "front_bytes": [pathlib.Path(r["Front"]).read_bytes() for r in rows],
        "back_bytes": [pathlib.Path(r["Back"]).read_bytes() if r["Back"] else b"" for r in rows],
        "title": [r["Title"] for r in rows],
        "description": [r["Description"] for r in rows],
    }
    raw["back_present"] = [1.0 if b else 0.0 for b in raw["back_bytes"]]
    raw["description_present"] = [1.0 if d else 0.0 for d in raw["description"]]
    raw["front_present"] = raw["title_present"] = [1.0] * len(rows)
    signature = tf.saved_model.load(str(version_dir)).signatures["serve_raw"]
    specs = signature.structured_input_signature[1]
    expected = signature(**{k: tf.constant(v, specs[k].dtype) for k, v in raw.items()})
    body = {"signature_name": "serve_raw", "inputs": {
        k: [{"b64": base64.b64encode(v).decode()} for v in values] if k.endswith("_bytes")
        else values for k, values in raw.items()}}
    server = start_server(["--model-base-path", str(version_dir.parents[1]),
                           "--rest-port", "0", "--grpc-port", "0"],
                          str(tmp_path_factory.mktemp("two_images_server")))
    try:
        request = urllib.request.Request(
            f"http://127.0.0.1:{server.rest_port}/v1/models/{name}:predict",
            data=json.dumps(body).encode())
        with urllib.request.urlopen(request, timeout=120) as response:
            assert response.status == 200
            outputs = json.loads(response.read())["outputs"]
        # An undecodable front image: a 400 naming the bytes inputs, not the text ones.
        body["inputs"]["front_bytes"][1] = {"b64": base64.b64encode(b"not a png").decode()}
        bad = urllib.request.Request(request.full_url, data=json.dumps(body).encode())
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(bad, timeout=120)
        assert info.value.code == 400
        error = json.loads(info.value.read())["error"]
        assert "'front_bytes'" in error and "'title'" not in error, error
    finally:
        stop_server(server.process)
    np.testing.assert_allclose(outputs["probabilities"], expected["probabilities"].numpy(),
                               atol=1e-6)
    assert outputs["class_id"] == expected["class_id"].numpy().tolist()


def test_tflite_cli_takes_a_file_per_image_feature(two_images_table, two_images_export):
    """`python -m serving.tflite_predict --file front=... --file back=...` (the text features
    left out: missing) agrees with the documented client step on the same files."""
    from serving import client
    from serving import tflite_predict

    _, rows, _ = two_images_table
    report, version_dir, _ = two_images_export
    tflite_dir = version_dir.parents[2] / "tflite"
    row = rows[1]
    files = {"front": row["Front"], "back": row["Back"]}
    class_id, probabilities = tflite_predict.predict(tflite_dir / "model.tflite", files=files)
    raw = {"front_bytes": [pathlib.Path(row["Front"]).read_bytes()],
           "back_bytes": [pathlib.Path(row["Back"]).read_bytes()],
           "title": [""], "description": [""], "title_present": [0.0],
           "description_present": [0.0]}
    runner = tflite_predict.signature_runner(tflite_dir / "model.tflite")
    want = runner(**client.tflite_inputs(tflite_dir / "assets", raw))["probabilities"][0]
    np.testing.assert_allclose(probabilities, want, atol=1e-6)
    assert class_id == int(np.argmax(want))
    outputs = tflite_predict.predict_outputs(tflite_dir / "model.tflite", files=files)
    assert sorted(outputs) == ["class_id", "probabilities"] and outputs["class_id"] == class_id
    np.testing.assert_array_equal(outputs["probabilities"], probabilities)


def test_explain_maps_each_image_feature(two_images_model, tmp_path):
    from training import explain

    summary, out = explain.explain(two_images_model, 0, out=tmp_path / "explain", steps=8)
    assert set(summary["gradcam_layers"]) == {"back", "front"}
    assert summary["gradcam_layers"]["front"].startswith("front_encoder_")
    for m in ("front", "back"):
        assert (out / f"saliency_{m}.png").is_file()
        assert (out / f"gradcam_plus_plus_{m}.png").is_file()
