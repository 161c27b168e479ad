"""A table of the user's own data (CSV, TSV or JSONL) -> the role of each column.

`infer_schema(path, target="label")` reads the table and decides, per column, what it holds:

| role | how it is recognised |
|---|---|
| `image`, `audio`, `video` | most non-empty cells end with a media extension, and the first files exist (paths relative to the table's folder, or absolute) |
| `split` | named like a split column (`split`, `fold`, `subset`, `set`) with split-like values (`train`, `val`, `test`, ...) |
| `id` | named like an identifier (`id`, `*_id`, `key`, `uuid`, ...), or every value distinct, without spaces and with a digit |
| `numeric` | every non-empty cell is a number, with more than `max_categories` distinct values or non-integers |
| `categorical` | few distinct values (at most `max_categories` and at most half the rows) |
| `text` | the other strings (free text: titles, captions, descriptions) |
| `target` | the column named by `target`; its kind is `binary`, `multiclass`, `multilabel` (cells holding several labels joined by `label_separator`, or JSON lists) or `regression` (a numeric column) |

Every decision carries the reason it was made, printed by `format_schema`. Any column's role
(and the target's kind) can be overridden by a small YAML file:

```yaml
columns:
  description: text        # a role
  sku: ignore              # leave a column out
target_kind: multiclass
```

Nothing here decodes a file or builds a model: the schema is data, saved in the model
directory (`Schema.to_dict` / `Schema.from_dict`) so predict and export read the same roles.
"""

import csv
import dataclasses
import io
import json
import math
import pathlib
import re
import typing

import yaml

from mmkeras.data.jsonl import read_jsonl
from mmkeras.errors import UserError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
VIDEO_EXTENSIONS = (".mp4", ".webm", ".avi", ".mov", ".mkv")
MEDIA_ROLES = {"image": IMAGE_EXTENSIONS, "audio": AUDIO_EXTENSIONS, "video": VIDEO_EXTENSIONS}
FEATURE_ROLES = ("image", "audio", "video", "text", "categorical", "numeric")
ROLES = FEATURE_ROLES + ("target", "id", "split", "ignore")
TARGET_KINDS = ("binary", "multiclass", "multilabel", "regression")
SPLIT_NAMES = ("split", "fold", "subset", "set", "partition")
SPLIT_VALUES = {
    "train": "train", "training": "train", "trn": "train",
    "val": "validation", "valid": "validation", "validation": "validation", "dev": "validation",
    "test": "test", "testing": "test", "tst": "test", "eval": "test",
}
ID_NAME = re.compile(r"(^|[_\-\s])(id|key|uuid|guid)$|^(id|key|uuid|guid|index)$", re.I)
TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t", ".jsonl": None, ".json": None}


class SchemaError(UserError, ValueError):
    """A table or schema problem, naming the file, line or column."""


@dataclasses.dataclass
class Column:
    name: str
    role: str
    reason: str
    missing: int = 0
    distinct: int = 0


@dataclasses.dataclass
class Schema:
    """The roles of a table's columns.

    Attributes:
        columns: one `Column` per column of the table, in the table's order.
        target: the target column's name (None for a table to predict on).
        target_kind: one of `TARGET_KINDS` (None without a target).
        label_separator: what joins several labels in a multi-label cell.
        source: the table the schema was inferred from.
    """

    columns: typing.List[Column]
    target: typing.Optional[str] = None
    target_kind: typing.Optional[str] = None
    label_separator: str = "|"
    source: str = ""

    def role(self, name):
        return self.column(name).role

    def column(self, name):
        for column in self.columns:
            if column.name == name:
                return column
        raise SchemaError(f"{self.source}: no column {name!r} (columns: {self.names()})")

    def names(self, role=None):
        return [c.name for c in self.columns if role is None or c.role == role]

    def features(self):
        """`{column: role}` of the columns a model takes, in table order."""
        return {c.name: c.role for c in self.columns if c.role in FEATURE_ROLES}

    @property
    def split_column(self):
        names = self.names("split")
        return names[0] if names else None

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d):
        d = dict(d)
        d["columns"] = [Column(**c) for c in d.get("columns", [])]
        return cls(**d)


def read_table(path):
    """Reads a CSV / TSV / JSONL table: `(column names, rows as dicts of strings or lists)`.

    Raises:
        SchemaError naming the file (and the line) when it cannot be read.
    """
    header, rows = read_table_lines(path)
    return header, [row for _, row in rows]


