"""Predict new rows of a table with a model trained by `mmkeras train --data`.

    mmkeras predict --model-dir runs/products --data new.csv --out predictions.csv \\
        [--top-k 5] [--threshold 0.5] [--bad-input mask] [--batch-size 64]

The table needs the feature columns the model was trained on (the target column may be
absent, and is ignored when present). It is read with the model directory's saved schema
(`schema.json`), column layout and imputation values (`table.json`), label vocabulary
(`labels.json`) and fitted text / tabular preprocessing, so a row is seen exactly as in
training. An empty image, audio or text cell is predicted with that modality marked missing
(the `missing` column of the output names them). Bad cells follow `--bad-input` (default: the
model's `data.bad_input`): `error` stops with one line naming the file, row and column, `skip`
leaves the row out of the predictions (counted and listed on stderr), `mask` predicts it with
the bad modality missing.

The output CSV has one row per predicted table row: `row` (its line in the table), `id` (the
table's id column, if any), `label` (the predicted label name), `probability`, then the
probability of every class (`p_<label>`) when there are at most `--top-k` classes, else the
`--top-k` best (`top1_label`, `top1_probability`, ...), then `missing`. For a multi-label
target `label` and `probability` are replaced by `labels`: the labels whose probability is at
least `--threshold`, joined by the training separator (`a|b`; empty when none is); for a
regression target by `value`, the predicted number in the target's units (and no
probabilities).
"""

import argparse
import csv
import dataclasses
import json
import pathlib
import sys
import tempfile

import numpy as np

from mmkeras import errors
from mmkeras import features
from mmkeras import model_dir as model_dir_lib
from mmkeras.data import load_split
from mmkeras.data import make_dataset
from mmkeras.data.own_data import LAYOUT_FILE
from mmkeras.data.own_data import TableLayout
from mmkeras.data.own_data import convert_table
from mmkeras.data.preprocessing import Preprocessing
from mmkeras.data.schema import Schema
from mmkeras.data.targets import LabelVocabulary


def parser():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", required=True, help="a directory written by mmkeras train --data")
    p.add_argument("--data", required=True, help="the table to predict: .csv, .tsv or .jsonl")
    p.add_argument("--out", required=True, help="the predictions CSV to write")
    p.add_argument("--top-k", type=int, default=10,
                   help="with more classes than this, write the k best instead of all "
                        "(default %(default)s)")
    p.add_argument("--threshold", type=float, default=0.5,
                   help="multi-label targets: a label is predicted when its probability is "
                        "at least this (default %(default)s)")
    p.add_argument("--bad-input", choices=("error", "skip", "mask"), default=None,
                   help="policy for bad cells (default: the model's data.bad_input)")
    p.add_argument("--batch-size", type=int, default=64)
    return errors.add_flags(p)


