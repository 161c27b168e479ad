"""Schema inference, label vocabularies and stratified splits on the real data slices (the
OpenMoji and AV-MNIST manifests, and tables a user would write around their files)."""

import csv
import json

import numpy as np
import pytest

from mmkeras.data import schema as schema_lib
from mmkeras.data.schema import SchemaError
from mmkeras.data.splits import normalize_split
from mmkeras.data.splits import stratified_splits
from mmkeras.data.targets import LabelVocabulary
from mmkeras.data.targets import TargetError
from tests.datasets.openmoji_test import openmoji_small  # noqa: F401  (session fixture)


def _roles(schema):
    return {c.name: c.role for c in schema.columns}


def test_openmoji_manifest_roles(openmoji_small):  # noqa: F811
    schema = schema_lib.infer_schema(openmoji_small / "manifest.csv", target="group")
    assert _roles(schema) == {"id": "id", "split": "split", "label": "categorical",
                              "group": "target", "image": "image", "text": "text"}
    assert schema.target_kind == "multiclass" and schema.split_column == "split"
    assert schema.features() == {"label": "categorical", "image": "image", "text": "text"}
    lines = schema_lib.format_schema(schema)
    assert lines[0].split()[:5] == ["column", "role", "missing", "distinct", "why"]
    assert any(line.startswith("group") and "target (multiclass)" in line for line in lines)
    assert schema_lib.Schema.from_dict(json.loads(json.dumps(schema.to_dict()))) == schema


def test_avmnist_manifest_roles(avmnist_small):
    schema = schema_lib.infer_schema(avmnist_small / "manifest.csv", target="label")
    assert _roles(schema) == {"id": "id", "split": "split", "label": "target",
                              "image": "image", "audio": "audio"}
    assert schema.target_kind == "multiclass"


def _user_table(openmoji_small, path, rows=None):  # noqa: F811
    """A product-style table around the real OpenMoji images: two text columns, a price, a
    colour, list-valued tags, no split column."""
    with open(openmoji_small / "manifest.csv") as f:
        manifest = list(csv.DictReader(f))
    rng = np.random.default_rng(0)
    out = []
    for i, r in enumerate(manifest[:rows]):
        out.append({
            "sku": f"SKU{i:05d}",
            "photo": str(openmoji_small / r["image"]),  # absolute paths
            "title": r["text"],
            "description": f"{r['text']} in the {r['group']} group, item {i}",
            "price": f"{rng.uniform(1, 50):.2f}",
            "colour": ["red", "green", "blue"][i % 3],
            "tags": "|".join(sorted({r["group"], ["new", "sale"][i % 2]})),
            "rating": f"{rng.uniform(1, 5):.1f}",
        })
    return out


def _write_csv(path, rows, delimiter=","):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_user_table_roles_two_text_columns_and_target_kinds(openmoji_small, tmp_path):  # noqa: F811
    path = tmp_path / "products.csv"
    _write_csv(path, _user_table(openmoji_small, path))
    schema = schema_lib.infer_schema(path, target="tags")
    assert _roles(schema) == {"sku": "id", "photo": "image", "title": "text",
                              "description": "text", "price": "numeric",
                              "colour": "categorical", "tags": "target", "rating": "numeric"}
    assert schema.target_kind == "multilabel" and schema.split_column is None
    assert schema_lib.infer_schema(path, target="rating").target_kind == "regression"
    assert schema_lib.infer_schema(path, target="colour").target_kind == "multiclass"


def test_tsv_and_jsonl_read_the_same(openmoji_small, tmp_path):  # noqa: F811
    rows = _user_table(openmoji_small, tmp_path / "x.csv")
    csv_schema = schema_lib.infer_schema(_write_csv(tmp_path / "p.csv", rows), target="colour")
    tsv_schema = schema_lib.infer_schema(_write_csv(tmp_path / "p.tsv", rows, "\t"),
                                         target="colour")
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text("".join(
        json.dumps(dict(r, tags=r["tags"].split("|"), price=float(r["price"]))) + "\n"
        for r in rows))
    jsonl_schema = schema_lib.infer_schema(jsonl, target="tags")
    assert _roles(csv_schema) == _roles(tsv_schema)
    assert _roles(jsonl_schema)["tags"] == "target" and jsonl_schema.target_kind == "multilabel"
    assert _roles(jsonl_schema)["price"] == "numeric"


