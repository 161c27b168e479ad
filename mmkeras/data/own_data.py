"""The user's own table -> the project's dataset format (a manifest), and back for prediction.

`convert_table` reads a CSV / TSV / JSONL table with its inferred `Schema` and writes, under
`out_dir`:

    manifest.csv   id (`<table>:<line>`), split, label (an id of `labels.json`; for a
                   multi-label target a JSON multi-hot list over `labels.json`, for a
                   regression target the number), one column
                   per modality: image / audio / video ones (absolute paths, "" if the cell
                   is empty), text ones, and the tabular columns (imputed numbers, categories,
                   `<column>_missing` indicators)
    dataset.json   the source table, its SHA-256, row counts, the split recipe, what every
                   modality is made of, the imputation values, the problems found

How the columns of a role become the model's modalities (`TableLayout`):

| role | modality | |
|---|---|---|
| `image`, `audio`, `video`, `text` | one column: the role's name (`image`, `text`, ...); several columns: one modality per column, named after it | each modality has its own input, presence flag and encoder; the column name is made a valid input name (lower case, `[a-z0-9_]`; `col_` in front of a name that is reserved or taken), and its type is recorded (`types`, the config's `data.modality_types`) |
| `numeric`, `categorical` | `tabular` (one modality for all of them) | numbers imputed with the training mean, categories with the most frequent training value, plus a 0/1 `<column>_missing` number per column that had empty cells in training |

An empty cell marks only its own modality missing: a row with a title and no description has
`description_present = 0` and `title_present = 1`.

Rows without a split column get a seeded stratified train / validation / test split (recorded
in `dataset.json`; a multi-label row is stratified by its rarest label, a regression table is
one stratum). Problems follow the bad-input policy (`error`: raise one line naming the
table, the line and the column; `skip`: drop the row and count it; `mask`: a bad number is
treated as missing): an unknown split value (`trian`) or an empty target cannot be masked, so
under `mask` the row is skipped. Media files are checked later, by `read_manifest`, with the
same policy (its messages name the row as `<table>:<line>`).

Nothing here imports TensorFlow.
"""

import collections
import csv
import dataclasses
import hashlib
import json
import pathlib
import re

from mmkeras import features

from mmkeras.data.manifest import DataError
from mmkeras.data.schema import read_table_lines
from mmkeras.data.schema import resolve_path
from mmkeras.data.splits import normalize_split
from mmkeras.data.splits import stratified_splits
from mmkeras.data.targets import LabelVocabulary
from mmkeras.data.targets import TargetError
from mmkeras.model_dir import OWN_TABLE_FILE

LAYOUT_FILE = OWN_TABLE_FILE  # in the model directory
MEDIA_MODALITIES = ("image", "audio", "video")
FEATURE_ROLES = MEDIA_MODALITIES + ("text",)  # one modality per column (or the role's name)
RESERVED_COLUMNS = ("id", "split", "label", "image", "audio", "video", "text", "tabular",
                    "timeseries", "tabular_categories")
MISSING_SUFFIX = "_missing"
MAX_PROBLEMS = 50


