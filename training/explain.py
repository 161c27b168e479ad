"""Explain one prediction of a trained multi-input model directory.

    python -m training.explain --model-dir DIR --index K [--split test] [--out DIR/explain/K]

writes into the output directory (default `DIR/explain/<split>-<K>/`):

    report.html                  everything below on one page
    explain.json                 the numbers (prediction, attributions, contributions)
    input_<m>.png                the example's inputs
    saliency_image.png           vanilla saliency of the image (tf-keras-vis `Saliency`)
    gradcam_plus_plus_image.png  Grad-CAM++ of the image encoder's last convolution
                                 (tf-keras-vis `GradcamPlusPlus`, `expand_cam=False`, resized
                                 bilinearly to the image)
    integrated_gradients_<m>.png integrated gradients of each modality (baseline zeros)
    modality_contributions.png   integrated-gradient totals per modality, and the target
                                 probability with each modality removed via its presence flag

The explained class is the predicted one (`--target label` for the true label, or a class id).
A multi-label model explains one label's probability (the most probable; `--target label`: the
example's first true label); a regression model explains its value (the ablation then shows
the value, not a probability, with each modality removed).
"""

import argparse
import html
import pathlib
import sys

import numpy as np

from mmkeras import errors
from mmkeras import features
from mmkeras.explain import flatten_model
from mmkeras.explain import image_gradcam_plus_plus
from mmkeras.explain import image_saliency
from mmkeras.explain import integrated_gradients
from mmkeras.explain import presence_ablation
from mmkeras.explain.attribution import present_modalities
from mmkeras.explain.robustness import modalities_of
from mmkeras.models import heads
from mmkeras.model_dir import load_model_dir
from mmkeras.model_dir import write_json
from training.evaluate import load_examples


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path):
    plt = _plt()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path.name


def _show_input(ax, value, title):
    value = np.asarray(value)
    if value.ndim == 3:
        ax.imshow(value[..., 0] if value.shape[-1] == 1 else value, cmap="gray", vmin=0, vmax=1)
        ax.axis("off")
    else:
        ax.plot(value.reshape(-1), linewidth=0.5)
        ax.set_xlabel("sample")
    ax.set_title(title, fontsize=9)


def plot_input(value, title, path):
    fig, ax = _plt().subplots(figsize=(3.2, 3.0) if np.ndim(value) == 3 else (6, 2.2))
    _show_input(ax, value, title)
    return _save(fig, path)


def plot_map_over_image(image, heat, title, path):
    fig, ax = _plt().subplots(figsize=(4.0, 3.4))
    ax.imshow(np.asarray(image)[..., 0], cmap="gray", vmin=0, vmax=1)
    shown = ax.imshow(heat, cmap="jet", alpha=0.5, vmin=0, vmax=1)
    fig.colorbar(shown, ax=ax, fraction=0.046)
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    return _save(fig, path)


def plot_attribution(value, attribution, title, path):
    value, attribution = np.asarray(value), np.asarray(attribution)
    if value.ndim == 3:
        fig, axes = _plt().subplots(1, 2, figsize=(6.2, 3.0))
        _show_input(axes[0], value, "input")
        a = attribution.sum(axis=-1)
        bound = max(np.abs(a).max(), 1e-12)
        shown = axes[1].imshow(a, cmap="bwr", vmin=-bound, vmax=bound)
        fig.colorbar(shown, ax=axes[1], fraction=0.046)
        axes[1].set_title(title, fontsize=9)
        axes[1].axis("off")
    else:
        fig, axes = _plt().subplots(2, 1, figsize=(6, 3.6), sharex=True)
        _show_input(axes[0], value, "input")
        axes[1].plot(attribution.reshape(-1), linewidth=0.5, color="tab:red")
        axes[1].set_title(title, fontsize=9)
        axes[1].set_xlabel("sample")
    return _save(fig, path)


