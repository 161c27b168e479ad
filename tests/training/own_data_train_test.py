"""`mmkeras train --data` then `mmkeras predict` on a product table around the real OpenMoji
slice (image + two text columns + price + size; string target; no split column), trained for
one epoch: the model directory is self-contained, the two text columns are two text inputs
with an encoder and a vocabulary each, and predict handles unlabelled rows with missing
cells (an empty description with a title marks only `description` missing)."""

import csv
import json
import shutil

import numpy as np
import pytest

from mmkeras import model_dir as model_dir_lib
from serving import export
from tests.data.schema_test import _user_table
from tests.data.schema_test import _write_csv
from tests.datasets.openmoji_test import openmoji_small  # noqa: F401  (session fixture)
from training import evaluate
from training import explain
from training import own_data_train
from training import predict
from training import report as report_lib


@pytest.fixture(scope="session")
def trained_products(openmoji_small, tmp_path_factory):  # noqa: F811
    root = tmp_path_factory.mktemp("own_data")
    rows = _user_table(openmoji_small, root / "products.csv")
    for i, row in enumerate(rows):
        row.pop("tags")
        row["price"] = "" if i % 6 == 0 else row["price"]
        if i % 9 == 0:
            row["photo"] = ""  # a missing image
    table = _write_csv(root / "products.csv", rows)
    model_dir = root / "run"
    status = own_data_train.main([
        "--data", str(table), "--target", "colour", "--model-dir", str(model_dir),
        "--set", "trainer.epochs=1", "--set", "data.image_shape=[16,16,3]",
        # A CNN text encoder: the default GRU is unrolled in the graph (slow to build twice).
        "--set", "model.text_encoder.type=cnn",
    ])
    assert status == 0
    return root, rows, model_dir


@pytest.mark.large
def test_train_writes_a_self_contained_model_dir(trained_products):
    _, rows, model_dir = trained_products
    for name in ("schema.json", "labels.json", "table.json", "config.yaml", "model.keras",
                 "vocab_title.txt", "vocab_description.txt", "tabular.json",
                 "generated.yaml", "data/manifest.csv",
                 "data/dataset.json", "report.json"):
        assert (model_dir / name).is_file(), name
    report = json.loads((model_dir / "report.json").read_text())
    assert report["test"]["examples"] == json.loads(
        (model_dir / "data" / "dataset.json").read_text())["splits"]["test"]
    assert report["dataset"]["name"] == "own:products.csv"
    masked = {s: p["missing"] for s, p in report["data_problems"].items()}
    assert sum(m.get("image", 0) for m in masked.values()) == sum(not r["photo"] for r in rows)
    assert report["config"]["model"]["modalities"] == ["description", "image", "tabular", "title"]
    assert report["config"]["data"]["modality_types"] == {"description": "text", "title": "text"}
    assert report["config"]["data"]["image_resize"] == "pad"
    assert not (model_dir / "vocab.txt").exists()
    # Two text inputs, two text encoders with weights of their own.
    import keras

    model = keras.saving.load_model(model_dir / "model.keras", compile=False)
    names = {layer.name for layer in model.layers}
    assert {"title", "description", "title_present", "description_present",
            "title_encoder", "description_encoder"} <= names and "text" not in names
    title, description = model.get_layer("title_encoder"), model.get_layer("description_encoder")
    assert [w.shape for w in title.weights] == [w.shape for w in description.weights]
    assert not np.allclose(title.weights[0].numpy(), description.weights[0].numpy())
    vocabularies = [(model_dir / f"vocab_{m}.txt").read_text().split() for m in
                    ("title", "description")]
    assert vocabularies[0] != vocabularies[1] and "group" in vocabularies[1]


@pytest.mark.large
def test_predict_unlabelled_rows_with_missing_cells(trained_products):
    root, rows, model_dir = trained_products
    new = [{k: v for k, v in r.items() if k != "colour"} for r in rows[:10]]
    new[1]["photo"] = ""
    new[2]["title"] = new[2]["description"] = ""
    new[5]["description"] = ""  # a title without a description
    new[3]["price"] = ""
    new[4]["price"] = "n/a"
    table = _write_csv(root / "new.csv", new)
    out = root / "predictions.csv"
    with pytest.raises(Exception, match=r"new.csv, line 6, column 'price': 'n/a' is not a"):
        predict.predict_table(model_dir, table, out)
    summary = predict.predict_table(model_dir, table, out, bad_input="mask", top_k=2)
    assert summary["predicted"] == 10 and summary["problems"]["bad_number"] == 1
    with open(out, newline="") as f:
        predictions = list(csv.DictReader(f))
    assert [p["row"] for p in predictions] == [str(i) for i in range(2, 12)]
    assert [p["id"] for p in predictions] == [r["sku"] for r in new]
    assert predictions[1]["missing"] == "image"
    assert predictions[2]["missing"] == "description|title"
    assert predictions[5]["missing"] == "description"
    assert predictions[3]["missing"] == ""  # a missing number is imputed, not a missing modality
    labels = json.loads((model_dir / "labels.json").read_text())["labels"]
    for p in predictions:  # 3 classes > top_k=2: the two best
        assert p["label"] == p["top1_label"] and p["label"] in labels
        assert float(p["top1_probability"]) >= float(p["top2_probability"])
    summary = predict.predict_table(model_dir, table, out, bad_input="skip")
    assert summary["predicted"] == 9 and summary["skipped"] == 1
    with open(out, newline="") as f:
        predictions = list(csv.DictReader(f))
    probabilities = np.array([[float(p[f"p_{label}"]) for label in labels] for p in predictions])
    np.testing.assert_allclose(probabilities.sum(1), 1.0, atol=1e-4)


