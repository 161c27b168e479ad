"""Train on your own table: `mmkeras train --data my.csv --target label --model-dir DIR`.

    mmkeras train --data products.csv --target category --model-dir runs/products \\
        [--schema schema.yaml] [--set trainer.epochs=5 --set data.image_shape=[96,96,3]] \\
        [--split-fractions 0.8,0.1,0.1] [--seed 0] [--fresh]

The table (CSV, TSV or JSONL) is read and the role of each column inferred
(`mmkeras.data.schema`): image / audio / video paths (relative to the table's folder, or
absolute), free text, categorical, numeric, an id, a split column, the target. The schema is
printed as a table; a small YAML (`--schema`) overrides any column:

    columns:
      sku: ignore            # leave a column out
      year: categorical
    target_kind: multiclass  # binary, multiclass, multilabel (`a|b` cells), regression

Each image, audio, video or text column feeds a modality (the `modality` column of the printed
schema; `mmkeras.data.own_data.TableLayout`): a role with one column keeps the role's name
(`image`, `text`); several columns of a role (a title and a description, a front and a back
image) become one modality each, named after its column, with its own encoder
(`model.<type>_encoder`'s settings, `data.modality_types` in the generated config), presence
flag and, for text, vocabulary (`vocab_<modality>.txt`), all fused. Numeric and categorical
columns form the one `tabular` modality.

The target's kind (inferred, or `target_kind` in `--schema`) picks the head, loss and metrics
(`model.target` in the generated config; `training/tasks/classification.py`): `binary` and
`multiclass` (string or integer labels: softmax, accuracy), `multilabel` (cells `a|b`: a
sigmoid per label, binary cross-entropy, micro-F1; best checkpoint on `val_micro_f1`) and
`regression` (numbers: a linear head un-standardised inside the model, MSE, MAE / RMSE / R²;
best checkpoint on `val_loss`).

The table is then converted into the project's dataset format inside the model directory, and
a config is generated and trained with the experiment trainer (`training.trainer.train`):

    DIR/schema.json          the roles (what predict reads a new table with)
    DIR/labels.json          the label vocabulary (label names <-> ids)
    DIR/table.json           how the columns become modalities (`columns`, `types`), and
                             the imputation values
    DIR/data/manifest.csv    one row per usable table row (id `<table>:<line>`)
    DIR/data/dataset.json    the source table, its SHA-256, row counts, the split recipe
                             (a seeded stratified split when the table has no split column),
                             problems found
    DIR/generated.yaml       the generated config before `--set` (the trainer writes the
                             resolved one to DIR/config.yaml); its model name, `own_<table
                             file stem>`, is the TF Serving model name after export

Bad cells follow `data.bad_input` (`error` by default: one line naming the table, the line
and the column; `--set data.bad_input=skip` drops and counts, `mask` keeps the row with the
modality missing). Empty media or text cells are missing modalities, not bad input.

With `--config` instead of `--data`, `mmkeras train` trains a prepared experiment
(`python -m training.train`; `mmkeras train --config X.yaml --help`).
"""

import argparse
import csv
import json
import pathlib
import re
import shutil
import sys

from PIL import Image
import yaml

from mmkeras import errors
from mmkeras.configs import load_config
from mmkeras.configs.experiment_config import _deep_update
from mmkeras.configs.experiment_config import parse_override
from mmkeras.data import own_data
from mmkeras.data.schema import format_schema
from mmkeras.data.schema import infer_schema
from mmkeras.data.schema import load_overrides
from mmkeras.model_dir import OWN_DATA_DIR
from training import train as train_command

DEFAULT_IMAGE_SIDE = 64
AUDIO_RATE = 16000
AUDIO_SECONDS = 2


def parser():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="the table: .csv, .tsv or .jsonl")
    p.add_argument("--target", required=True, help="the column to predict")
    p.add_argument("--model-dir", required=True, help="output directory")
    p.add_argument("--schema", default=None, help="YAML overriding inferred column roles")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a generated config value, e.g. trainer.epochs=3 (repeatable)")
    p.add_argument("--split-fractions", default="0.8,0.1,0.1", metavar="TRAIN,VAL,TEST",
                   help="without a split column: fractions of the seeded stratified split")
    p.add_argument("--seed", type=int, default=0, help="split and training seed")
    p.add_argument("--fresh", action="store_true",
                   help="delete the model directory first instead of resuming")
    p.add_argument("--dry-run", action="store_true",
                   help="infer, convert and write the config, but do not train")
    return errors.add_flags(p)


def _fractions(text):
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) < 0 or abs(sum(values) - 1) > 1e-6:
        raise errors.UserError(
            f"--split-fractions must be three numbers summing to 1, got {text!r}")
    return values


def image_settings(paths, side=DEFAULT_IMAGE_SIDE, sample=20):
    """`(image_shape, fill)` from the first `sample` images: 1 channel if all are gray, else
    3; a white background (fill 1) if any has transparency; a smaller side for small images."""
    modes, sizes = [], []
    for path in paths[:sample]:
        try:
            with Image.open(path) as img:
                modes.append((img.mode, "transparency" in img.info))
                sizes.append(max(img.size))
        except Exception:  # noqa: BLE001 - bad files are reported by the row checks
            continue
    gray = bool(modes) and all(m in ("1", "L", "LA", "I", "I;16") for m, _ in modes)
    alpha = any(m in ("RGBA", "LA", "PA") or t for m, t in modes)
    if sizes and max(sizes) < side:
        side = max(28, max(sizes))
    return [side, side, 1 if gray else 3], 1.0 if alpha else 0.0


# The best checkpoint's metric per target kind (`model.target`).
MONITORS = {"binary": "val_accuracy", "multiclass": "val_accuracy",
            "multilabel": "val_micro_f1", "regression": "val_loss"}


