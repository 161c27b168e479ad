"""Evaluate a trained model directory, optionally sweeping missing and noisy modalities.

    python -m training.evaluate --model-dir DIR                 -> DIR/eval.json
    python -m training.evaluate --model-dir DIR --robustness [--reference REF_DIR]
        -> also DIR/robustness/robustness.json, missing.png, noise.png
    python -m training.evaluate --model-dir A --model-dir B     -> also a Markdown table

`eval.json` holds the test metrics and the accuracy with every modality present, with each
modality missing, and with all missing; for a multi-task run (`model.tasks`), also each head's
accuracy (`tasks`, from `DIR/multitask.keras`). The robustness sweep makes each modality missing in a
fraction (0, .25, .5, .75, 1) of the examples, and corrupts each modality at severities
(0, .25, .5, .75, 1) (`mmkeras.data.noise.CORRUPTIONS`), and summarises each curve by its
MultiBench relative robustness and, given `--reference` (a model directory evaluated with
`--robustness` first, e.g. a baseline), its effective robustness (`mmkeras.explain.robustness`).
"""

import argparse
import io
import json
import pathlib
import sys
import time

import keras
import numpy as np

from mmkeras import errors
from mmkeras import features
from mmkeras.data import load_split
from mmkeras.data import make_dataset
from mmkeras.data.sources import dataset_dir_for
from mmkeras.explain import robustness as rob
from mmkeras.explain.robustness import accuracy
from mmkeras.explain.robustness import drop_modality
from mmkeras.explain.robustness import modalities_of
from mmkeras.model_dir import load_model_dir
from mmkeras.model_dir import write_json
from mmkeras.models.multitask import TARGETS
from training.report import classification_metrics


def load_examples(config, split="test", max_examples=None, batch_size=256, start=0, threads=1,
                  model_dir=None):
    """A split of the model directory's dataset as `(feature dict of numpy arrays, labels)`.

    Text and tabular modalities go through the preprocessing fitted in training, read from
    `model_dir` (required for them).

    `start` and `max_examples` select rows `start .. start + max_examples` of the split.
    `threads=1` decodes on one tf.data thread: with parallel decoding, tensorflow-io's
    `AudioIOTensor` was seen to return a wrong waveform for ~0.3% of the clips, differently
    on each pass, which made evaluations irreproducible.
    """
    modalities = sorted(config.model.modalities)
    dataset_dir = dataset_dir_for(config.data, prepare=False)
    columns, _ = load_split(dataset_dir, split, config.data, modalities, config.model.num_classes,
                            target=getattr(config.model, "target", "multiclass"))
    n = len(columns["label"])
    if not 0 <= start < n:
        raise IndexError(f"Example {start} is out of range: the {split} split of {dataset_dir} "
                         f"has {n} usable rows.")
    stop = start + max_examples if max_examples else n
    columns = {k: v[start:stop] for k, v in columns.items()}
    preprocessing = None
    if model_dir is not None and features.needs_preprocessing(
            modalities, config.data.modality_types):
        from mmkeras.data.preprocessing import Preprocessing

        preprocessing = Preprocessing.load(model_dir, config.data, modalities,
                                           text_encoder=config.model.text_encoder)
    xs, ys = [], []
    for x, y in make_dataset(columns, config.data, modalities, batch_size=batch_size,
                             threads=threads, preprocessing=preprocessing):
        xs.append({k: v.numpy() for k, v in x.items()})
        ys.append(y.numpy())
    if not xs:
        raise ValueError(f"The {split} split of {dataset_dir} has no usable rows.")
    x = {k: np.concatenate([batch[k] for batch in xs]) for k in xs[0]}
    return x, np.concatenate(ys)


def missing_modality_accuracy(model, x, y):
    """Accuracy with all modalities present, each one missing, and all missing."""
    modalities = modalities_of(x)
    result = {"all_present": accuracy(model, x, y)}
    if len(modalities) > 1:
        for m in modalities:
            result[f"{m}_missing"] = accuracy(model, drop_modality(x, m), y)
    none = x
    for m in modalities:
        none = drop_modality(none, m)
    result["all_missing"] = accuracy(model, none, y)
    return result


def task_accuracy(model_dir, config, x, y):
    """`{head: {target, accuracy}}` of every head in `model_dir/multitask.keras` (None if the
    run has no task heads)."""
    path = pathlib.Path(model_dir) / "multitask.keras"
    if not config.model.tasks or not path.is_file():
        return None

    outputs = keras.saving.load_model(path).predict(x, batch_size=256, verbose=0)
    targets = {"probabilities": "label", **{t.name: t.target for t in config.model.tasks}}
    return {
        name: {"target": target,
               "accuracy": float((outputs[name].argmax(-1) == TARGETS[target](y)).mean())}
        for name, target in targets.items()
    }


def curve_figure(curves, levels, title, xlabel):
    """A matplotlib figure of accuracy curves `{label: [accuracy per level]}`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3.4))
    for label, accuracies in curves.items():
        ax.plot(levels, accuracies, marker="o", label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy")
    ax.set_ylim(0.0, 1.02)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def figure_png(fig):
    """PNG bytes of a matplotlib figure (closed afterwards)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


