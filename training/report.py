"""Evaluation figures and plots: accuracy, per-class accuracy, confusion matrix, curves;
multi-label (micro / macro F1, per-label AUC) and regression (MAE, RMSE, R²) figures."""

import csv
import os
import pathlib

import numpy as np
from sklearn.metrics import f1_score

from mmkeras import model_dir as model_dir_lib


def classification_metrics(probabilities, labels, num_classes):
    """Accuracy, cross-entropy, macro-F1, ROC AUC (binary; mean one-vs-rest for more
    classes), per-class accuracy and the confusion matrix."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    predicted = probabilities.argmax(axis=-1)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    per_class = {
        str(c): (float(confusion[c, c] / confusion[c].sum()) if confusion[c].sum() else None)
        for c in range(num_classes)
    }
    picked = probabilities[np.arange(len(labels)), labels]
    # Macro-F1 over the classes in the labels or the predictions (scikit-learn's default set).
    macro_f1 = (float(f1_score(labels, predicted, average="macro", zero_division=0))
                if len(labels) else None)
    # ROC AUC: of class 1 for two classes; else the mean one-vs-rest AUC over the classes with
    # both positives and negatives among the labels.
    if num_classes == 2:
        auc = binary_auc(probabilities[:, 1], labels == 1)
    else:
        aucs = [binary_auc(probabilities[:, c], labels == c) for c in range(num_classes)]
        aucs = [a for a in aucs if a is not None]
        auc = float(np.mean(aucs)) if aucs else None
    return {
        "accuracy": float((predicted == labels).mean()) if len(labels) else float("nan"),
        "loss": float(-np.log(np.clip(picked, 1e-7, 1.0)).mean()) if len(labels) else float("nan"),
        "macro_f1": macro_f1,
        "auc": auc,
        "examples": int(len(labels)),
        "per_class_accuracy": per_class,
        "confusion_matrix": confusion.tolist(),
    }


def binary_auc(scores, labels):
    """ROC AUC of `scores` for 0/1 `labels` (Mann-Whitney, ties counted half); None when
    only one class is present."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels) > 0.5
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if not positives or not negatives:
        return None
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):  # average ranks over ties
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[labels].sum() - positives * (positives + 1) / 2)
                 / (positives * negatives))


def _f1(tp, fp, fn):
    return float(2 * tp / (2 * tp + fp + fn)) if (2 * tp + fp + fn) else None


def multilabel_metrics(probabilities, labels, label_names=None, threshold=0.5):
    """Multi-label figures of sigmoid `probabilities` against multi-hot `labels` `(n, k)`.

    `micro_f1` pools every (example, label) decision (`probability >= threshold`);
    `macro_f1` averages the per-label F1 over labels with any positive or predicted example;
    `subset_accuracy` counts examples whose whole label set is right; `loss` is the mean
    binary cross-entropy; `per_label` has each label's F1, AUC (None with one class only)
    and support.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64) > 0.5
    names = label_names or [str(i) for i in range(probabilities.shape[-1])]
    predicted = probabilities >= threshold
    tp = (predicted & labels).sum(axis=0)
    fp = (predicted & ~labels).sum(axis=0)
    fn = (~predicted & labels).sum(axis=0)
    per_label = {
        name: {"f1": _f1(tp[j], fp[j], fn[j]),
               "auc": binary_auc(probabilities[:, j], labels[:, j]),
               "support": int(labels[:, j].sum())}
        for j, name in enumerate(names)
    }
    f1s = [v["f1"] for v in per_label.values() if v["f1"] is not None]
    aucs = [v["auc"] for v in per_label.values() if v["auc"] is not None]
    p = np.clip(probabilities, 1e-7, 1 - 1e-7)
    n = len(labels)
    return {
        "micro_f1": _f1(tp.sum(), fp.sum(), fn.sum()),
        "macro_f1": float(np.mean(f1s)) if f1s else None,
        "macro_auc": float(np.mean(aucs)) if aucs else None,
        "subset_accuracy": float((predicted == labels).all(axis=1).mean()) if n else float("nan"),
        "loss": float(-(labels * np.log(p) + ~labels * np.log(1 - p)).mean()) if n
        else float("nan"),
        "threshold": threshold,
        "examples": int(n),
        "per_label": per_label,
    }


def regression_metrics(values, targets):
    """MAE, RMSE, R² (1 - residual / total sum of squares; None for constant targets) and the
    mean squared error as `loss`, of predicted `values` against `targets` (real units)."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    targets = np.asarray(targets, dtype=np.float64).reshape(-1)
    if not len(targets):
        return {"mae": float("nan"), "rmse": float("nan"), "r2": None, "loss": float("nan"),
                "examples": 0}
    errors = values - targets
    mse = float((errors ** 2).mean())
    total = float(((targets - targets.mean()) ** 2).sum())
    return {
        "mae": float(np.abs(errors).mean()),
        "rmse": float(np.sqrt(mse)),
        "r2": float(1 - (errors ** 2).sum() / total) if total > 0 else None,
        "loss": mse,
        "examples": int(len(targets)),
    }


