"""Audio-video synchronisation: `mmkeras.models.AVSyncModel` on `mmkeras.datasets.av_sync`.

    python -m training.train --config training/configs/av_sync/av_sync.yaml \
        --model-dir runs/av_sync/av_sync [--set trainer.epochs=3 --set runtime.cpu_replicas=2]

Data: real FSDD spoken digits on a timeline with silent gaps and real MNIST digits timed to
the words (`av_sync.visual: hold`: each word's digit from its onset until the next word's,
with a per-word visual lag of up to `av_sync.jitter_frames`; `blank`: only while the word is
spoken), prepared on first use unless `data.data_dir` names it. Every epoch each training
example gets a fresh shift of its audio against its frames, uniform over
`-max_offset..max_offset` frames (`mmkeras.data.av_sync_pipeline`); validation uses one fixed
shift per example (`av_sync.validation_seed`). The model is trained with the cross-entropy
over the candidate offsets: the in-sync pairing against the shifted negatives of the same
example. The best checkpoint follows the validation loss (see `AVSyncTask.monitor`).

`report.json` holds, beside the driver's common fields, on the test split with every example
evaluated at every offset (`examples x (2 * max_offset + 1)`, so the offsets are balanced):
`offset` and `sync` (`mmkeras.metrics.av_sync.offset_figures` / `sync_figures`) of the model
and of two rules with nothing learned, `energy_baseline` and `frame_difference_baseline`
(`mmkeras.metrics.av_sync`; their sync score is the correlation at offset 0 minus the best
other one).
"""

import dataclasses
import pathlib
import time

import keras
import numpy as np

from mmkeras.data.av_sync_pipeline import OFFSET_LOGITS
from mmkeras.data.av_sync_pipeline import SYNC_LOGIT
from mmkeras.data.av_sync_pipeline import crop_window
from mmkeras.data.av_sync_pipeline import make_av_sync_dataset
from mmkeras.datasets import av_sync
from mmkeras.metrics import av_sync as av_sync_metrics
from mmkeras.models.av_sync_model import AVSyncModel
from training import report as report_lib
from training import runtime
from training.tasks.base import recipe_hparams
from training.tasks.base import Task
from training.tasks.registry import register

SPLITS = ("train", "validation", "test")
BASELINE_LABELS = {"energy_baseline": "energy baseline",
                   "frame_difference_baseline": "frame-difference baseline"}


@dataclasses.dataclass
class AVSyncData:
    """The three splits in memory (`mmkeras.datasets.av_sync.load_split` dicts)."""

    dataset_dir: pathlib.Path
    splits: dict
    validation_shifts: np.ndarray

    @property
    def meta(self):
        return self.splits["train"]["meta"]

    @property
    def recipe(self):
        return self.meta["recipe"]

    def size(self, split):
        return int(len(self.splits[split]["audio"]))


def dataset_dir_of(config):
    """`data.data_dir`, else the dataset of the `av_sync` recipe (prepared if missing)."""
    if config.data.data_dir:
        return pathlib.Path(config.data.data_dir)
    s = config.av_sync
    return av_sync.prepare(
        train=s.train_examples, validation=s.validation_examples, test=s.test_examples,
        duration=s.duration, fps=s.fps, margin_frames=s.margin_frames, noise_std=s.noise_std,
        visual=s.visual, jitter_frames=s.jitter_frames, seed=config.data.seed,
        data_root=config.data.data_root,
    )


def build_av_sync_model(config, recipe):
    s = config.av_sync
    return AVSyncModel(
        frames=recipe["frames"], frame_size=recipe["image_size"],
        frame_samples=recipe["frame_samples"], max_offset=s.max_offset,
        sample_rate=recipe["sample_rate"], video_filters=s.video_filters,
        frame_units=s.frame_units, audio_filters=s.audio_filters, fft_length=s.fft_length,
        mel_hop=s.mel_hop, num_mel_bins=s.num_mel_bins, embedding_dim=s.embedding_dim,
        temporal_kernel=s.temporal_kernel, temperature=s.temperature, name=config.model.name,
    )


class CPUClock(keras.callbacks.Callback):
    """CPU seconds of this process over `fit` (`fit_cpu_seconds` of the report: on shared
    cores the wall time says little about the work done)."""

    def __init__(self):
        super().__init__()
        self.seconds = None
        self._start = None

    def on_train_begin(self, logs=None):
        self._start = time.process_time()

    def on_train_end(self, logs=None):
        self.seconds = time.process_time() - self._start


def _features_only(x, y):
    return x