def example_label(y, kind):
    """An example's label as the report shows it: the class id, the list of true label ids
    (multi-label) or the value (regression)."""
    y = np.asarray(y)
    if kind == "regression":
        return float(y.reshape(-1)[0])
    if kind == "multilabel":
        return np.flatnonzero(y >= 0.5).tolist()
    return int(y)


def plot_contributions(ig_totals, ablation, what, path, probability=True):
    names = sorted(ig_totals)
    fig, axes = _plt().subplots(1, 2, figsize=(7.5, 3.0))
    axes[0].bar(names, [ig_totals[m] for m in names], color="tab:purple")
    axes[0].axhline(0, color="black", linewidth=0.5)
    axes[0].set_title("integrated gradients, total per modality", fontsize=9)
    labels = ["all present"] + [f"without {m}" for m in names] + [f"only {m}" for m in names]
    values = ([ablation["all_present"]] + [ablation["without"][m] for m in names]
              + [ablation["only"][m] for m in names])
    axes[1].barh(labels, values, color="tab:blue")
    if probability:
        axes[1].set_xlim(0, 1)
        what = f"p({what})"
    axes[1].set_title(f"{what} with modalities removed", fontsize=9)
    return _save(fig, path)


def _table(rows):
    cells = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table>{cells}</table>"


def write_report(out, summary, figures):
    """`report.html`: the summary tables and every figure (relative links)."""
    probs = summary["probabilities"]
    top = sorted(range(len(probs)), key=lambda c: -probs[c])[:3]
    ig, ablation = summary["integrated_gradients"], summary["presence_ablation"]
    sections = [
        f"<h1>{html.escape(summary['experiment'])}: {summary['split']} example "
        f"{summary['index']}</h1>",
        _table([
            ["label", summary["label"]],
            ["predicted", f"{summary['predicted']} (p = {probs[summary['predicted']]:.3f})"],
            ["explained class", summary["target"]],
            ["top 3", ", ".join(f"{c}: {probs[c]:.3f}" for c in top)],
            ["present", ", ".join(summary["present_modalities"]) or "none"],
        ]),
        "<h2>Modality contributions</h2>",
        _table([["modality", "integrated gradients total", f"p({summary['target']}) without",
                 f"p({summary['target']}) alone", "drop when removed"]]
               + [[m, f"{ig['totals'][m]:+.4f}", f"{ablation['without'][m]:.4f}",
                   f"{ablation['only'][m]:.4f}", f"{ablation['contribution'][m]:+.4f}"]
                  for m in sorted(ig["totals"])]),
        f"<p>Integrated gradients ({ig['steps']} path points, zero baseline): p(x) = "
        f"{ig['prediction']:.4f}, p(baseline) = {ig['baseline_prediction']:.4f}, completeness "
        f"error {ig['completeness_error']:.2e}.</p>",
    ]
    for title, name in figures:
        sections.append(f"<h3>{html.escape(title)}</h3><img src='{name}'>")
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>explanation</title>"
            "<style>body{font-family:sans-serif;margin:2em}td{border:1px solid #ccc;"
            "padding:2px 8px}table{border-collapse:collapse}</style></head><body>"
            + "\n".join(sections) + "</body></html>")
    (out / "report.html").write_text(page)