@pytest.mark.large
def test_a_moved_model_dir_reads_its_own_data(trained_products, tmp_path):
    """config.yaml names the absolute data folder it was trained from; a copy elsewhere reads
    the copy's `data/` (the original's could be gone)."""
    _, _, model_dir = trained_products
    moved = tmp_path / "elsewhere"
    shutil.copytree(model_dir, moved, ignore=shutil.ignore_patterns("backup", "logs", "export"))
    config = model_dir_lib.load_config(moved)
    assert config.data.data_dir == str((moved / "data").resolve())
    assert model_dir_lib.load_config(model_dir).data.data_dir == str((model_dir / "data").resolve())
    report = json.loads((model_dir / "report.json").read_text())
    payload = evaluate.evaluate(moved)
    assert payload["metrics"]["accuracy"] == pytest.approx(report["test"]["accuracy"], abs=1e-6)


@pytest.mark.large
def test_evaluate_reads_the_fitted_preprocessing(trained_products):
    """`mmkeras evaluate` on a text + tabular model (it built the dataset without the fitted
    vocabulary and tabular statistics before)."""
    _, _, model_dir = trained_products
    payload = evaluate.evaluate(model_dir)
    report = json.loads((model_dir / "report.json").read_text())
    assert payload["metrics"]["accuracy"] == pytest.approx(report["test"]["accuracy"], abs=1e-6)
    assert set(payload["missing_modalities"]) == {
        "all_present", "description_missing", "image_missing", "tabular_missing",
        "title_missing", "all_missing"}


def _test_rows(model_dir):
    """The table lines (as strings) of the converted test split."""
    with open(model_dir / "data" / "manifest.csv", newline="") as f:
        return [r["id"].rsplit(":", 1)[-1] for r in csv.DictReader(f) if r["split"] == "test"]


@pytest.fixture(scope="session")
def product_table(openmoji_small, tmp_path_factory):  # noqa: F811
    """The product table with its `tags` (`a|b`, multi-label) and `rating` (numeric) columns."""
    root = tmp_path_factory.mktemp("own_targets")
    rows = _user_table(openmoji_small, root / "products.csv")
    return root, rows, _write_csv(root / "products.csv", rows)


def _train(table, target, model_dir, *extra):
    status = own_data_train.main([
        "--data", str(table), "--target", target, "--model-dir", str(model_dir),
        "--schema", str(_ignore(table.parent, target)),
        "--set", "trainer.epochs=1", *extra,
        # A CNN text encoder: the default GRU is unrolled in the graph, which makes the export
        # with its subset signatures take minutes.
        "--set", "model.text_encoder.type=cnn",
    ])
    assert status == 0
    return json.loads((model_dir / "report.json").read_text())


def _ignore(root, target):
    """A --schema leaving out the other target column and, for speed, the photo (images are
    covered by `trained_products`): a text + tabular model."""
    other = {"tags": "rating", "rating": "tags"}[target]
    path = root / f"schema_{target}.yaml"
    path.write_text(f"columns:\n  {other}: ignore\n  colour: ignore\n  photo: ignore\n")
    return path


def _exported_outputs(model_dir):
    """Exports `model_dir` (SavedModel + TFLite, every check) and returns the report."""
    report = export.export(model_dir, formats=("savedmodel", "tflite"))
    assert report["passed"], report
    assert {"serve_raw", "serve_examples"} <= set(report["savedmodel"]["signatures"])
    for name, check in report["signatures"].items():
        assert check["passed"], (name, check)
    return report


