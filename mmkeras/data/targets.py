"""Targets of the user's own data: label vocabularies and the encoded target per kind.

| kind | cell | encoded |
|---|---|---|
| `binary`, `multiclass` | a label (any string) | the label's index in the sorted vocabulary |
| `multilabel` | labels joined by the separator (`a|b`), or a JSON list | a multi-hot float vector |
| `regression` | a number | the float itself |

The vocabulary (sorted, so the same data always gives the same ids) is saved in the model
directory as `labels.json`, and predictions are mapped back to label names with it.
"""

import json
import math
import pathlib

from mmkeras.errors import UserError

LABELS_FILE = "labels.json"


class TargetError(UserError, ValueError):
    """A target cell that cannot be encoded, naming the row and the value."""


def split_labels(cell, separator="|"):
    """The labels of one multi-label cell (a list, or a string joined by `separator`)."""
    if isinstance(cell, list):
        parts = cell
    else:
        parts = str(cell).split(separator)
    return sorted({p.strip() for p in parts if p.strip()})


class LabelVocabulary:
    """Label names <-> ids for one target.

    Args:
        kind: one of `mmkeras.data.schema.TARGET_KINDS`.
        labels: the label names (sorted on construction); empty for regression.
        separator: what joins several labels in a multi-label cell.

    Example:
    ```python
    vocab = LabelVocabulary.fit(["cat", "dog", "cat"], "multiclass")
    vocab.labels, vocab.encode("dog")  # (['cat', 'dog'], 1)
    ```
    """

    def __init__(self, kind, labels=(), separator="|"):
        self.kind = kind
        self.labels = sorted(labels)
        self.separator = separator
        self._index = {label: i for i, label in enumerate(self.labels)}

    @classmethod
    def fit(cls, cells, kind, separator="|"):
        """The vocabulary of the non-empty `cells` of a target column."""
        if kind == "regression":
            return cls(kind, (), separator)
        if kind == "multilabel":
            labels = {label for cell in cells for label in split_labels(cell, separator)}
        else:
            labels = {str(cell) for cell in cells if cell != ""}
        return cls(kind, labels, separator)

    @property
    def num_outputs(self):
        """Units of the head: 1 for regression (and binary is still 2 softmax classes)."""
        return 1 if self.kind == "regression" else len(self.labels)

    def encode(self, cell, row=None):
        """The encoded target of one cell (see the module table)."""
        where = f"row {row}: " if row is not None else ""
        if self.kind == "regression":
            try:
                value = float(cell)
            except (TypeError, ValueError):
                raise TargetError(f"{where}target {cell!r} is not a number") from None
            if not math.isfinite(value):
                raise TargetError(f"{where}target {cell!r} is not finite")
            return value
        if self.kind == "multilabel":
            vector = [0.0] * len(self.labels)
            for label in split_labels(cell, self.separator):
                if label not in self._index:
                    raise TargetError(f"{where}unknown label {label!r} (known: {self.labels})")
                vector[self._index[label]] = 1.0
            return vector
        label = str(cell)
        if label not in self._index:
            raise TargetError(f"{where}unknown label {label!r} (known: {self.labels})")
        return self._index[label]

    def decode(self, index):
        return self.labels[int(index)]

    def to_dict(self):
        return {"kind": self.kind, "labels": self.labels, "separator": self.separator}

    @classmethod
    def from_dict(cls, d):
        return cls(d["kind"], d.get("labels", ()), d.get("separator", "|"))

    def save(self, directory):
        path = pathlib.Path(directory) / LABELS_FILE
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, directory):
        return cls.from_dict(json.loads((pathlib.Path(directory) / LABELS_FILE).read_text()))
