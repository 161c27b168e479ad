"""Pretrained text encoder vs from scratch on OpenMoji: text only and image + text fusion.

    python -m benchmarks.pretrained_text                       # 3 seeds, the configs' epochs
    python -m benchmarks.pretrained_text --seeds 0 --pretrained-epochs 3 --scratch-epochs 10
    python -m benchmarks.pretrained_text --table-only          # print the table of finished runs
    python -m benchmarks.pretrained_text --latency             # + TFLite of the seed-0 MiniLM runs

For each seed, six `python -m training.train` runs of `training/configs/openmoji/<name>.yaml`:
the text encoder from scratch (`text_only`, `early_fusion`: TextVectorization + BiGRU),
all-MiniLM-L6-v2 frozen and fine-tuned (`*_minilm_frozen`, `*_minilm_finetune`: the
`keras_hub` encoder, preset `all-minilm-l6-v2`), with `trainer.seed` set to the seed.
`--pretrained-epochs` / `--scratch-epochs` override `trainer.epochs` (say so when quoting the
table). The seed-0 run of each is exported (`python -m serving.export --format savedmodel`)
for the SavedModel size. Runs with a `report.json` are reused, so an interrupted benchmark
continues where it stopped. The OpenMoji dataset is `python -m mmkeras.datasets.openmoji
prepare` (32 px, seed 0), found through `$MMKERAS_DATA` like every training run.

`--latency` (after the runs): each seed-0 MiniLM run is exported again with TFLite
(`python -m serving.export --format savedmodel --format tflite`, a new SavedModel version) and
timed one example at a time on the first test rows: SavedModel `serving_default` (token ids),
`serve_text` (raw strings, tokenizer in the graph) and TFLite (token ids: the tokenizer's
tensorflow-text ops are not TFLite builtins), median milliseconds; with the TFLite size and its
parity (max |diff|, top-1 agreement) from `parity.json`. Writes `<out>/latency.{md,json}`.

Reported per config: test accuracy and macro-F1 (mean ± std over seeds), epochs run (early
stopping), seconds per epoch (training wall time / epochs, validation included), parameters,
`model.keras` size (with the optimizer state) and SavedModel size. Writes
`<out>/pretrained_text.{md,json}`.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "training" / "configs" / "openmoji"
# (task, text encoder, config name)
RUNS = (
    ("text only", "from scratch (BiGRU)", "text_only"),
    ("text only", "MiniLM frozen", "text_only_minilm_frozen"),
    ("text only", "MiniLM fine-tuned", "text_only_minilm_finetune"),
    ("image + text", "from scratch (BiGRU)", "early_fusion"),
    ("image + text", "MiniLM frozen", "early_fusion_minilm_frozen"),
    ("image + text", "MiniLM fine-tuned", "early_fusion_minilm_finetune"),
)


def macro_f1(confusion):
    """Macro-averaged F1 from a confusion matrix (rows: true class, columns: predicted);
    classes absent from the test split are left out."""
    c = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(c)
    support, predicted = c.sum(1), c.sum(0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return float(f1[support > 0].mean())


def _run(cmd, log):
    with open(log, "a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
        return subprocess.run(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT).returncode


def train(name, seed, model_dir, epochs, log, extra=()):
    sets = [f"trainer.seed={seed}", "trainer.verbose=2", *extra]
    if epochs is not None:
        sets.append(f"trainer.epochs={epochs}")
    cmd = [sys.executable, "-m", "training.train", "--config", str(CONFIG_DIR / f"{name}.yaml"),
           "--model-dir", str(model_dir), "--fresh"]
    for s in sets:
        cmd += ["--set", s]
    return _run(cmd, log)


def export(model_dir, log):
    return _run([sys.executable, "-m", "serving.export", "--model-dir", str(model_dir),
                 "--format", "savedmodel"], log)


def _bytes(path):
    path = pathlib.Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def collect(out, seeds):
    """One row per config from the finished runs under `out`."""
    rows = []
    for task, encoder, name in RUNS:
        runs = []
        for seed in seeds:
            d = out / f"seed{seed}" / name
            if not (d / "report.json").is_file():
                continue
            r = json.loads((d / "report.json").read_text())
            runs.append({
                "seed": seed, "accuracy": r["test"]["accuracy"],
                "macro_f1": macro_f1(r["test"]["confusion_matrix"]), "epochs": r["epochs"],
                "seconds_per_epoch": r["wall_seconds"] / max(r["epochs_this_run"], 1),
                "parameters": r["parameters"], "model_keras_bytes": _bytes(d / "model.keras"),
            })
        if not runs:
            continue
        parity = out / "seed0" / name / "export" / "parity.json"
        savedmodel = None
        if parity.is_file():
            savedmodel = json.loads(parity.read_text()).get("savedmodel", {}).get("bytes")
        acc = np.array([r["accuracy"] for r in runs])
        f1 = np.array([r["macro_f1"] for r in runs])
        rows.append({
            "task": task, "text_encoder": encoder, "config": name, "seeds": [r["seed"] for r in runs],
            "accuracy_mean": float(acc.mean()), "accuracy_std": float(acc.std()),
            "macro_f1_mean": float(f1.mean()), "macro_f1_std": float(f1.std()),
            "epochs": [r["epochs"] for r in runs],
            "seconds_per_epoch": float(np.mean([r["seconds_per_epoch"] for r in runs])),
            "parameters": runs[0]["parameters"], "model_keras_bytes": runs[0]["model_keras_bytes"],
            "savedmodel_bytes": savedmodel, "runs": runs,
        })
    return rows


def table(rows):
    lines = [
        "| task | text encoder | seeds | test accuracy | macro-F1 | epochs | s/epoch | parameters | model.keras | SavedModel |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    mb = lambda b: f"{b / 1e6:.1f} MB" if b else "-"  # noqa: E731
    for r in rows:
        lines.append(
            f"| {r['task']} | {r['text_encoder']} | {len(r['seeds'])} | "
            f"{100 * r['accuracy_mean']:.1f} ± {100 * r['accuracy_std']:.1f}% | "
            f"{100 * r['macro_f1_mean']:.1f} ± {100 * r['macro_f1_std']:.1f}% | "
            f"{','.join(str(e) for e in r['epochs'])} | {r['seconds_per_epoch']:.1f} | "
            f"{r['parameters'] / 1e6:.2f}M | {mb(r['model_keras_bytes'])} | {mb(r['savedmodel_bytes'])} |"
        )
    return "\n".join(lines)


def latency(out, names, log, count=100, repeats=3):
    """Per-example latency of the seed-0 runs' SavedModel signatures and TFLite (see above)."""
    import tensorflow as tf

    from mmkeras.data import load_split
    from mmkeras.data.sources import dataset_dir_for
    from serving import export as export_lib
    from serving import text_signature

    rows = []
    for name in names:
        model_dir = out / "seed0" / name
        if not (model_dir / "report.json").is_file():
            continue
        parity_path = model_dir / "export" / "parity.json"
        parity = json.loads(parity_path.read_text()) if parity_path.is_file() else {}
        if "tflite" not in parity:
            code = _run([sys.executable, "-m", "serving.export", "--model-dir", str(model_dir),
                         "--format", "savedmodel", "--format", "tflite"], log)
            print(f"[bench] export {name} with TFLite: exit {code}", flush=True)
            if not parity_path.is_file():
                continue
            parity = json.loads(parity_path.read_text())
        config, _ = export_lib.load_model_dir(model_dir)
        preprocessing = text_signature.load_preprocessing(model_dir, config)
        modalities = sorted(config.model.modalities)
        columns, _ = load_split(dataset_dir_for(config.data, prepare=False), "test",
                                config.data, modalities, config.model.num_classes)
        columns = {k: v[:count] for k, v in columns.items()}
        raw = export_lib._pipeline_inputs(columns, config, modalities)
        ids = preprocessing.apply(dict(raw))
        signatures = tf.saved_model.load(parity["savedmodel"]["path"]).signatures
        runners = {
            "savedmodel serving_default (ids)": lambda x: signatures["serving_default"](**x),
            "savedmodel serve_text (strings)": lambda x: signatures["serve_text"](**x),
        }
        tflite = export_lib.tflite_runner(parity["tflite"]["path"], num_threads=1) if "tflite" in parity else None
        entry = {"config": name, "examples": len(columns["label"]),
                 "tflite_bytes": parity.get("tflite", {}).get("bytes"),
                 "tflite_max_abs_diff": parity.get("tflite", {}).get("max_abs_diff"),
                 "tflite_top1_agreement": parity.get("tflite", {}).get("top1_agreement"),
                 "parity_examples": parity.get("examples"), "median_ms": {}}
        inputs = {"savedmodel serving_default (ids)": ids, "savedmodel serve_text (strings)": raw}
        if tflite is not None:
            runners["tflite (ids, 1 thread)"] = tflite
            inputs["tflite (ids, 1 thread)"] = ids
        for label, run in runners.items():
            x_all = inputs[label]
            times = []
            for _ in range(repeats):
                for i in range(entry["examples"]):
                    x = {k: (v[i:i + 1].numpy() if "tflite" in label else v[i:i + 1])
                         for k, v in x_all.items()}
                    t0 = time.perf_counter()
                    run(x)
                    times.append(time.perf_counter() - t0)
            entry["median_ms"][label] = round(1000 * float(np.median(times[entry["examples"]:])), 2)
        rows.append(entry)
        print(f"[bench] latency {name}: {entry}", flush=True)
    lines = ["| config | TFLite size | TFLite max diff / top-1 agreement | median ms per example |",
             "|---|---|---|---|"]
    for e in rows:
        size = f"{e['tflite_bytes'] / 1e6:.1f} MB" if e["tflite_bytes"] else "-"
        agree = (f"{e['tflite_max_abs_diff']:.1e} / {e['tflite_top1_agreement']:.4f} "
                 f"({e['parity_examples']} test)" if e["tflite_bytes"] else "-")
        ms = "; ".join(f"{k} {v}" for k, v in e["median_ms"].items())
        lines.append(f"| {e['config']} | {size} | {agree} | {ms} |")
    (out / "latency.json").write_text(json.dumps(rows, indent=1) + "\n")
    (out / "latency.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/pretrained_text")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--pretrained-epochs", type=int, default=None,
                        help="trainer.epochs of the MiniLM runs (default: the config's)")
    parser.add_argument("--scratch-epochs", type=int, default=None,
                        help="trainer.epochs of the from-scratch runs (default: the config's)")
    parser.add_argument("--configs", nargs="+", default=None, help="a subset of the config names")
    parser.add_argument("--no-export", action="store_true", help="skip the seed-0 SavedModel exports")
    parser.add_argument("--table-only", action="store_true")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an override for every training run (e.g. trainer.recipe=legacy)")
    parser.add_argument("--latency", action="store_true",
                        help="then export the seed-0 MiniLM runs to TFLite and time them")
    args = parser.parse_args(argv)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "runs.log"
    names = args.configs or [name for _, _, name in RUNS]
    if not args.table_only:
        for seed in args.seeds:  # seed by seed, so a cut-short benchmark covers every config
            for _, _, name in RUNS:
                if name not in names:
                    continue
                model_dir = out / f"seed{seed}" / name
                if not (model_dir / "report.json").is_file():
                    pretrained = "minilm" in name
                    epochs = args.pretrained_epochs if pretrained else args.scratch_epochs
                    t0 = time.time()
                    code = train(name, seed, model_dir, epochs, log, args.set)
                    print(f"[bench] {name} seed {seed}: exit {code}, {time.time() - t0:.0f} s",
                          flush=True)
                    if code != 0:
                        continue
                if seed == 0 and not args.no_export and not (model_dir / "export" / "parity.json").is_file():
                    code = export(model_dir, log)
                    print(f"[bench] export {name}: exit {code}", flush=True)
                rows = collect(out, args.seeds)
                (out / "pretrained_text.json").write_text(json.dumps(rows, indent=1) + "\n")
                (out / "pretrained_text.md").write_text(table(rows) + "\n")
    rows = collect(out, args.seeds)
    (out / "pretrained_text.json").write_text(json.dumps(rows, indent=1) + "\n")
    (out / "pretrained_text.md").write_text(table(rows) + "\n")
    print(table(rows))
    if args.latency:
        latency(out, [n for n in names if "minilm" in n], log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