write_json = model_dir_lib.write_json  # kept here for the callers of `training.report`


def _history_rows(csv_path):
    """`(header, rows)` of a CSVLogger file: one row per epoch (the last one written wins),
    sorted by epoch; rows torn by a kill (missing or extra fields, no epoch) are dropped."""
    path = pathlib.Path(csv_path)
    if not path.is_file():
        return [], []
    with open(path, newline="") as f:
        lines = list(csv.reader(f))
    if not lines:
        return [], []
    header, by_epoch = lines[0], {}
    if "epoch" not in header:
        return header, []
    at = header.index("epoch")
    for line in lines[1:]:
        if len(line) != len(header):
            continue
        try:
            epoch = int(float(line[at]))
        except ValueError:
            continue
        by_epoch[epoch] = line
    return header, [by_epoch[e] for e in sorted(by_epoch)]


def read_history(csv_path):
    """Per-epoch metrics of a `history.csv`: `{column: [value per epoch]}`, in epoch order.

    A run resumed after a kill may have appended an epoch twice (the row is written before the
    backup of that epoch is committed): the last row of each epoch wins, so every epoch appears
    once. Values that are not numbers are NaN; columns with no number at all are left out.
    """
    header, rows = _history_rows(csv_path)
    history = {}
    for i, key in enumerate(header):
        values = []
        for row in rows:
            try:
                values.append(float(row[i]))
            except ValueError:
                values.append(float("nan"))
        if rows and not all(np.isnan(values)):
            history[key] = values
    return history


def truncate_history(csv_path, epochs_done):
    """Rewrites `history.csv` (atomically) to the rows of epochs `< epochs_done`, once each.

    Called when a run resumes from a backup of `epochs_done` epochs: rows of later epochs were
    written by the killed run after its last backup and will be trained again; a torn last line
    is dropped too, so new rows start on a clean line.
    """
    path = pathlib.Path(csv_path)
    header, rows = _history_rows(path)
    if not header:
        return
    at = header.index("epoch") if "epoch" in header else None
    kept = [r for r in rows if at is not None and int(float(r[at])) < epochs_done]
    with model_dir_lib.atomic_file(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(kept)
            f.flush()
            os.fsync(f.fileno())


def _save_figure(fig, path):
    """`fig.savefig` to a temp file, then rename: a kill never leaves a half-written image."""
    path = pathlib.Path(path)
    with model_dir_lib.atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=100, format=path.suffix.lstrip(".") or "png")


def plot_learning_curves(history, path, title=""):
    """One panel per logged metric (loss first, then e.g. accuracy or temperature), training
    and validation curves together."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [int(e) + 1 for e in history.get("epoch", [])]
    metrics = [k for k in history if k not in ("epoch", "learning_rate")
               and not k.startswith("val_")]
    metrics = sorted(metrics, key=lambda k: (k != "loss", k))[:4] or ["loss"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.5), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for prefix, style in [("", "-"), ("val_", "--")]:
            values = history.get(prefix + metric)
            if values:
                ax.plot(epochs[: len(values)], values, style, marker="o", label=prefix + metric)
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    _save_figure(fig, path)
    plt.close(fig)


def plot_confusion_matrix(confusion, path, title=""):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    confusion = np.asarray(confusion)
    fig, ax = plt.subplots(figsize=(5, 4.5))
    image = ax.imshow(confusion, cmap="Blues")
    n = confusion.shape[0]
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if confusion[i, j] > confusion.max() / 2 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    _save_figure(fig, path)
    plt.close(fig)
