"""The user's own table -> manifest conversion, on tables built around the real OpenMoji slice:
string labels, the recorded stratified split, unknown split values, tabular imputation with
missing indicators, two text columns, bad cells by policy."""

import csv
import json

import numpy as np
import pytest

from mmkeras.data import DataError
from mmkeras.data import own_data
from mmkeras.data.schema import infer_schema
from mmkeras.data.targets import LabelVocabulary
from tests.data.schema_test import _user_table
from tests.data.schema_test import _write_csv
from tests.datasets.openmoji_test import openmoji_small  # noqa: F401  (session fixture)


def _manifest(directory):
    with open(directory / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def products(openmoji_small, tmp_path):  # noqa: F811
    """Product rows (string target `colour`, no split column), every 5th price empty."""
    rows = _user_table(openmoji_small, tmp_path / "p.csv")
    for i, row in enumerate(rows):
        row.pop("tags")
        if i % 5 == 0:
            row["price"] = ""
    return rows


def test_string_labels_recorded_split_and_imputation(products, tmp_path):
    path = _write_csv(tmp_path / "p.csv", products)
    schema = infer_schema(path, target="colour")
    out = own_data.convert_table(path, schema, tmp_path / "data", seed=3)
    assert out.vocab.labels == ["blue", "green", "red"]
    manifest = _manifest(tmp_path / "data")
    assert len(manifest) == len(products)
    for source, row in zip(products, manifest):
        assert out.vocab.decode(int(row["label"])) == source["colour"]
        assert row["id"].startswith("p.csv:") and row["source_id"] == source["sku"]
    # A seeded stratified split, recorded, the same for the same seed, every label in each.
    info = json.loads((tmp_path / "data" / "dataset.json").read_text())
    assert info["recipe"]["split"] == {"column": None, "stratified": True,
                                       "fractions": [0.8, 0.1, 0.1], "seed": 3}
    assert sum(info["splits"].values()) == len(products) and info["rows_written"] == len(products)
    assert info["source_sha256"] == own_data.sha256_file(path)
    for split in ("train", "validation", "test"):
        assert {r["label"] for r in manifest if r["split"] == split} == {"0", "1", "2"}
    again = own_data.convert_table(path, schema, tmp_path / "again", seed=3)
    assert [r["split"] for r in _manifest(again.dataset_dir)] == [r["split"] for r in manifest]
    # Empty prices get the training mean and a missing indicator; others are kept.
    train_prices = [float(p["price"]) for p, r in zip(products, manifest)
                    if r["split"] == "train" and p["price"]]
    assert out.layout.means["price"] == pytest.approx(np.mean(train_prices))
    assert out.layout.indicators == ["price"] and info["imputed"] == {"price": 22}
    for source, row in zip(products, manifest):
        if source["price"]:
            assert float(row["price"]) == float(source["price"]) and row["price_missing"] == "0.0"
        else:
            assert float(row["price"]) == pytest.approx(np.mean(train_prices))
            assert row["price_missing"] == "1.0"
    assert "rating_missing" not in manifest[0]
    # Two text columns: one modality each, named after its column; one image column keeps
    # the name `image`.
    assert out.layout.columns == {"description": ["description"], "image": ["photo"],
                                  "title": ["title"]}
    assert "media" not in out.layout.to_dict() and "text" not in out.layout.to_dict()
    assert manifest[1]["title"] == products[1]["title"] and "text" not in manifest[1]
    assert manifest[1]["description"] == products[1]["description"]
    assert out.layout.modalities == ["description", "image", "tabular", "title"]
    assert out.layout.modality_types() == {"description": "text", "title": "text"}
    assert out.layout.feeds() == {"photo": "image", "title": "title",
                                  "description": "description", "price": "tabular",
                                  "rating": "tabular"}
    assert out.layout.tabular_numeric() == ["price", "rating", "price_missing"]
    assert LabelVocabulary.load(out.vocab.save(tmp_path) .parent).labels == out.vocab.labels


def test_unknown_split_values_follow_the_policy(products, tmp_path):
    for i, row in enumerate(products):
        row["split"] = ["train", "train", "val", "test"][i % 4]
    products[2]["split"] = "trian"
    path = _write_csv(tmp_path / "p.csv", products)
    schema = infer_schema(path, target="colour")
    assert schema.split_column == "split" and "(['trian']): bad input" in schema.column(
        "split").reason
    with pytest.raises(DataError, match=r"p.csv, line 4, column 'split': split 'trian' is none"):
        own_data.convert_table(path, schema, tmp_path / "data")
    for policy in ("skip", "mask"):  # a split cannot be masked: skipped and counted
        out = own_data.convert_table(path, schema, tmp_path / policy, bad_input=policy)
        assert out.info["problems"] == {"unknown_split": 1}
        assert out.info["rows_written"] == len(products) - 1
        assert "line 4, column 'split'" in out.info["first_problems"][0]
        assert out.info["recipe"]["split"] == {"column": "split"}
        assert {r["split"] for r in _manifest(out.dataset_dir)} == {"train", "validation", "test"}


def test_bad_numbers_and_empty_targets(products, tmp_path):
    products[3]["price"] = "cheap"
    products[6]["colour"] = ""
    path = _write_csv(tmp_path / "p.csv", products)
    schema = infer_schema(path, target="colour", overrides={"columns": {"price": "numeric"}})
    with pytest.raises(DataError, match=r"line 5, column 'price': 'cheap' is not a finite"):
        own_data.convert_table(path, schema, tmp_path / "data")
    with pytest.raises(DataError, match=r"line 8, column 'colour': the target is empty"):
        own_data.convert_table(path, schema, tmp_path / "data",
                               bad_input={"tabular": "mask", "default": "error"})
    out = own_data.convert_table(path, schema, tmp_path / "mask", bad_input="mask")
    assert out.info["problems"] == {"bad_number": 1, "empty_target": 1}
    assert out.info["rows_written"] == len(products) - 1  # the target: skipped
    row = next(r for r in _manifest(out.dataset_dir) if r["id"] == "p.csv:5")
    assert row["price_missing"] == "1.0"  # masked: imputed like an empty cell
    out = own_data.convert_table(path, schema, tmp_path / "skip", bad_input="skip")
    assert out.info["rows_written"] == len(products) - 2


def test_unlabelled_table_with_the_training_layout(products, tmp_path):
    path = _write_csv(tmp_path / "p.csv", products)
    schema = infer_schema(path, target="colour")
    trained = own_data.convert_table(path, schema, tmp_path / "data")
    new = [{k: v for k, v in r.items() if k != "colour"} for r in products[:6]]
    new[0]["photo"], new[1]["description"], new[2]["price"] = "", "", ""
    new_path = _write_csv(tmp_path / "new.csv", new)
    out = own_data.convert_table(new_path, schema, tmp_path / "new", vocab=trained.vocab,
                                 layout=trained.layout, labelled=False)
    rows = _manifest(out.dataset_dir)
    assert [r["split"] for r in rows] == ["test"] * 6
    assert rows[0]["image"] == "" and rows[1]["description"] == ""
    assert rows[1]["title"] == products[1]["title"]  # only the empty cell's modality is empty
    assert float(rows[2]["price"]) == pytest.approx(trained.layout.means["price"])
    del new[0]["rating"]
    for r in new:
        r.pop("rating", None)
    _write_csv(new_path, new)
    with pytest.raises(DataError, match=r"new.csv: missing columns \['rating'\]"):
        own_data.convert_table(new_path, schema, tmp_path / "new2", vocab=trained.vocab,
                               layout=trained.layout, labelled=False)


def test_multilabel_and_regression_targets(openmoji_small, tmp_path):  # noqa: F811
    """`a|b` cells become multi-hot manifest labels (stratified by the rarest label: every
    split gets rows), numeric cells become numbers; `read_manifest` reads them per target."""
    from mmkeras.data.manifest import read_manifest

    rows = _user_table(openmoji_small, tmp_path / "p.csv")
    path = _write_csv(tmp_path / "p.csv", rows)
    tags = own_data.convert_table(path, infer_schema(path, target="tags"), tmp_path / "tags")
    assert tags.vocab.kind == "multilabel"
    assert all(tags.info["splits"][s] > 0 for s in ("train", "validation", "test"))
    manifest = _manifest(tmp_path / "tags")
    for source, row in zip(rows, manifest):
        hot = json.loads(row["label"])
        assert [label for label, v in zip(tags.vocab.labels, hot) if v] == sorted(
            source["tags"].split("|"))
    columns, _ = read_manifest(tmp_path / "tags" / "manifest.csv", "train", ["title"],
                               len(tags.vocab.labels), target="multilabel",
                               modality_types={"title": "text"})
    assert columns["label"].shape == (tags.info["splits"]["train"], len(tags.vocab.labels))
    assert columns["label"].dtype == np.float32 and set(np.unique(columns["label"])) == {0, 1}

    rating = own_data.convert_table(path, infer_schema(path, target="rating"),
                                    tmp_path / "rating")
    assert rating.vocab.kind == "regression" and rating.vocab.num_outputs == 1
    manifest = _manifest(tmp_path / "rating")
    assert [float(r["label"]) for r in manifest] == [float(r["rating"]) for r in rows]
    columns, _ = read_manifest(tmp_path / "rating" / "manifest.csv", "test", ["description"],
                               1, target="regression", modality_types={"description": "text"})
    test = [float(r["label"]) for r in manifest if r["split"] == "test"]
    np.testing.assert_allclose(columns["label"][:, 0], test, rtol=1e-6)


def test_bad_targets_name_the_line(openmoji_small, tmp_path):  # noqa: F811
    rows = _user_table(openmoji_small, tmp_path / "p.csv")
    rows[4]["rating"] = "n/a"
    path = _write_csv(tmp_path / "p.csv", rows)
    schema = infer_schema(path, target="rating", overrides={"target_kind": "regression"})
    with pytest.raises(DataError, match=r"p.csv, line 6, column 'rating': .*'n/a' is not a num"):
        own_data.convert_table(path, schema, tmp_path / "data")
    out = own_data.convert_table(path, schema, tmp_path / "data", bad_input="skip")
    assert out.info["problems"] == {"bad_target": 1} and out.info["rows_written"] == 109


def test_manifest_labels_per_target():
    from mmkeras.data.manifest import parse_label

    assert parse_label("2", "multiclass", 3) == (2, None)
    assert parse_label("3", "binary", 2)[1] == "label '3' is not an integer in [0, 2)"
    assert parse_label("[0, 1, 1]", "multilabel", 3) == ([0.0, 1.0, 1.0], None)
    assert "not a list of 3 0/1 values" in parse_label("[0, 2, 1]", "multilabel", 3)[1]
    assert "not a list of 3 0/1 values" in parse_label("[0, 1]", "multilabel", 3)[1]
    assert parse_label("-1.5", "regression", 1) == (-1.5, None)
    assert parse_label("nan", "regression", 1)[1] == "label 'nan' is not finite"
    assert parse_label("x", "regression", 1)[1] == "label 'x' is not a number"


def test_several_columns_of_a_role_get_one_modality_each():
    """Column names become valid, distinct input names; a name that is a type, reserved or
    taken gets `col_`; a table.json from before (one joined `text`) still loads."""
    taken = {"price", "price_missing"}
    assert own_data.feature_name("Front Image", taken) == "front_image"
    assert own_data.feature_name("price", taken) == "col_price"
    assert own_data.feature_name("text", taken) == "col_text"
    assert own_data.feature_name("label", taken) == "col_label"
    assert own_data.feature_name("2nd photo", taken) == "col_2nd_photo"
    assert own_data.feature_name("photo_bytes", taken) == "col_photo_bytes"
    assert own_data.feature_name("x", {"x", "col_x"}) == "col_x_2"
    old = own_data.TableLayout.from_dict({"media": {"image": "photo"},
                                         "text": ["title", "description"]})
    assert old.modalities == ["image", "text"] and old.columns["text"] == ["title", "description"]
    assert old.modality_types() == {}
    # Written between the two: `columns` beside the old fields, which are dropped.
    both = own_data.TableLayout.from_dict({**old.to_dict(), "media": {"image": "photo"},
                                          "text": ["title", "description"]})
    assert both == old


def test_schema_table_shows_the_modality_each_column_feeds(products, tmp_path):
    from mmkeras.data.schema import format_schema

    path = _write_csv(tmp_path / "p.csv", products)
    schema = infer_schema(path, target="colour")
    lines = format_schema(schema, feeds=own_data.layout_for(schema).feeds())
    assert lines[0].split()[:6] == ["column", "role", "modality", "missing", "distinct", "why"]
    fed = {line.split()[0]: line.split()[2] for line in lines[2:]
           if not line.startswith("colour")}
    assert fed == {"sku": "-", "photo": "image", "title": "title",
                   "description": "description", "price": "tabular", "rating": "tabular"}
    assert [line.split()[:4] for line in lines if line.startswith("colour")] == [
        ["colour", "target", "(multiclass)", "-"]]