def generated_config(name, dataset_dir, layout, num_classes, image_paths, seed,
                     target="multiclass"):
    """The experiment config (a dict) for a converted table (`num_classes`: the labels of a
    multi-label target, 1 for regression)."""
    data = {
        "dataset": "own",
        "data_dir": str(pathlib.Path(dataset_dir).resolve()),
        "seed": seed,
        "modalities": layout.modalities,
        "modality_types": layout.modality_types(),
        "batch_size": 32,
        "bad_input": "error",
        "empty_is_missing": True,
        "tabular_numeric": layout.tabular_numeric(),
        "tabular_categorical": layout.tabular_categorical(),
    }
    model = {"name": name, "modalities": layout.modalities, "num_classes": num_classes,
             "target": target, "fusion": {"type": "concat"}, "head_units": [64]}
    if layout.of_type("image"):
        shape, fill = image_settings(image_paths)
        data.update(image_shape=shape, image_resize="pad", image_fill=fill,
                    max_image_pixels=40_000_000)
    if layout.of_type("audio"):
        data.update(audio_sample_rate=AUDIO_RATE, audio_resample=True,
                    audio_samples=AUDIO_RATE * AUDIO_SECONDS, audio_channels=None)
        model["audio_encoder"] = {"sample_rate": AUDIO_RATE, "fft_length": 512,
                                  "sequence_stride": 256}
    return {
        "name": name,
        "data": data,
        "model": model,
        "trainer": {"epochs": 20, "learning_rate": 1e-3, "seed": seed,
                    "monitor": MONITORS[target], "early_stopping_patience": 5},
        "runtime": {"distribution": "default"},
    }


def _bad_input(overrides):
    """`data.bad_input` as the `--set` overrides give it (the conversion applies it too)."""
    merged = {}
    for text in overrides:
        _deep_update(merged, parse_override(text))
    return merged.get("data", {}).get("bad_input", "error")


def model_name(path):
    stem = re.sub(r"[^a-z0-9_]+", "_", pathlib.Path(path).stem.lower()).strip("_") or "table"
    return f"own_{stem}"


def prepare(args):
    """Infers, prints, converts and writes the config; returns `(config, model_dir)`."""
    fractions = _fractions(args.split_fractions)
    schema = infer_schema(args.data, target=args.target, overrides=load_overrides(args.schema))
    print(f"[schema] {args.data}:")
    for line in format_schema(schema, feeds=own_data.layout_for(schema).feeds()):
        print(f"  {line}")
    model_dir = pathlib.Path(args.model_dir)
    if args.fresh and model_dir.exists():
        shutil.rmtree(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    bad_input = _bad_input(args.set)
    conversion = own_data.convert_table(
        args.data, schema, model_dir / OWN_DATA_DIR, split_fractions=fractions, seed=args.seed,
        bad_input=bad_input,
    )
    info = conversion.info
    print(f"[data] {info['rows_written']} of {info['rows']} rows -> {model_dir / 'data'} "
          f"(splits {info['splits']}"
          + (f"; stratified {fractions}, seed {args.seed}" if schema.split_column is None else "")
          + f"); target {schema.target_kind}"
          + (f", labels {len(conversion.vocab.labels)}" if conversion.vocab.labels else ""))
    if info["problems"]:
        print(f"[data] problems {info['problems']}; first: {info['first_problems'][:3]}")
    if info["imputed"]:
        print(f"[data] imputed cells per column {info['imputed']}")
    (model_dir / "schema.json").write_text(json.dumps(schema.to_dict(), indent=1) + "\n")
    conversion.vocab.save(model_dir)
    conversion.layout.save(model_dir)
    image_modalities = conversion.layout.of_type("image")
    image_paths = []
    if image_modalities:  # every image feature shares data.image_shape: sample them all
        with open(model_dir / OWN_DATA_DIR / "manifest.csv", newline="", encoding="utf-8") as f:
            image_paths = [r[m] for r in csv.DictReader(f) for m in image_modalities
                           if r[m]][:20]
    generated = generated_config(model_name(args.data), model_dir / OWN_DATA_DIR, conversion.layout,
                                 conversion.vocab.num_outputs, image_paths, args.seed,
                                 target=schema.target_kind)
    (model_dir / "generated.yaml").write_text(yaml.safe_dump(generated, sort_keys=False))
    config = load_config(None, [generated, *args.set])
    return config, model_dir


def test_summary(test):
    """The headline test figure of a report's `test` entry, per target kind."""
    if "rmse" in test:
        return f"test MAE {test['mae']:.4f}, RMSE {test['rmse']:.4f}"
    if "micro_f1" in test:
        return f"test micro-F1 {test['micro_f1'] or 0.0:.4f}"
    return f"test accuracy {test['accuracy']:.4f}"


@errors.command_line
def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--data" not in argv and any(a == "--config" or a.startswith("--config=") for a in argv):
        return train_command.main(argv)
    args = parser().parse_args(argv)
    config, model_dir = prepare(args)
    # TensorFlow is imported here, after the table is converted and after `command_line` has
    # quieted its log: `--dry-run` and a bad table never load it.
    from training.trainer import train

    outputs = {"regression": "a number", "multilabel": f"{config.model.num_classes} labels"}
    print(f"[config] {model_dir / 'generated.yaml'}: modalities {config.model.modalities}, "
          + outputs.get(config.model.target, f"{config.model.num_classes} classes")
          + (f", images {config.data.image_shape} ({config.data.image_resize})"
             if "image" in config.data.modality_types.values()
             or "image" in config.model.modalities else ""))
    if args.dry_run:
        return 0

    report = train(config, model_dir)
    print(f"[train] {test_summary(report['test'])} -> {model_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