def test_overrides(openmoji_small, tmp_path):  # noqa: F811
    path = _write_csv(tmp_path / "p.csv", _user_table(openmoji_small, tmp_path / "p.csv"))
    override = tmp_path / "schema.yaml"
    override.write_text("columns:\n  title: categorical\n  sku: ignore\ntarget_kind: multiclass\n")
    schema = schema_lib.infer_schema(path, target="colour",
                                     overrides=schema_lib.load_overrides(override))
    assert schema.role("title") == "categorical" and schema.role("sku") == "ignore"
    assert schema.column("title").reason == "set in the schema file"
    override.write_text("columns:\n  titel: text\n")
    with pytest.raises(SchemaError, match="names column 'titel'"):
        schema_lib.infer_schema(path, target="colour", overrides=schema_lib.load_overrides(override))
    override.write_text("columns:\n  title: picture\n")
    with pytest.raises(SchemaError, match="role 'picture' is not one of"):
        schema_lib.infer_schema(path, target="colour", overrides=schema_lib.load_overrides(override))


def test_bad_tables_name_the_file_line_and_column(openmoji_small, tmp_path):  # noqa: F811
    path = tmp_path / "p.csv"
    path.write_text("a,b\n1,2\n3\n")
    with pytest.raises(SchemaError, match=r"p.csv, line 3: 1 cells but the header has 2"):
        schema_lib.infer_schema(path)
    path.write_text("photo,label\nnowhere/1.png,a\nnowhere/2.png,b\n")
    with pytest.raises(SchemaError, match="column 'photo' looks like image paths"):
        schema_lib.infer_schema(path, target="label")
    path.write_text("text,label\nhello there,a\n")
    with pytest.raises(SchemaError, match="no target column 'lable'"):
        schema_lib.infer_schema(path, target="lable")
    with pytest.raises(SchemaError, match="1 distinct value"):
        schema_lib.infer_schema(path, target="label")
    (tmp_path / "p.jsonl").write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(SchemaError, match=r"p.jsonl, line 2: expected a JSON object"):
        schema_lib.infer_schema(tmp_path / "p.jsonl")
    with pytest.raises(SchemaError, match="unknown table type '.xlsx'"):
        schema_lib.infer_schema(tmp_path / "p.xlsx")


def test_label_vocabulary_per_kind(tmp_path):
    vocab = LabelVocabulary.fit(["dog", "cat", "dog", ""], "multiclass")
    assert vocab.labels == ["cat", "dog"] and vocab.encode("dog") == 1 and vocab.decode(0) == "cat"
    with pytest.raises(TargetError, match=r"row 7: unknown label 'cow'"):
        vocab.encode("cow", row=7)
    tags = LabelVocabulary.fit(["new|sale", ["sale", "red"], "new"], "multilabel")
    assert tags.labels == ["new", "red", "sale"] and tags.encode("sale|new") == [1.0, 0.0, 1.0]
    reg = LabelVocabulary.fit(["1.5", "2"], "regression")
    assert reg.num_outputs == 1 and reg.encode("2.5") == 2.5
    with pytest.raises(TargetError, match="not a number"):
        reg.encode("n/a", row=3)
    vocab.save(tmp_path)
    assert LabelVocabulary.load(tmp_path).labels == vocab.labels


def test_stratified_splits_are_seeded_and_balanced():
    labels = ["a"] * 50 + ["b"] * 30 + ["c"] * 1
    splits = stratified_splits(labels, (0.8, 0.1, 0.1), seed=3)
    assert splits == stratified_splits(labels, (0.8, 0.1, 0.1), seed=3)
    assert splits != stratified_splits(labels, (0.8, 0.1, 0.1), seed=4)
    for label, n in (("a", 50), ("b", 30)):
        got = [s for s, y in zip(splits, labels) if y == label]
        assert got.count("train") == round(0.8 * n) and got.count("validation") == round(0.1 * n)
    assert splits[-1] == "train"  # a class of one goes to train
    with pytest.raises(ValueError, match="summing to 1"):
        stratified_splits(labels, (0.8, 0.3, 0.1))
    assert [normalize_split(v) for v in ("Train", "val", "DEV", "testing", "trian")] == [
        "train", "validation", "validation", "test", None]