def plot_robustness(result, out_dir, name=""):
    """Writes `missing.png` and `noise.png` (one panel per modality) into `out_dir`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = pathlib.Path(out_dir)
    levels = result["levels"]
    missing = {
        f"{m} (RR {c['relative_robustness']:.3f})": c["accuracy"]
        for m, c in result["missing"].items()
    }
    (out_dir / "missing.png").write_bytes(figure_png(curve_figure(
        missing, levels, f"{name}: modality missing", "fraction of examples missing")))
    by_modality = {}
    for key, c in result["noise"].items():
        modality, kind = key.split("/")
        by_modality.setdefault(modality, {})[f"{kind} (RR {c['relative_robustness']:.3f})"] = (
            c["accuracy"])
    if by_modality:
        fig, axes = plt.subplots(1, len(by_modality), figsize=(4.5 * len(by_modality), 3.4),
                                 squeeze=False)
        for ax, (modality, curves) in zip(axes[0], sorted(by_modality.items())):
            for label, accuracies in curves.items():
                ax.plot(levels, accuracies, marker="o", label=label)
            ax.set_title(f"{name}: {modality} noise", fontsize=10)
            ax.set_xlabel("severity")
            ax.set_ylabel("accuracy")
            ax.set_ylim(0.0, 1.02)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.tight_layout()
        (out_dir / "noise.png").write_bytes(figure_png(fig))


def evaluate(model_dir, robustness=False, split="test", max_examples=None, levels=None,
             reference=None, seed=0):
    """Evaluates `model_dir`; returns the `eval.json` payload (and writes the files)."""
    model_dir = pathlib.Path(model_dir)
    start = time.time()
    config, model = load_model_dir(model_dir)
    if getattr(config.model, "target", "multiclass") not in ("multiclass", "binary"):
        raise errors.UserError(
            f"{model_dir}: mmkeras evaluate measures class accuracy (with modalities missing, "
            f"under noise); this model's target is {config.model.target}: its test figures "
            "are in report.json ('test')")
    x, y = load_examples(config, split, max_examples, model_dir=model_dir)
    probabilities = rob.predict(model, x)
    payload = {
        "model_dir": str(model_dir),
        "experiment": config.name,
        "split": split,
        "metrics": classification_metrics(probabilities, y, config.model.num_classes),
        "missing_modalities": missing_modality_accuracy(model, x, y),
    }
    tasks = task_accuracy(model_dir, config, x, y)
    if tasks is not None:
        payload["tasks"] = tasks
    if robustness:
        ref = None
        if reference is not None:
            ref_path = pathlib.Path(reference) / "robustness" / "robustness.json"
            if not ref_path.is_file():
                raise FileNotFoundError(
                    f"{ref_path} not found: run `python -m training.evaluate --model-dir "
                    f"{reference} --robustness` first.")
            ref = json.loads(ref_path.read_text())
        result = rob.robustness_sweep(
            model, x, y, levels=levels or rob.DEFAULT_LEVELS, reference=ref, seed=seed)
        result.update({"model_dir": str(model_dir), "experiment": config.name, "split": split,
                       "reference": str(reference) if reference else None,
                       "definitions": {
                           "relative_robustness": "area under accuracy vs level, levels in [0, 1]",
                           "effective_robustness": "mean over levels > 0 of acc - (ref_acc + "
                                                   "acc(0) - ref_acc(0))",
                       }})
        out = model_dir / "robustness"
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "robustness.json", result)
        plot_robustness(result, out, config.name)
        payload["robustness"] = str(out / "robustness.json")
    payload["seconds"] = round(time.time() - start, 1)
    write_json(model_dir / "eval.json", payload)
    return payload


def missing_table(payloads):
    """A Markdown table of accuracy with modalities missing, one row per evaluated model."""
    keys = []
    for p in payloads:
        keys += [k for k in p["missing_modalities"] if k not in keys]
    header = "| model | " + " | ".join(k.replace("_", " ") for k in keys) + " |"
    lines = [header, "|---|" + "---|" * len(keys)]
    for p in payloads:
        accs = p["missing_modalities"]
        cells = [f"{100 * accs[k]:.2f}%" if k in accs else "-" for k in keys]
        lines.append(f"| {p['experiment']} (`{p['model_dir']}`) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


@errors.command_line
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", action="append", required=True,
                        help="a trained model directory (repeatable: prints a comparison table)")
    parser.add_argument("--robustness", action="store_true",
                        help="sweep missing fraction and noise severity per modality")
    parser.add_argument("--reference", default=None,
                        help="model directory whose robustness.json is the effective-robustness "
                             "reference")
    parser.add_argument("--split", default="test", choices=("train", "validation", "test"))
    parser.add_argument("--max-examples", type=int, default=None)
    parser.add_argument("--levels", type=float, nargs="+", default=None,
                        help="missing fractions / severities (default 0 .25 .5 .75 1)")
    parser.add_argument("--seed", type=int, default=0)
    errors.add_flags(parser)
    args = parser.parse_args(argv)

    payloads = []
    for model_dir in args.model_dir:
        p = evaluate(model_dir, args.robustness, args.split, args.max_examples, args.levels,
                     args.reference, args.seed)
        payloads.append(p)
        m = p["metrics"]
        print(f"[evaluate] {p['experiment']} ({model_dir}): {args.split} accuracy "
              f"{m['accuracy']:.4f}, loss {m['loss']:.4f} on {m['examples']} examples; "
              + ", ".join(f"{k} {v:.4f}" for k, v in p["missing_modalities"].items()))
        if "tasks" in p:
            print("[evaluate]   heads: " + ", ".join(
                f"{k} ({t['target']}) {t['accuracy']:.4f}" for k, t in p["tasks"].items()))
        if args.robustness:
            import json

            r = json.loads(pathlib.Path(p["robustness"]).read_text())
            for section in ("missing", "noise"):
                for key, c in r[section].items():
                    eff = c["effective_robustness"]
                    print(f"[evaluate]   {section} {key}: accuracy "
                          f"{' '.join(f'{a:.3f}' for a in c['accuracy'])}  relative "
                          f"{c['relative_robustness']:.4f}"
                          + (f"  effective {eff:+.4f}" if eff is not None else ""))
    if len(payloads) > 1:
        print("\n" + missing_table(payloads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