@dataclasses.dataclass
class TableLayout:
    """How the columns of a table become the model's modalities (saved as `table.json`).

    Attributes:
        numeric: the numeric columns (manifest column names in `manifest_names`).
        categorical: the categorical columns.
        indicators: numeric and categorical columns that get a `<column>_missing` number.
        means: the training mean of each numeric column (its imputation value).
        most_frequent: the most frequent training value of each categorical column.
        manifest_names: `{table column: manifest column}` of the tabular columns (renamed
            when the name is one the manifest reserves).
        columns: `{modality: [columns]}` of the media and text modalities (one column each;
            a `table.json` written before several columns per role has its text columns
            joined into `text`).
        types: `{modality: type}` of those modalities (`image`, `audio`, `video`, `text`).

    A `table.json` written before `columns` / `types` (with `media: {modality: column}` and
    `text: [columns]`) loads as the same layout.
    """

    numeric: list = dataclasses.field(default_factory=list)
    categorical: list = dataclasses.field(default_factory=list)
    indicators: list = dataclasses.field(default_factory=list)
    means: dict = dataclasses.field(default_factory=dict)
    most_frequent: dict = dataclasses.field(default_factory=dict)
    manifest_names: dict = dataclasses.field(default_factory=dict)
    columns: dict = dataclasses.field(default_factory=dict)
    types: dict = dataclasses.field(default_factory=dict)

    @property
    def modalities(self):
        out = list(self.columns)
        if self.numeric or self.categorical:
            out.append(features.TABULAR)
        return sorted(out)

    def modality_types(self):
        """`data.modality_types`: the types of the modalities not named after their type."""
        return {m: t for m, t in sorted(self.types.items()) if m != t}

    def of_type(self, kind):
        """The modalities of type `kind`, sorted."""
        return sorted(m for m, t in self.types.items() if t == kind)

    def feeds(self):
        """`{table column: the modality it feeds}`."""
        out = {c: m for m, columns in self.columns.items() for c in columns}
        out.update({c: features.TABULAR for c in self.numeric + self.categorical})
        return out

    def tabular_numeric(self):
        """The manifest's numeric columns: the numbers, then the missing indicators."""
        return ([self.manifest_names[c] for c in self.numeric]
                + [self.manifest_names[c] + MISSING_SUFFIX for c in self.indicators])

    def tabular_categorical(self):
        return [self.manifest_names[c] for c in self.categorical]

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d):
        d = dict(d)
        media, text = d.pop("media", {}), d.pop("text", [])  # the fields `columns` replaced
        if "columns" not in d:  # written before several columns per role: names = types
            d["columns"] = {m: [c] for m, c in media.items()}
            if text:
                d["columns"]["text"] = list(text)
            d["types"] = {m: m for m in d["columns"]}
        return cls(**d)

    def save(self, directory):
        path = pathlib.Path(directory) / LAYOUT_FILE
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, directory):
        return cls.from_dict(json.loads((pathlib.Path(directory) / LAYOUT_FILE).read_text()))


def feature_name(column, taken):
    """A modality name for table column `column`: lower case, `[a-z0-9_]`, starting with a
    letter; `col_` in front when it is a modality type, a reserved name, ends like a derived
    input (`_present`, `_bytes`, `_encoder`, `_missing`) or is `taken`; then `_2`, `_3`, ...
    until it is free."""
    name = re.sub(r"[^a-z0-9_]+", "_", str(column).lower()).strip("_")
    reserved = set(RESERVED_COLUMNS) | set(features.TYPES) | set(features.RESERVED_NAMES)
    if (not name or not name[0].isalpha() or name in reserved or name in taken
            or name.endswith((features.PRESENT_SUFFIX, "_bytes", "_encoder", MISSING_SUFFIX))):
        name = f"col_{name}".rstrip("_")
    candidate, i = name, 2
    while candidate in taken or candidate in reserved:
        candidate, i = f"{name}_{i}", i + 1
    return candidate


def layout_for(schema):
    """The `TableLayout` of a schema (before the imputation values are fitted).

    A role with one column keeps the role's name as its modality (`image`, `text`), so a
    table with one column per role gives the modalities it always did; a role with several
    columns gives one modality per column (`feature_name`)."""
    layout = TableLayout()
    by_role = collections.defaultdict(list)
    for name, role in schema.features().items():
        if role in FEATURE_ROLES:
            by_role[role].append(name)
        elif role == "numeric":
            layout.numeric.append(name)
        elif role == "categorical":
            layout.categorical.append(name)
    for name in layout.numeric + layout.categorical:
        layout.manifest_names[name] = f"col_{name}" if name in RESERVED_COLUMNS else name
    taken = set(layout.manifest_names.values())
    taken |= {m + MISSING_SUFFIX for m in layout.manifest_names.values()}
    for role in FEATURE_ROLES:
        columns = by_role.get(role, [])
        for column in columns:
            modality = role if len(columns) == 1 else feature_name(column, taken)
            taken.add(modality)
            layout.columns[modality] = [column]
            layout.types[modality] = role
    layout.columns = dict(sorted(layout.columns.items()))
    return layout


@dataclasses.dataclass
class Problems:
    """Problems found while converting, by kind, with the first lines kept."""

    path: str
    counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    lines: list = dataclasses.field(default_factory=list)

    def add(self, kind, line, column, message, policy):
        """Records a problem; raises `DataError` under policy `error`."""
        text = f"{self.path}, line {line}, column {column!r}: {message}"
        if policy == "error":
            raise DataError(text)
        self.counts[kind] += 1
        if len(self.lines) < MAX_PROBLEMS:
            self.lines.append(text)


def _policy(bad_input, key):
    if isinstance(bad_input, dict):
        return bad_input.get(key, bad_input.get("default", "error"))
    return bad_input