def read_table_lines(path):
    """Like `read_table`, with each row's line number in the file: `(header, [(line, row)])`."""
    path = pathlib.Path(path)
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise SchemaError(f"{path}: unknown table type {suffix!r}; use .csv, .tsv or .jsonl")
    if not path.is_file():
        raise SchemaError(f"{path}: no such file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise SchemaError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if TABLE_SUFFIXES[suffix] is None:
        return _read_jsonl(path, text)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=TABLE_SUFFIXES[suffix])
    try:
        header = next(reader)
    except StopIteration:
        raise SchemaError(f"{path}: empty table") from None
    except csv.Error as e:
        raise SchemaError(f"{path}, line 1: {e}") from None
    header = [h.strip() for h in header]
    _check_header(path, header)
    rows = []
    line = reader.line_num
    try:
        for cells in reader:
            start, line = line + 1, reader.line_num
            if not cells or all(not c.strip() for c in cells):
                continue
            if len(cells) != len(header):
                raise SchemaError(
                    f"{path}, line {start}: {len(cells)} cells but the header has "
                    f"{len(header)} columns"
                )
            rows.append((start, {h: c.strip() for h, c in zip(header, cells)}))
    except csv.Error as e:
        raise SchemaError(f"{path}, line {line + 1}: {e}") from None
    return header, rows


def _read_jsonl(path, text):
    header, rows = read_jsonl(path, text, SchemaError)
    _check_header(path, header)
    return header, [(line, {h: _jsonl_cell(row.get(h)) for h in header}) for line, row in rows]


def _jsonl_cell(value):
    if value is None:
        return ""
    if isinstance(value, list):
        return [str(v) for v in value]
    return str(value)


def _check_header(path, header):
    if not header or any(not h for h in header):
        raise SchemaError(f"{path}: every column needs a name in the header")
    seen = set()
    for h in header:
        if h in seen:
            raise SchemaError(f"{path}: column {h!r} appears twice in the header")
        seen.add(h)


def _is_number(value):
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def resolve_path(table_dir, value):
    p = pathlib.Path(value)
    return p if p.is_absolute() else pathlib.Path(table_dir) / p


def _media_role(values):
    for role, extensions in MEDIA_ROLES.items():
        hits = sum(str(v).lower().endswith(extensions) for v in values)
        if values and hits >= 0.9 * len(values):
            return role
    return None


def _infer_column(name, values, rows, table_dir, max_categories, check_files):
    """`(role, reason)` of a feature column from its non-empty values."""
    if not values:
        return "ignore", "every cell is empty"
    if any(isinstance(v, list) for v in values):
        return "categorical", "cells hold lists (used as a bag of categories)"
    distinct = set(values)
    media = _media_role(values)
    if media:
        checked = values[:check_files]
        missing = [v for v in checked if not resolve_path(table_dir, v).is_file()]
        if len(missing) == len(checked):
            raise SchemaError(
                f"column {name!r} looks like {media} paths ({values[0]!r}, ...) but none of the "
                f"first {len(checked)} files exists under {table_dir}; fix the paths or set its "
                "role in --schema"
            )
        return media, (f"{media} file extensions; {len(checked) - len(missing)}/{len(checked)} "
                       "first files found")
    known = sum(str(v).lower() in SPLIT_VALUES for v in values)
    if name.lower() in SPLIT_NAMES and known >= 0.9 * len(values) and len(distinct) <= 10:
        unknown = sorted(v for v in distinct if str(v).lower() not in SPLIT_VALUES)
        return "split", (f"split column: values {sorted(distinct)}" + (
            f"; {len(values) - known} cells are no split name ({unknown}): bad input"
            if unknown else ""))
    if ID_NAME.search(name):
        return "id", "named like an identifier"
    numeric = all(_is_number(v) for v in values)
    if numeric:
        integers = all(float(v).is_integer() for v in values)
        if integers and len(distinct) <= max_categories and len(distinct) <= 0.5 * rows:
            return "categorical", f"{len(distinct)} distinct integer codes"
        return "numeric", "every cell is a number"
    if len(distinct) == len(values) == rows and not any(" " in v for v in values) and all(
            any(ch.isdigit() for ch in v) for v in values):
        return "id", "every value distinct, code-like (no spaces, digits)"
    if len(distinct) <= max_categories and len(distinct) <= 0.5 * len(values):
        return "categorical", f"{len(distinct)} distinct values"
    return "text", f"free text ({len(distinct)} distinct values of {len(values)})"


def _target_kind(values, separator, max_categories):
    if any(isinstance(v, list) for v in values):
        return "multilabel", "cells hold lists of labels"
    if any(separator in v for v in values):
        return "multilabel", f"cells hold labels joined by {separator!r}"
    distinct = set(values)
    if len(distinct) < 2:
        raise SchemaError(f"the target has {len(distinct)} distinct value(s): nothing to learn")
    if all(_is_number(v) for v in values):
        integers = all(float(v).is_integer() for v in values)
        if not integers or len(distinct) > max_categories:
            return "regression", "numeric target with many values"
    if len(distinct) == 2:
        return "binary", "two distinct labels"
    return "multiclass", f"{len(distinct)} distinct labels"


