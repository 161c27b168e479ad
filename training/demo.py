"""The default job: AV-MNIST prepared from real data, four experiments trained, evaluated,
exported and compared in one table.

    python -m training.demo            (what `make demo` runs)

Steps (each is also a command of its own, printed as it runs):
1. `python -m mmkeras.datasets.avmnist prepare` (cached after the first run);
2. `python -m training.train --config training/configs/avmnist/<name>.yaml --model-dir
   runs/avmnist/<name>` for image_only, audio_only, early_fusion and late_fusion;
3. `python -m serving.export --model-dir runs/avmnist/<name>` (SavedModel + TFLite + parity);
4. a results table: printed, and written to runs/avmnist/results.md and results.json.

An experiment whose model directory already holds a report for the same resolved config is not
trained again; an interrupted one resumes from its backup.
"""

import argparse
import json
import pathlib
import subprocess
import sys
import time

import yaml

from mmkeras import errors
from mmkeras.configs import ConfigError
from mmkeras.configs import config_from_dict
from mmkeras.configs import load_config
from mmkeras.configs import to_dict

EXPERIMENTS = ("image_only", "audio_only", "early_fusion", "late_fusion")
CONFIG_DIR = pathlib.Path(__file__).parent / "configs" / "avmnist"


def _run(cmd):
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def is_up_to_date(model_dir, config):
    report, saved = model_dir / "report.json", model_dir / "config.yaml"
    if not (report.is_file() and saved.is_file() and (model_dir / "model.keras").is_file()):
        return False

    with open(saved) as f:
        try:
            # Through the dataclasses, so fields added since the run take their defaults.
            previous = config_from_dict(yaml.safe_load(f))
        except ConfigError:
            return False
    return to_dict(previous) == to_dict(config)


def results_table(rows):
    header = ("| experiment | modalities | fusion | test accuracy | parameters | epochs | "
              "train s | samples/s | SavedModel max diff | TFLite max diff | TFLite top-1 agree |")
    lines = [header, "|" + "---|" * 11]
    for r in rows:
        lines.append(
            f"| {r['experiment']} | {r['modalities']} | {r['fusion']} | {r['accuracy']:.4f} | "
            f"{r['parameters']:,} | {r['epochs']} | {r['wall_seconds']:.0f} | "
            f"{r['samples_per_second']:.0f} | {r['savedmodel_diff']:.1e} | {r['tflite_diff']:.1e} | "
            f"{r['tflite_agreement']:.4f} |"
        )
    return "\n".join(lines)


@errors.command_line
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs-dir", default="runs/avmnist")
    parser.add_argument("--experiments", nargs="+", default=list(EXPERIMENTS), choices=EXPERIMENTS)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override applied to every experiment (repeatable)")
    parser.add_argument("--retrain", action="store_true", help="train even if a report exists")
    errors.add_flags(parser)
    args = parser.parse_args(argv)

    runs = pathlib.Path(args.runs_dir)
    runs.mkdir(parents=True, exist_ok=True)
    start = time.time()
    first = load_config(CONFIG_DIR / f"{args.experiments[0]}.yaml", args.set)
    d = first.data
    prepare = [sys.executable, "-m", "mmkeras.datasets.avmnist", "prepare",
               "--variant", d.variant, "--snr-db", str(d.snr_db),
               "--image-energy", str(d.image_energy), "--seed", str(d.seed)]
    if d.data_root:
        prepare += ["--data-root", d.data_root]
    if d.images_per_class:
        prepare += ["--images-per-class", str(d.images_per_class)]
    if d.clips_per_class:
        prepare += ["--clips-per-class", str(d.clips_per_class)]
    if not d.data_dir:
        _run(prepare)

    rows = []
    for name in args.experiments:
        config_path = CONFIG_DIR / f"{name}.yaml"
        config = load_config(config_path, args.set)
        model_dir = runs / name
        sets = [x for s in args.set for x in ("--set", s)]
        if args.retrain or not is_up_to_date(model_dir, config):
            _run([sys.executable, "-m", "training.train", "--config", str(config_path),
                  "--model-dir", str(model_dir), *sets]
                 + (["--fresh"] if args.retrain else []))
        else:
            print(f"[demo] {name}: up to date in {model_dir} (use --retrain to train again)")
        if not (model_dir / "export" / "parity.json").is_file() or args.retrain:
            if (model_dir / "export").exists():
                import shutil

                shutil.rmtree(model_dir / "export")
            _run([sys.executable, "-m", "serving.export", "--model-dir", str(model_dir)])
        report = json.loads((model_dir / "report.json").read_text())
        parity = json.loads((model_dir / "export" / "parity.json").read_text())
        rows.append({
            "experiment": name,
            "modalities": "+".join(sorted(config.model.modalities)),
            "fusion": "-" if len(config.model.modalities) == 1 else config.model.fusion.type,
            "accuracy": report["test"]["accuracy"],
            "parameters": report["parameters"],
            "epochs": report["epochs"],
            "wall_seconds": report["wall_seconds"],
            "samples_per_second": report["samples_per_second"] or 0.0,
            "savedmodel_diff": parity["savedmodel"]["max_abs_diff"],
            "tflite_diff": parity["tflite"]["max_abs_diff"],
            "tflite_agreement": parity["tflite"]["top1_agreement"],
            "dataset_checksum": report["dataset"]["checksum"],
        })

    table = results_table(rows)
    dataset = json.loads((runs / rows[0]["experiment"] / "report.json").read_text())["dataset"]
    unimodal = [r["accuracy"] for r in rows if r["fusion"] == "-"]
    fused = [r["accuracy"] for r in rows if r["fusion"] != "-"]
    summary = ""
    if unimodal and fused:
        gain = 100 * (max(fused) - max(unimodal))
        summary = (f"Best fused {100 * max(fused):.2f}% vs best unimodal {100 * max(unimodal):.2f}%: "
                   f"{gain:+.2f} points.")
    recipe = dataset["recipe"]
    weakening = (f"images keep {recipe.get('pca_components')} PCA components "
                 f"({100 * recipe.get('pca_energy_kept', 0):.1f}% of the variance), audio white "
                 f"noise at {recipe.get('snr_db')} dB SNR, "
                 if dataset["variant"] == "weakened" else "")
    text = (f"AV-MNIST, {dataset['variant']} variant ({weakening}recipe seed {recipe.get('seed')}, "
            f"dataset checksum {str(dataset['checksum'])[:12]}), test split of "
            f"{json.loads((runs / rows[0]['experiment'] / 'report.json').read_text())['test']['examples']} pairs\n\n"
            f"{table}\n\n{summary}\n")
    (runs / "results.md").write_text(text)
    (runs / "results.json").write_text(json.dumps({"rows": rows, "dataset": dataset}, indent=2))
    print("\n" + text)
    print(f"[demo] done in {time.time() - start:.0f}s; results in {runs}/results.md; "
          f"TensorBoard: .venv/bin/tensorboard --logdir {runs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