def _tflite_cli(model_dir, capsys):
    """`python -m serving.tflite_predict --json` on the exported TFLite model with every input
    marked missing (the outputs' names and form are what is checked)."""
    from serving import tflite_predict

    capsys.readouterr()
    model = model_dir / "export" / "tflite" / "model.tflite"
    assert tflite_predict.main(["--model", str(model), "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.large
def test_multilabel_table_trains_and_predicts_label_sets(product_table, capsys):
    root, rows, table = product_table
    model_dir = root / "tags_run"
    report = _train(table, "tags", model_dir)
    vocab = json.loads((model_dir / "labels.json").read_text())
    assert vocab["kind"] == "multilabel"
    assert set(vocab["labels"]) == {t for r in rows for t in r["tags"].split("|")}
    assert report["config"]["model"]["target"] == "multilabel"
    assert report["config"]["model"]["num_classes"] == len(vocab["labels"])
    assert report["config"]["trainer"]["monitor"] == "val_micro_f1"
    test = report["test"]
    assert set(test["per_label"]) == set(vocab["labels"])
    assert test["examples"] == len(_test_rows(model_dir))
    # The report's figures are those of predict's probabilities on the same rows.
    out = root / "tags_predictions.csv"
    new = [{k: v for k, v in r.items() if k != "tags"} for r in rows]
    predict.predict_table(model_dir, _write_csv(root / "tags_new.csv", new), out, top_k=50,
                          threshold=0.3)
    with open(out, newline="") as f:
        predictions = list(csv.DictReader(f))
    assert list(predictions[0])[:3] == ["row", "id", "labels"]
    probabilities = np.array([[float(p[f"p_{label}"]) for label in vocab["labels"]]
                              for p in predictions])
    for p, probs in zip(predictions, probabilities):
        chosen = [label for label, v in zip(vocab["labels"], probs) if v >= 0.3]
        assert p["labels"] == "|".join(chosen)
    by_line = {p["row"]: i for i, p in enumerate(predictions)}
    test_lines = _test_rows(model_dir)
    labels = np.array([[float(t in rows[int(line) - 2]["tags"].split("|"))
                        for t in vocab["labels"]] for line in test_lines])
    again = report_lib.multilabel_metrics(
        probabilities[[by_line[line] for line in test_lines]], labels, vocab["labels"])
    assert again["micro_f1"] == pytest.approx(test["micro_f1"], abs=1e-4)
    assert again["loss"] == pytest.approx(test["loss"], abs=1e-4)
    # Served: the sigmoid probabilities and 0/1 labels, not a softmax's argmax.
    exported = _exported_outputs(model_dir)
    assert exported["savedmodel"]["outputs"] == ["probabilities", "multi_hot"]
    assert exported["target"] == "multilabel"
    assert exported["tflite"]["passed"] and exported["tflite"]["heads"] == ["probabilities"]
    answer = _tflite_cli(model_dir, capsys)  # the label set, not an argmax
    assert sorted(answer) == ["multi_hot", "probabilities"]
    assert answer["multi_hot"] == [int(p >= 0.5) for p in answer["probabilities"]]
    assert len(answer["probabilities"]) == len(vocab["labels"])
    # Explained: one label's probability; the example's label is its set of true labels.
    summary, _ = explain.explain(model_dir, 0, out=root / "tags_explain", target="label",
                                 steps=16)
    assert summary["model_target"] == "multilabel" and isinstance(summary["label"], list)
    assert summary["target"] == (summary["label"] or [summary["predicted"]])[0]
    assert (root / "tags_explain" / "modality_contributions.png").is_file()


@pytest.mark.large
def test_regression_table_trains_and_predicts_values_in_real_units(product_table, capsys):
    root, rows, table = product_table
    model_dir = root / "rating_run"
    report = _train(table, "rating", model_dir)
    assert report["config"]["model"]["target"] == "regression"
    assert report["config"]["trainer"]["monitor"] == "val_loss"
    with open(model_dir / "data" / "manifest.csv", newline="") as f:
        manifest = list(csv.DictReader(f))
    train = [float(r["label"]) for r in manifest if r["split"] == "train"]
    stats = report["target_statistics"]
    assert stats["mean"] == pytest.approx(np.mean(train), rel=1e-5)
    assert stats["std"] == pytest.approx(np.std(train), rel=1e-4)
    out = root / "rating_predictions.csv"
    new = [{k: v for k, v in r.items() if k != "rating"} for r in rows]
    predict.predict_table(model_dir, _write_csv(root / "rating_new.csv", new), out)
    with open(out, newline="") as f:
        predictions = list(csv.DictReader(f))
    assert list(predictions[0]) == ["row", "id", "value", "missing"]
    values = {p["row"]: float(p["value"]) for p in predictions}
    test_lines = _test_rows(model_dir)
    again = report_lib.regression_metrics(
        [values[line] for line in test_lines], [float(rows[int(line) - 2]["rating"])
                                                for line in test_lines])
    test = report["test"]
    assert test["examples"] == len(test_lines)
    for key in ("mae", "rmse", "r2"):
        assert again[key] == pytest.approx(test[key], abs=1e-4), key
    # Served: the value in real units alone (no probabilities, no class id).
    exported = _exported_outputs(model_dir)
    assert exported["savedmodel"]["outputs"] == ["value"]
    assert exported["tflite"]["passed"] and exported["tflite"]["heads"] == ["value"]
    assert exported["tflite"]["max_abs_diff_per_std"] <= 1e-4
    answer = _tflite_cli(model_dir, capsys)  # one value, in real units
    assert list(answer) == ["value"] and np.isfinite(answer["value"])
    # Explained: the value (integrated gradients complete against it; ablation in real units).
    summary, _ = explain.explain(model_dir, 0, out=root / "rating_explain", steps=16)
    assert summary["model_target"] == "regression" and summary["target"] == 0
    assert summary["label"] == pytest.approx(float(rows[int(_test_rows(model_dir)[0]) - 2]["rating"]))
    assert summary["presence_ablation"]["all_present"] == pytest.approx(
        summary["probabilities"][0], rel=1e-4)