def load_overrides(path):
    """The `--schema` YAML: `{"columns": {name: role}, "target_kind": ..., ...}`."""
    if path is None:
        return {}
    try:
        data = yaml.safe_load(pathlib.Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise SchemaError(f"{path}: cannot read the schema file ({e})") from None
    if not isinstance(data, dict):
        raise SchemaError(f"{path}: expected a mapping with 'columns', 'target', 'target_kind'")
    unknown = sorted(set(data) - {"columns", "target", "target_kind", "label_separator"})
    if unknown:
        raise SchemaError(f"{path}: unknown keys {unknown}")
    return data


def infer_schema(path, target=None, overrides=None, max_categories=50, check_files=5):
    """Infers the role of every column of the table at `path`.

    Args:
        path: a .csv, .tsv or .jsonl file.
        target: the column to predict (None for a table without labels).
        overrides: a dict as `load_overrides` returns (roles by column, target, target kind).
        max_categories: most distinct values of a categorical column.
        check_files: how many of the first paths of a media column must be checked.

    Returns:
        A `Schema`.

    Raises:
        SchemaError: a line naming the file and the column.
    """
    overrides = dict(overrides or {})
    path = pathlib.Path(path)
    header, rows = read_table(path)
    if not rows:
        raise SchemaError(f"{path}: the table has a header but no rows")
    target = overrides.get("target", target)
    separator = overrides.get("label_separator", "|")
    forced = dict(overrides.get("columns") or {})
    for name, role in forced.items():
        if name not in header:
            raise SchemaError(f"schema override names column {name!r}, not in {path} ({header})")
        if role not in ROLES:
            raise SchemaError(f"schema override for {name!r}: role {role!r} is not one of {ROLES}")
    if target is not None and target not in header:
        raise SchemaError(f"{path}: no target column {target!r} (columns: {header})")
    columns = []
    for name in header:
        values = [r[name] for r in rows if r[name] not in ("", [])]
        missing = len(rows) - len(values)
        distinct = len({json.dumps(v) if isinstance(v, list) else v for v in values})
        try:
            if name in forced:
                role, reason = forced[name], "set in the schema file"
            elif name == target:
                role, reason = "target", "named by --target"
            else:
                role, reason = _infer_column(name, values, len(rows), path.parent, max_categories,
                                             check_files)
        except SchemaError as e:
            raise SchemaError(f"{path}: {e}") from None
        columns.append(Column(name, role, reason, missing, distinct))
    kind = None
    if target is not None:
        values = [r[target] for r in rows if r[target] not in ("", [])]
        if overrides.get("target_kind"):
            kind = overrides["target_kind"]
            if kind not in TARGET_KINDS:
                raise SchemaError(f"target_kind {kind!r} is not one of {TARGET_KINDS}")
        else:
            try:
                kind, reason = _target_kind(values, separator, max_categories)
            except SchemaError as e:
                raise SchemaError(f"{path}: column {target!r}: {e}") from None
            target_column = next(c for c in columns if c.name == target)
            target_column.reason += f"; {kind}: {reason}"
    schema = Schema(columns, target, kind, separator, str(path))
    if len(schema.names("split")) > 1:
        raise SchemaError(f"{path}: several split columns {schema.names('split')}; keep one "
                          "(set the others to ignore in --schema)")
    if not schema.features():
        raise SchemaError(f"{path}: no feature column (image, audio, video, text, categorical or "
                          "numeric) was found")
    return schema


def format_schema(schema, feeds=None):
    """The schema as a table of text lines (column, role, missing, distinct, why); with
    `feeds` (`{column: modality}`, `TableLayout.feeds`) a `modality` column after the role
    says which model input each feature column feeds ("-" for the others)."""
    head = ("column", "role") + (("modality",) if feeds is not None else ()) + (
        "missing", "distinct", "why")
    rows = [head]
    for c in schema.columns:
        role = f"target ({schema.target_kind})" if c.role == "target" else c.role
        fed = ((feeds.get(c.name, "-"),) if feeds is not None else ())
        rows.append((c.name, role, *fed, str(c.missing), str(c.distinct), c.reason))
    n = len(head) - 1
    widths = [max(len(r[i]) for r in rows) for i in range(n)]
    lines = []
    for i, r in enumerate(rows):
        lines.append("  ".join(v.ljust(w) for v, w in zip(r[:n], widths)) + "  " + r[n])
        if i == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 3)
    return lines