def sha256_file(path, chunk_size=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _number(cell):
    try:
        value = float(cell)
    except (TypeError, ValueError):
        return None
    return value if value == value and abs(value) != float("inf") else None


def _cell_text(cell):
    return "|".join(cell) if isinstance(cell, list) else str(cell)


def _read_rows(path, header, rows, schema, layout, vocab, bad_input, problems, labelled):
    """One dict per usable row of `rows` (line, label, split, features before imputation);
    bad rows are counted in `problems`."""
    needed = ([c for columns in layout.columns.values() for c in columns]
              + layout.numeric + layout.categorical)
    absent = [c for c in needed if c not in header]
    if absent:
        raise DataError(f"{path}: missing columns {absent} (the model was trained on "
                        f"{needed}); has {header}")
    split_column = schema.split_column if labelled else None
    id_columns = [c for c in schema.names("id") if c in header]
    out = []
    for line, row in rows:
        record = {"line": line, "id": f"{path.name}:{line}",
                  "source_id": _cell_text(row[id_columns[0]]) if id_columns else ""}
        if labelled:
            cell = row.get(schema.target, "")
            if cell in ("", []):
                problems.add("empty_target", line, schema.target, "the target is empty",
                             _policy(bad_input, "label"))
                continue
            try:
                record["label"] = vocab.encode(cell, row=line)
            except TargetError as e:
                problems.add("bad_target", line, schema.target, str(e),
                             _policy(bad_input, "label"))
                continue
        if split_column is not None:
            split = normalize_split(row.get(split_column, ""))
            if split is None:
                problems.add(
                    "unknown_split", line, split_column,
                    f"split {row.get(split_column)!r} is none of train / validation / test "
                    "(or val, dev, test, ...)", _policy(bad_input, "split"))
                continue
            record["split"] = split
        for modality, columns in layout.columns.items():
            if layout.types[modality] != "text":
                cell = _cell_text(row[columns[0]]).strip()
                record[modality] = str(resolve_path(path.parent, cell).resolve()) if cell else ""
                continue
            texts = [(c, _cell_text(row[c]).strip()) for c in columns]
            texts = [(c, t) for c, t in texts if t]
            if len(columns) == 1:
                record[modality] = texts[0][1] if texts else ""
            else:  # a model trained before one modality per text column: joined
                record[modality] = " ".join(f"{c}: {t}." for c, t in texts)
        keep = True
        for column in layout.numeric:
            cell = _cell_text(row[column]).strip()
            value = _number(cell) if cell else None
            if cell and value is None:
                policy = _policy(bad_input, "tabular")
                problems.add("bad_number", line, column, f"{cell!r} is not a finite number",
                             policy)
                if policy == "skip":
                    keep = False
                    break
            record[("num", column)] = value
        if not keep:
            continue
        for column in layout.categorical:
            cell = _cell_text(row[column]).strip()
            record[("cat", column)] = cell or None
        out.append(record)
    return out


def _assign_splits(records, labelled, vocab, fractions, seed):
    """Stratified by the label; a multi-label row by its rarest label (whole label sets
    make strata too small for every split to get rows); regression: one stratum."""
    counts = None
    if labelled and vocab.kind == "multilabel":
        counts = [sum(r["label"][j] for r in records) for j in range(len(vocab.labels))]
    strata = []
    for r in records:
        label = r.get("label")
        if not labelled or vocab.kind == "regression":
            strata.append(0)
        elif counts is not None:
            present = [j for j, v in enumerate(label) if v]
            strata.append(min(present, key=lambda j: (counts[j], j)) if present else -1)
        else:
            strata.append(label)
    for r, split in zip(records, stratified_splits(strata, fractions, seed)):
        r["split"] = split


def fit_imputation(layout, records):
    """Fits the imputation values on the training `records` (in place on `layout`)."""
    train = [r for r in records if r.get("split") == "train"] or records
    for column in layout.numeric:
        values = [r[("num", column)] for r in train if r[("num", column)] is not None]
        layout.means[column] = sum(values) / len(values) if values else 0.0
        if len(values) < len(train):
            layout.indicators.append(column)
    for column in layout.categorical:
        values = [r[("cat", column)] for r in train if r[("cat", column)] is not None]
        counts = collections.Counter(values)
        layout.most_frequent[column] = (
            min(counts, key=lambda v: (-counts[v], v)) if counts else "")
        if len(values) < len(train):
            layout.indicators.append(column)
    layout.indicators = [c for c in layout.numeric + layout.categorical if c in layout.indicators]


def _manifest_rows(layout, records, imputed):
    for r in records:
        row = {"id": r["id"], "source_id": r["source_id"], "split": r["split"],
               "label": json.dumps(r["label"]) if isinstance(r.get("label"), list)
               else r.get("label", 0)}
        for modality in layout.columns:
            row[modality] = r[modality]
        for column in layout.numeric:
            value = r[("num", column)]
            if value is None:
                imputed[column] += 1
            row[layout.manifest_names[column]] = repr(
                layout.means[column] if value is None else value)
        for column in layout.categorical:
            value = r[("cat", column)]
            if value is None:
                imputed[column] += 1
            row[layout.manifest_names[column]] = (
                layout.most_frequent[column] if value is None else value)
        for column in layout.indicators:
            kind = "num" if column in layout.numeric else "cat"
            row[layout.manifest_names[column] + MISSING_SUFFIX] = (
                "1.0" if r[(kind, column)] is None else "0.0")
        yield row


def _write_manifest(path, layout, records, imputed):
    fields = ["id", "source_id", "split", "label", *sorted(layout.columns)]
    fields += [layout.manifest_names[c] for c in layout.numeric + layout.categorical]
    fields += [layout.manifest_names[c] + MISSING_SUFFIX for c in layout.indicators]
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in _manifest_rows(layout, records, imputed):
            writer.writerow(row)
    tmp.replace(path)


@dataclasses.dataclass
class Conversion:
    """What `convert_table` wrote."""

    dataset_dir: pathlib.Path
    layout: TableLayout
    vocab: LabelVocabulary
    info: dict


def convert_table(path, schema, out_dir, vocab=None, layout=None, split_fractions=(0.8, 0.1, 0.1),
                  seed=0, bad_input="error", labelled=True):
    """Writes `out_dir/manifest.csv` and `out_dir/dataset.json` from the table at `path`.

    Args:
        path: the CSV / TSV / JSONL table.
        schema: its `Schema` (`infer_schema`, or the saved one for prediction).
        out_dir: the dataset directory to write.
        vocab: the label vocabulary (default: fitted on the table's target).
        layout: a fitted `TableLayout` (prediction: the training one); default: from the
            schema, with the imputation fitted on this table's training rows.
        split_fractions: train, validation, test fractions when the table has no split column.
        seed: the split seed.
        bad_input: the policy (`error` / `skip` / `mask`, or a dict with `label`, `split`,
            `tabular`, `default`).
        labelled: False for a table to predict on: no target, every row in `test`, label 0.

    Returns:
        A `Conversion`.

    Raises:
        DataError / SchemaError: one line naming the table, the line and the column.
    """
    path = pathlib.Path(path)
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    header, rows = read_table_lines(path)
    if vocab is None and labelled:
        vocab = LabelVocabulary.fit([r[schema.target] for _, r in rows], schema.target_kind,
                                    schema.label_separator)
    fitted = layout is not None
    layout = layout if fitted else layout_for(schema)
    problems = Problems(str(path))
    records = _read_rows(path, header, rows, schema, layout, vocab, bad_input, problems,
                         labelled)
    if not records:
        raise DataError(f"{path}: no usable rows ({dict(problems.counts)}; first problems: "
                        f"{problems.lines[:3]})")
    split_recipe = {"column": schema.split_column if labelled else None}
    if not labelled:
        for r in records:
            r["split"] = "test"
    elif schema.split_column is None:
        _assign_splits(records, labelled, vocab, split_fractions, seed)
        split_recipe.update(stratified=True, fractions=list(split_fractions), seed=seed)
    if not fitted:
        fit_imputation(layout, records)
    imputed = collections.Counter()
    _write_manifest(out_dir / "manifest.csv", layout, records, imputed)
    split_counts = collections.Counter(r["split"] for r in records)
    checksum = sha256_file(path)
    info = {
        "name": f"own:{path.name}",
        "variant": "own",
        "recipe_version": 1,
        "source": str(path.resolve()),
        "source_sha256": checksum,
        "checksum": checksum,
        "rows": len(rows),
        "rows_written": len(records),
        "splits": {s: split_counts.get(s, 0) for s in ("train", "validation", "test")},
        "problems": dict(problems.counts),
        "first_problems": problems.lines,
        "imputed": dict(imputed),
        "recipe": {"split": split_recipe, "target": schema.target,
                   "target_kind": schema.target_kind, "bad_input": bad_input},
        "layout": layout.to_dict(),
        "modalities": layout.modalities,
        "labels": vocab.labels if vocab is not None else [],
    }
    (out_dir / "dataset.json").write_text(json.dumps(info, indent=1) + "\n")
    return Conversion(out_dir, layout, vocab, info)