def evaluate_offsets(model, test_arrays, max_offset, batch_size):
    """Every test example at every offset: the model's and the baselines' figures."""
    recipe = test_arrays["meta"]["recipe"]
    n = len(test_arrays["audio"])
    geometry = dict(frames=recipe["frames"], margin_frames=recipe["margin_frames"],
                    max_offset=max_offset, frame_samples=recipe["frame_samples"])
    offsets = list(range(-max_offset, max_offset + 1))
    # One pass over every (example, offset) pair.
    ds = make_av_sync_dataset(test_arrays, max_offset=max_offset, batch_size=batch_size,
                              rows=np.tile(np.arange(n), len(offsets)),
                              shifts=np.repeat(np.array(offsets, np.int32), n))
    out = model.predict(ds.map(_features_only), verbose=0)
    all_logits = np.asarray(out[OFFSET_LOGITS]).reshape(len(offsets), n, -1)
    all_sync = np.asarray(out[SYNC_LOGIT]).reshape(len(offsets), n)
    logits, sync = {}, {}
    base_logits = {name: {} for name in av_sync_metrics.BASELINES}
    base_sync = {name: {} for name in av_sync_metrics.BASELINES}
    for i, shift in enumerate(offsets):
        logits[shift], sync[shift] = all_logits[i], all_sync[i]
        windows = crop_window(test_arrays["audio"], shift, **geometry).astype(np.float64) / 32768.0
        for name, rule in av_sync_metrics.BASELINES.items():
            base = rule(windows, test_arrays["frames"], max_offset, recipe["frame_samples"])
            base_logits[name][shift] = base
            base_sync[name][shift] = av_sync_metrics.baseline_sync_scores(base, max_offset)
    figures = {
        "offset": av_sync_metrics.offset_figures(logits, max_offset),
        "sync": av_sync_metrics.sync_figures(sync, logits, max_offset, threshold=0.0),
    }
    for name in av_sync_metrics.BASELINES:
        figures[name] = {
            "offset": av_sync_metrics.offset_figures(base_logits[name], max_offset),
            "sync": av_sync_metrics.sync_figures(base_sync[name], base_logits[name], max_offset,
                                                 threshold=None),
        }
    return figures


def figure_lines(report):
    """The human-readable lines of the test figures."""
    o, y = report["offset"], report["sync"]
    d = report["dataset"]
    lines = [
        f"dataset: visual {d.get('visual', 'blank')}, jitter {d.get('jitter_frames', 0.0)} "
        f"frame ({d['dir']})",
        f"test: {report['test_examples']} examples x {len(o['offsets'])} offsets = "
        f"{o['evaluations']} evaluations ({report['frame_ms']:.0f} ms a frame)",
        f"offset accuracy: exact {o['exact_accuracy']:.4f} (chance {o['chance_exact']:.4f}), "
        f"within +-1 frame {o['within_1_accuracy']:.4f} (chance {o['chance_within_1']:.4f}), "
        f"mean abs error {o['mean_abs_error_frames']:.3f} frames",
        "per-offset exact accuracy: " + " ".join(
            f"{k}:{v:.3f}" for k, v in o["per_offset_exact_accuracy"].items()),
        f"sync: AUC {y['auc']:.4f} (chance 0.5); balanced accuracy at logit 0 "
        f"{y['balanced_accuracy']:.4f} (TPR {y['true_positive_rate']:.4f}, TNR "
        f"{y['true_negative_rate']:.4f}; chance 0.5); argmax-is-0 balanced accuracy "
        f"{y['argmax_balanced_accuracy']:.4f}",
        "sync AUC by |offset| of the negatives: " + " ".join(
            f"{k}:{v:.4f}" for k, v in y["auc_by_abs_offset"].items()),
        *(f"{label} (nothing learned): offset exact "
          f"{report[key]['offset']['exact_accuracy']:.4f}, within +-1 "
          f"{report[key]['offset']['within_1_accuracy']:.4f}, sync AUC "
          f"{report[key]['sync']['auc']:.4f}"
          for key, label in BASELINE_LABELS.items() if key in report),
        "confusion (rows true offset, columns predicted):",
    ]
    for s, row in zip(o["offsets"], o["confusion_matrix"]):
        lines.append(f"  {s:+d}: " + " ".join(f"{c:4d}" for c in row))
    return lines