def explain(model_dir, index, out=None, split="test", target="predicted", steps=64):
    """Explains example `index` of `split`; returns the summary dict (and writes the files)."""
    model_dir = pathlib.Path(model_dir)
    out = pathlib.Path(out) if out else model_dir / "explain" / f"{split}-{index}"
    out.mkdir(parents=True, exist_ok=True)
    config, model = load_model_dir(model_dir)
    x, y = load_examples(config, split, max_examples=1, start=index, model_dir=model_dir)
    probabilities = np.asarray(model(x, training=False))[0]
    predicted = int(probabilities.argmax())  # regression: 0, the value's output
    kind = heads.target_of_model(model)
    label = example_label(y[0], kind)
    if target == "predicted":
        target = predicted
    elif target == "label":
        if kind == "multilabel":  # the first true label (the prediction when it has none)
            target = label[0] if label else predicted
        else:
            target = 0 if kind == "regression" else label
    else:
        target = int(target)
        if not 0 <= target < len(probabilities):
            raise ValueError(f"--target {target} is not a class of this model "
                             f"(0..{len(probabilities) - 1}).")
    modalities = modalities_of(x)
    figures = [(f"input: {m}", plot_input(x[m][0], f"{m} (label {label})",
                                          out / f"input_{m}.png")) for m in modalities]

    summary = {"experiment": config.name, "model_dir": str(model_dir), "split": split,
               "index": int(index), "model_target": kind, "label": label,
               "predicted": predicted, "target": target,
               "probabilities": probabilities.tolist(),
               "present_modalities": present_modalities(x)}
    what = "the value" if kind == "regression" else f"class {target}"

    images = features.of_type(modalities, features.IMAGE, config.data.modality_types)
    flat = flatten_model(model) if images else None
    for m in images:  # every image feature (`image`, or `front` and `back`)
        saliency = image_saliency(flat, x, target, modality=m)[0]
        cam, layer = image_gradcam_plus_plus(flat, x, target, modality=m)
        image = x[m][0]
        figures.append((f"saliency ({m})", plot_map_over_image(
            image, saliency, f"saliency, {what}", out / f"saliency_{m}.png")))
        figures.append((f"Grad-CAM++ ({m}, layer {layer})", plot_map_over_image(
            image, cam[0], f"Grad-CAM++ {layer}, {what}",
            out / f"gradcam_plus_plus_{m}.png")))
        summary.setdefault("gradcam_layer", layer)  # the first image feature's
        summary.setdefault("gradcam_layers", {})[m] = layer

    ig = integrated_gradients(model, x, target, steps=steps)
    for m in modalities:
        figures.append((f"integrated gradients: {m}", plot_attribution(
            x[m][0], ig["attributions"][m], f"integrated gradients, {what} "
            f"(total {ig['totals'][m]:+.3f})", out / f"integrated_gradients_{m}.png")))
    ablation = presence_ablation(model, x, target)
    figures.append(("modality contributions", plot_contributions(
        ig["totals"], ablation, what, out / "modality_contributions.png",
        probability=kind != "regression")))
    summary["integrated_gradients"] = {k: v for k, v in ig.items() if k != "attributions"}
    summary["integrated_gradients"]["steps"] = steps
    summary["presence_ablation"] = ablation
    summary["files"] = sorted([name for _, name in figures] + ["report.html", "explain.json"])
    write_report(out, summary, figures)
    write_json(out / "explain.json", summary)
    return summary, out


@errors.command_line
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--index", type=int, required=True, help="row of the split (from 0)")
    parser.add_argument("--split", default="test", choices=("train", "validation", "test"))
    parser.add_argument("--out", default=None, help="default: DIR/explain/<split>-<index>")
    parser.add_argument("--target", default="predicted",
                        help="'predicted' (default), 'label' or a class id")
    parser.add_argument("--steps", type=int, default=64, help="integrated-gradients path points")
    errors.add_flags(parser)
    args = parser.parse_args(argv)
    try:
        summary, out = explain(args.model_dir, args.index, args.out, args.split, args.target,
                               args.steps)
    except (IndexError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    ig = summary["integrated_gradients"]
    print(f"[explain] {summary['experiment']} {args.split}[{args.index}]: label "
          f"{summary['label']}, predicted {summary['predicted']} "
          f"(p={summary['probabilities'][summary['predicted']]:.3f}); explained class "
          f"{summary['target']}; IG totals "
          + ", ".join(f"{m} {v:+.4f}" for m, v in sorted(ig["totals"].items()))
          + "; drop when removed "
          + ", ".join(f"{m} {v:+.4f}" for m, v in
                      sorted(summary["presence_ablation"]["contribution"].items()))
          + f" -> {out / 'report.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