def progress(iterable, total, description):
    """tqdm when it is installed (on stderr), else a line every 10%."""
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    if tqdm is not None:
        yield from tqdm(iterable, total=total, desc=description, unit="batch", file=sys.stderr)
        return
    step = max(1, total // 10)
    for i, item in enumerate(iterable, start=1):
        yield item
        if i % step == 0 or i == total:
            print(f"{description}: {i}/{total} batches", file=sys.stderr)


def load_own_model_dir(model_dir):
    """The pieces `mmkeras train --data` saved: `(schema, vocab, layout)`."""
    model_dir = pathlib.Path(model_dir)
    for name in ("schema.json", "labels.json", LAYOUT_FILE, "config.yaml", "model.keras"):
        if not (model_dir / name).is_file():
            raise errors.UserError(
                f"{model_dir} has no {name}: predict reads a model directory written by "
                "'mmkeras train --data' (after training finished)")
    schema = Schema.from_dict(json.loads((model_dir / "schema.json").read_text()))
    return schema, LabelVocabulary.load(model_dir), TableLayout.load(model_dir)


def predict_table(model_dir, table, out, top_k=10, bad_input=None, batch_size=64,
                  threshold=0.5):
    """Predicts every usable row of `table` into the CSV `out`; returns a summary dict."""
    model_dir, table = pathlib.Path(model_dir), pathlib.Path(table)
    schema, vocab, layout = load_own_model_dir(model_dir)
    config, model = model_dir_lib.load_model_dir(model_dir)
    data_config = config.data
    if bad_input is not None:
        data_config = dataclasses.replace(data_config, bad_input=bad_input)
    modalities = sorted(config.model.modalities)
    with tempfile.TemporaryDirectory(prefix="mmkeras-predict-") as tmp:
        conversion = convert_table(table, schema, tmp, vocab=vocab, layout=layout,
                                   bad_input=data_config.bad_input, labelled=False)
        # An unlabelled table's manifest labels are placeholder class ids (0) for every target.
        columns, report = load_split(tmp, "test", data_config, modalities,
                                     max(config.model.num_classes, 1))
        with open(pathlib.Path(tmp) / "manifest.csv", newline="", encoding="utf-8") as f:
            source_ids = {r["id"]: r["source_id"] for r in csv.DictReader(f)}
    columns["source_id"] = np.array([source_ids[str(i)] for i in columns["id"]])
    n = len(columns["id"])
    if n == 0:
        raise errors.UserError(f"{table}: no row could be predicted ({report.problems[:3]})")
    preprocessing = None
    if features.needs_preprocessing(modalities, data_config.modality_types):
        preprocessing = Preprocessing.load(model_dir, data_config, modalities,
                                           text_encoder=config.model.text_encoder)
    dataset = make_dataset(columns, data_config, modalities, batch_size=batch_size,
                           preprocessing=preprocessing, threads=1)
    batches = -(-n // batch_size)
    probabilities = []
    for x, _ in progress(dataset, batches, f"predict {table.name}"):
        output = model(x, training=False)
        if isinstance(output, dict):
            output = output[features.PROBABILITIES]
        probabilities.append(np.asarray(output))
    probabilities = np.concatenate(probabilities)
    if vocab.kind == "regression":
        _write_values(out, columns, probabilities.reshape(-1), modalities)
    else:
        _write(out, columns, probabilities, vocab.labels, modalities, top_k,
               threshold=threshold if vocab.kind == "multilabel" else None,
               separator=vocab.separator)
    problems = conversion.info["first_problems"] + report.problems
    return {
        "rows": conversion.info["rows"],
        "predicted": n,
        "skipped": conversion.info["rows"] - n,
        "problems": dict(conversion.info["problems"], files=len(report.problems)),
        "masked": report.masked,
        "missing": report.missing,
        "imputed": conversion.info["imputed"],
        "first_problems": problems[:5],
    }


def _row_start(columns, i):
    """`[row, id]` of the i-th predicted row: its table line and the table's id cell."""
    line = str(columns["id"][i]).rsplit(":", 1)[-1]
    return [line, str(columns["source_id"][i]) if "source_id" in columns else ""]


def _missing(columns, modalities, i):
    return "|".join(m for m in modalities if columns[f"{m}_present"][i] < 0.5)


def _write_values(out, columns, values, modalities):
    """A regression model's predictions: `row, id, value, missing`."""
    out = pathlib.Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["row", "id", "value", "missing"])
        for i, value in enumerate(values):
            writer.writerow(_row_start(columns, i) + [f"{float(value):.6g}",
                                                      _missing(columns, modalities, i)])
    tmp.replace(out)


def _write(out, columns, probabilities, labels, modalities, top_k, threshold=None,
           separator="|"):
    """Class probabilities; with a `threshold` (multi-label), the label set above it."""
    out = pathlib.Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    all_classes = len(labels) <= top_k
    header = ["row", "id", "label", "probability"] if threshold is None else ["row", "id",
                                                                              "labels"]
    if all_classes:
        header += [f"p_{label}" for label in labels]
    else:
        for k in range(1, top_k + 1):
            header += [f"top{k}_label", f"top{k}_probability"]
    header.append("missing")
    tmp = out.with_name(f".{out.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for i, p in enumerate(probabilities):
            cells = _row_start(columns, i)
            if threshold is None:
                best = int(p.argmax())
                cells += [labels[best], f"{p[best]:.6f}"]
            else:
                cells.append(separator.join(
                    label for label, v in zip(labels, p) if v >= threshold))
            if all_classes:
                cells += [f"{v:.6f}" for v in p]
            else:
                for j in p.argsort()[::-1][:top_k]:
                    cells += [labels[int(j)], f"{p[int(j)]:.6f}"]
            cells.append(_missing(columns, modalities, i))
            writer.writerow(cells)
    tmp.replace(out)


@errors.command_line
def main(argv=None):
    args = parser().parse_args(argv)
    summary = predict_table(args.model_dir, args.data, args.out, args.top_k, args.bad_input,
                            args.batch_size, threshold=args.threshold)
    print(f"[predict] {summary['predicted']} of {summary['rows']} rows -> {args.out}"
          + (f"; skipped {summary['skipped']}" if summary["skipped"] else "")
          + (f"; modality missing (empty cell) {summary['missing']}" if summary["missing"] else "")
          + (f"; masked (bad cell) {summary['masked']}" if summary["masked"] else "")
          + (f"; imputed {summary['imputed']}" if summary["imputed"] else ""))
    for line in summary["first_problems"]:
        print(f"[predict] problem: {line}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