@register
class AVSyncTask(Task):
    """SyncNet-style offset classification over `-max_offset..max_offset` frames."""

    name = "av_sync"

    def load_data(self, config, model_dir, evaluate_only=False):
        # Nothing is fitted on the data (the recipe fixes everything), so evaluate-only reads
        # the same splits.
        s = config.av_sync
        dataset_dir = dataset_dir_of(config)
        splits = {split: av_sync.load_split(dataset_dir, split, config.data.max_examples)
                  for split in SPLITS}
        n_val = len(splits["validation"]["audio"])
        shifts = np.random.default_rng(s.validation_seed).integers(
            -s.max_offset, s.max_offset + 1, size=n_val)
        return AVSyncData(dataset_dir=pathlib.Path(dataset_dir), splits=splits,
                          validation_shifts=shifts)

    def save_data_state(self, data, model_dir):
        pass  # nothing fitted

    def fit_datasets(self, config, data):
        s = config.av_sync
        train_ds = make_av_sync_dataset(
            data.splits["train"], max_offset=s.max_offset, batch_size=config.data.batch_size,
            training=True, seed=config.trainer.seed, shuffle_buffer=config.data.shuffle_buffer)
        val_ds = make_av_sync_dataset(
            data.splits["validation"], max_offset=s.max_offset,
            batch_size=config.data.batch_size, shifts=data.validation_shifts)
        return train_ds, val_ds

    def build_model(self, config, data, strategy):
        model = build_av_sync_model(config, data.recipe)
        model.compile(
            optimizer=self.optimizer(config, data, strategy, model),
            loss={OFFSET_LOGITS: keras.losses.SparseCategoricalCrossentropy(from_logits=True)},
            metrics={
                OFFSET_LOGITS: [keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                SYNC_LOGIT: [keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy")],
            },
            jit_compile=runtime.resolve_jit_compile(config.runtime, strategy),
        )
        return model

    def callbacks(self, config, model_dir, data, model, val_ds):
        self.cpu_clock = CPUClock()
        return [], [self.cpu_clock]

    def monitor(self, config):
        # The validation cross-entropy over offsets: the training objective, and continuous,
        # where the offset accuracy of 500 validation examples (one fixed shift each) moves in
        # steps of 0.2% and ties across late epochs.
        return "val_loss", "min"

    def hparams(self, config):
        s = config.av_sync
        return {
            "task": config.task,
            "av_sync.visual": s.visual,
            "av_sync.jitter_frames": s.jitter_frames,
            "av_sync.max_offset": s.max_offset,
            "av_sync.embedding_dim": s.embedding_dim,
            **recipe_hparams(config),
            "runtime.cpu_replicas": config.runtime.cpu_replicas,
        }

    def data_size(self, data, split):
        return data.size(split)

    def data_problems(self, data):
        # `av_sync.load_split` stops at the first unreadable file (named with its manifest
        # row), so a loaded split skipped nothing.
        return {split: {"rows": data.size(split), "skipped": 0} for split in SPLITS}

    def dataset_summary(self, data):
        meta, recipe = data.meta, data.recipe
        return {
            "dir": str(data.dataset_dir),
            "name": meta.get("name"),
            "recipe_version": meta.get("recipe_version"),
            "visual": recipe.get("visual", "blank"),
            "jitter_frames": recipe.get("jitter_frames", 0.0),
            "checksum": meta.get("checksum"),
            "counts": meta.get("counts"),
        }

    def evaluate(self, config, model_dir, model, data, strategy):
        s = config.av_sync
        start = time.time()
        figures = evaluate_offsets(model, data.splits["test"], s.max_offset,
                                   config.data.batch_size)
        history = report_lib.read_history(pathlib.Path(model_dir) / "history.csv")
        result = {
            "test_examples": data.size("test"),
            "max_offset_frames": s.max_offset,
            "frame_ms": 1000.0 / data.recipe["fps"],
            "offset_convention": "offset s > 0: the audio is s frames late against the video",
            **figures,
            "final_epoch": {k: float(v[-1]) for k, v in history.items() if v and k != "epoch"},
            "eval_seconds": round(time.time() - start, 1),
        }
        clock = getattr(self, "cpu_clock", None)
        if clock is not None and clock.seconds is not None:
            result["fit_cpu_seconds"] = round(clock.seconds, 1)
        for line in figure_lines({**result, "dataset": self.dataset_summary(data)}):
            print(line)
        return result

    def plots(self, report, model_dir, config):
        """The learning curves again with the offset accuracy in the accuracy panel (the
        driver's panel reads `accuracy`, which a two-output model does not log)."""
        model_dir = pathlib.Path(model_dir)
        history = report_lib.read_history(model_dir / "history.csv")
        for prefix in ("", "val_"):
            key = f"{prefix}{OFFSET_LOGITS}_accuracy"
            if key in history:
                history[f"{prefix}accuracy"] = history[key]
        report_lib.plot_learning_curves(history, model_dir / "learning_curves.png",
                                        f"{config.name} (accuracy: of the offset)")

    def summary_lines(self, report):
        o, y = report["offset"], report["sync"]
        return [f"offset exact {o['exact_accuracy']:.4f} (chance {o['chance_exact']:.4f}), "
                f"within +-1 {o['within_1_accuracy']:.4f}, sync AUC {y['auc']:.4f}"]
