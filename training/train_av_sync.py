"""Train an audio-video synchronisation model; report offset and in-sync accuracy on the test split.

    python -m training.train_av_sync --config training/configs/av_sync/av_sync.yaml \
        --model-dir runs/av_sync/av_sync [--set trainer.epochs=3 --set runtime.cpu_replicas=2]

Data: `mmkeras.datasets.av_sync` (real FSDD spoken digits on a timeline with silent gaps,
and real MNIST digits timed to the words: `av_sync.visual: hold`, the default config's, shows
each word's digit from its onset until the next word's, never blank, with a per-word visual
lag of up to `av_sync.jitter_frames`; `blank` shows it only while the word is spoken),
prepared on first use. Every epoch
each training example gets a fresh shift of its audio against its frames, uniform over
`-max_offset..max_offset` frames (`mmkeras.data.av_sync_pipeline`); the model
(`mmkeras.models.AVSyncModel`) is trained with the cross-entropy over the candidate offsets:
the in-sync pairing against the shifted negatives of the same example. Under
`MirroredStrategy` (`runtime.cpu_replicas` logical CPUs, or the GPUs) Keras splits each
global batch across the replicas.

The model directory receives:

    DIR/config.yaml    the resolved config          DIR/model.keras   the trained model
    DIR/history.csv    per-epoch loss/accuracies     DIR/report.json   the figures below

`report.json` holds, on the test split, every example evaluated at every offset
(`examples x (2 * max_offset + 1)` evaluations, so the offsets are balanced):
- `offset`: exact and within-one-frame accuracy of the predicted offset (argmax of the offset
  logits) beside chance (uniform guessing: `1 / (2S + 1)` and `(3(2S + 1) - 2) / (2S + 1)^2`),
  accuracy per true offset and the confusion matrix (rows: true offset, columns: predicted);
- `sync`: in sync (offset 0) against every shifted negative: ROC AUC of the sync logit (and
  against the negatives of each |offset|), balanced accuracy at the logit's threshold 0 and of
  "predicted offset is 0", each beside chance 0.5;
- `energy_baseline`: the same figures for a rule with nothing learned: correlate the mean
  brightness of each frame with the audio's log energy over the frame at each candidate
  offset and take the best; it measures how much of the task "picture on while sound on"
  solves (most of the `blank` recipe, little of `hold`);
- `frame_difference_baseline`: the same for a second rule with nothing learned: correlate the
  mean absolute change of each frame from the previous one with the rise of the audio's log
  energy into that frame (`max(0, e_t - e_{t-1})`) at each candidate offset and take the best;
  it measures how much of the task onset timing alone solves (a `hold` picture changes at
  word onsets).
Both baselines' sync scores are the correlation at offset 0 minus the best other one.
"""

import pathlib
import sys
import time

from mmkeras import errors


def parse_args(argv=None):
    from training.cli import experiment_parser

    parser = experiment_parser(__doc__)
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# Figures (numpy).


def roc_auc(positive_scores, negative_scores):
    """Area under the ROC curve (Mann-Whitney U; ties count one half)."""
    import numpy as np

    pos = np.asarray(positive_scores, np.float64)
    neg = np.asarray(negative_scores, np.float64)
    scores = np.concatenate([pos, neg])
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # Average ranks over ties.
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(average, counts)
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2.0
    return float(u / (len(pos) * len(neg)))


def offset_figures(offset_logits, max_offset):
    """Figures of `offset_logits[s]`: `(n, 2S + 1)` logits of the n examples shifted by s."""
    import numpy as np

    offsets = list(range(-max_offset, max_offset + 1))
    k = len(offsets)
    true = np.concatenate([np.full(len(offset_logits[s]), s) for s in offsets])
    pred = np.concatenate([np.argmax(offset_logits[s], axis=-1) - max_offset for s in offsets])
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (true + max_offset, pred + max_offset), 1)
    return {
        "evaluations": int(len(true)),
        "exact_accuracy": float(np.mean(pred == true)),
        "within_1_accuracy": float(np.mean(np.abs(pred - true) <= 1)),
        "chance_exact": 1.0 / k,
        "chance_within_1": (3 * k - 2) / k ** 2,
        "mean_abs_error_frames": float(np.mean(np.abs(pred - true))),
        "per_offset_exact_accuracy": {
            str(s): float(confusion[i, i] / max(1, confusion[i].sum())) for i, s in enumerate(offsets)
        },
        "offsets": offsets,
        "confusion_matrix": confusion.tolist(),
    }


def sync_figures(sync_scores, offset_logits, max_offset, threshold=0.0):
    """In-sync (offset 0) vs shifted figures of `sync_scores[s]` (n,) per shift s."""
    import numpy as np

    pos = np.asarray(sync_scores[0])
    negatives = {s: np.asarray(v) for s, v in sync_scores.items() if s != 0}
    neg = np.concatenate(list(negatives.values()))
    argmax_pos = np.argmax(offset_logits[0], -1) == max_offset
    argmax_neg = np.concatenate(
        [np.argmax(offset_logits[s], -1) != max_offset for s in negatives])
    figures = {
        "positives": int(len(pos)),
        "negatives": int(len(neg)),
        "auc": roc_auc(pos, neg),
        "auc_by_abs_offset": {
            str(d): roc_auc(pos, np.concatenate([negatives[d], negatives[-d]]))
            for d in range(1, max_offset + 1)
        },
        "chance_auc": 0.5,
        "chance_balanced_accuracy": 0.5,
        "argmax_balanced_accuracy": float((argmax_pos.mean() + argmax_neg.mean()) / 2),
    }
    if threshold is not None:
        tpr = float(np.mean(pos > threshold))
        tnr = float(np.mean(neg <= threshold))
        figures.update({"threshold": threshold, "true_positive_rate": tpr,
                        "true_negative_rate": tnr, "balanced_accuracy": (tpr + tnr) / 2})
    return figures


def _log_energy(audio_windows, frame_samples):
    """`(n, steps * frame_samples)` -> `(n, steps)` log mean power of each frame's samples."""
    import numpy as np

    n = audio_windows.shape[0]
    x = np.asarray(audio_windows, np.float64).reshape(n, -1, frame_samples)
    return np.log(np.mean(x ** 2, axis=-1) + 1e-6)


def _correlations(video_track, audio_track, max_offset):
    """Pearson correlation of `video_track (n, T)` with `audio_track[:, k:k + T]` for each
    `k` in `0..2S` -> `(n, 2S + 1)` (0 where a track is constant)."""
    import numpy as np

    steps = video_track.shape[1]

    def standardise(x):
        x = x - x.mean(-1, keepdims=True)
        return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-9)

    v = standardise(np.asarray(video_track, np.float64))
    return np.stack(
        [np.sum(v * standardise(audio_track[:, k:k + steps]), -1)
         for k in range(2 * max_offset + 1)],
        axis=-1,
    )


def energy_baseline_logits(audio_windows, frames, max_offset, frame_samples):
    """Pearson correlation of frame brightness with audio log energy at each offset.

    `audio_windows` float `(n, (F + 2S) * frame_samples)`, `frames` `(n, F, h, w)` ->
    `(n, 2S + 1)` correlations (higher: more likely).
    """
    import numpy as np

    n, steps = frames.shape[0], frames.shape[1]
    brightness = frames.reshape(n, steps, -1).astype(np.float64).mean(-1)
    return _correlations(brightness, _log_energy(audio_windows, frame_samples), max_offset)


def frame_difference_baseline_logits(audio_windows, frames, max_offset, frame_samples):
    """Pearson correlation of frame change with audio onset strength at each offset.

    The video track is `mean |frame_t - frame_{t-1}|` (t = 1..F-1), the audio track the rise
    of the log energy into each frame, `max(0, e_t - e_{t-1})`; the change into video frame t
    is compared with the rise into audio step `k + t` (offset `k - S`).
    `audio_windows` float `(n, (F + 2S) * frame_samples)`, `frames` `(n, F, h, w)` ->
    `(n, 2S + 1)` correlations (higher: more likely).
    """
    import numpy as np

    n, steps = frames.shape[0], frames.shape[1]
    x = frames.reshape(n, steps, -1).astype(np.float64)
    change = np.abs(np.diff(x, axis=1)).mean(-1)  # (n, F - 1)
    rise = np.maximum(np.diff(_log_energy(audio_windows, frame_samples), axis=1), 0.0)
    return _correlations(change, rise, max_offset)


BASELINES = {
    "energy_baseline": energy_baseline_logits,
    "frame_difference_baseline": frame_difference_baseline_logits,
}


# ---------------------------------------------------------------------------------------------
# Training.


def dataset_dir_of(config):
    from mmkeras.datasets import av_sync

    if config.data.data_dir:
        return pathlib.Path(config.data.data_dir)
    s = config.av_sync
    return av_sync.prepare(
        train=s.train_examples, validation=s.validation_examples, test=s.test_examples,
        duration=s.duration, fps=s.fps, margin_frames=s.margin_frames, noise_std=s.noise_std,
        visual=s.visual, jitter_frames=s.jitter_frames, seed=config.data.seed,
        data_root=config.data.data_root,
    )


def build_model(config, recipe):
    from mmkeras.models.av_sync_model import AVSyncModel

    s = config.av_sync
    return AVSyncModel(
        frames=recipe["frames"], frame_size=recipe["image_size"],
        frame_samples=recipe["frame_samples"], max_offset=s.max_offset,
        sample_rate=recipe["sample_rate"], video_filters=s.video_filters,
        frame_units=s.frame_units, audio_filters=s.audio_filters, fft_length=s.fft_length,
        mel_hop=s.mel_hop, num_mel_bins=s.num_mel_bins, embedding_dim=s.embedding_dim,
        temporal_kernel=s.temporal_kernel, temperature=s.temperature, name=config.model.name,
    )


def train(config, model_dir, fresh=False):
    """Trains `config` (an `AVSyncExperimentConfig`) into `model_dir`; returns the report."""
    from training.trainer import prepare_model_dir

    model_dir = prepare_model_dir(model_dir, fresh=fresh)

    from training import runtime

    strategy = runtime.setup(config)  # before TensorFlow runs anything
    import keras
    import numpy as np

    from mmkeras.configs import save_config
    from mmkeras.data.av_sync_pipeline import OFFSET_LOGITS
    from mmkeras.data.av_sync_pipeline import SYNC_LOGIT
    from mmkeras.data.av_sync_pipeline import make_av_sync_dataset
    from mmkeras.datasets import av_sync
    from training.optimizers import make_optimizer

    replicas = strategy.num_replicas_in_sync
    save_config(config, model_dir / "config.yaml")
    s = config.av_sync

    dataset_dir = dataset_dir_of(config)
    splits = {split: av_sync.load_split(dataset_dir, split, config.data.max_examples)
              for split in ("train", "validation", "test")}
    meta = splits["train"]["meta"]
    n_val = len(splits["validation"]["audio"])
    val_shifts = np.random.default_rng(s.validation_seed).integers(
        -s.max_offset, s.max_offset + 1, size=n_val)
    train_ds = make_av_sync_dataset(
        splits["train"], max_offset=s.max_offset, batch_size=config.data.batch_size,
        training=True, seed=config.trainer.seed, shuffle_buffer=config.data.shuffle_buffer)
    val_ds = make_av_sync_dataset(
        splits["validation"], max_offset=s.max_offset, batch_size=config.data.batch_size,
        shifts=val_shifts)

    jit_compile = runtime.resolve_jit_compile(config.runtime, strategy)
    with strategy.scope():
        model = build_model(config, meta["recipe"])
        model.compile(
            optimizer=make_optimizer(config.trainer, replicas),
            loss={OFFSET_LOGITS: keras.losses.SparseCategoricalCrossentropy(from_logits=True)},
            metrics={
                OFFSET_LOGITS: [keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                SYNC_LOGIT: [keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy")],
            },
            jit_compile=jit_compile,
        )

    print(f"[train_av_sync] {config.name}: offsets -{s.max_offset}..{s.max_offset} frames "
          f"({1000 / meta['recipe']['fps']:.0f} ms each); {len(splits['train']['audio'])} train / "
          f"{n_val} validation / {len(splits['test']['audio'])} test examples (visual "
          f"{meta['recipe'].get('visual', 'blank')}, jitter "
          f"{meta['recipe'].get('jitter_frames', 0.0)} frame); {replicas} "
          f"replica(s) ({runtime.strategy_name(strategy)}), global batch "
          f"{config.data.batch_size}", flush=True)
    start, cpu_start = time.time(), time.process_time()
    history = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=config.trainer.epochs,
        steps_per_epoch=config.trainer.steps_per_epoch,
        callbacks=[keras.callbacks.CSVLogger(str(model_dir / "history.csv"))],
        verbose=config.trainer.verbose,
    )
    fit_seconds, fit_cpu_seconds = time.time() - start, time.process_time() - cpu_start
    model.save(model_dir / "model.keras")
    last = {k: float(v[-1]) for k, v in history.history.items() if v}

    start = time.time()
    figures = evaluate(model, splits["test"], config)
    eval_seconds = time.time() - start

    from mmkeras.configs import to_dict
    from training import report as report_lib

    report = {
        "experiment": config.name,
        "test_examples": int(len(splits["test"]["audio"])),
        "max_offset_frames": s.max_offset,
        "frame_ms": 1000.0 / meta["recipe"]["fps"],
        "offset_convention": "offset s > 0: the audio is s frames late against the video",
        **figures,
        "final_epoch": last,
        "epochs": len(history.history.get("loss", [])),
        "fit_seconds": round(fit_seconds, 1),
        "fit_cpu_seconds": round(fit_cpu_seconds, 1),
        "eval_seconds": round(eval_seconds, 1),
        "replicas": replicas,
        "strategy": runtime.strategy_name(strategy),
        "parameters": int(model.count_params()),
        "seed": config.trainer.seed,
        "dataset": {
            "dir": str(dataset_dir),
            "name": meta.get("name"),
            "recipe_version": meta.get("recipe_version"),
            "visual": meta["recipe"].get("visual", "blank"),
            "jitter_frames": meta["recipe"].get("jitter_frames", 0.0),
            "checksum": meta.get("checksum"),
            "counts": meta.get("counts"),
        },
        "config": to_dict(config),
    }
    report_lib.write_json(model_dir / "report.json", report)
    return report


def _features_only(x, y):
    return x


def evaluate(model, test_arrays, config):
    """Every test example at every offset: model and baseline figures."""
    import numpy as np

    from mmkeras.data.av_sync_pipeline import OFFSET_LOGITS
    from mmkeras.data.av_sync_pipeline import SYNC_LOGIT
    from mmkeras.data.av_sync_pipeline import crop_window
    from mmkeras.data.av_sync_pipeline import make_av_sync_dataset

    s = config.av_sync
    recipe = test_arrays["meta"]["recipe"]
    n = len(test_arrays["audio"])
    geometry = dict(frames=recipe["frames"], margin_frames=recipe["margin_frames"],
                    max_offset=s.max_offset, frame_samples=recipe["frame_samples"])
    offsets = list(range(-s.max_offset, s.max_offset + 1))
    # One pass over every (example, offset) pair.
    ds = make_av_sync_dataset(test_arrays, max_offset=s.max_offset,
                              batch_size=config.data.batch_size,
                              rows=np.tile(np.arange(n), len(offsets)),
                              shifts=np.repeat(np.array(offsets, np.int32), n))
    out = model.predict(ds.map(_features_only), verbose=0)
    all_logits = np.asarray(out[OFFSET_LOGITS]).reshape(len(offsets), n, -1)
    all_sync = np.asarray(out[SYNC_LOGIT]).reshape(len(offsets), n)
    logits, sync = {}, {}
    base_logits = {name: {} for name in BASELINES}
    base_sync = {name: {} for name in BASELINES}
    for i, shift in enumerate(offsets):
        logits[shift], sync[shift] = all_logits[i], all_sync[i]
        windows = crop_window(test_arrays["audio"], shift, **geometry).astype(np.float64) / 32768.0
        for name, rule in BASELINES.items():
            base = rule(windows, test_arrays["frames"], s.max_offset, recipe["frame_samples"])
            base_logits[name][shift] = base
            others = np.delete(base, s.max_offset, axis=-1)
            base_sync[name][shift] = base[:, s.max_offset] - others.max(-1)
    figures = {
        "offset": offset_figures(logits, s.max_offset),
        "sync": sync_figures(sync, logits, s.max_offset, threshold=0.0),
    }
    for name in BASELINES:
        figures[name] = {
            "offset": offset_figures(base_logits[name], s.max_offset),
            "sync": sync_figures(base_sync[name], base_logits[name], s.max_offset,
                                 threshold=None),
        }
    return figures


def summary_lines(report):
    """A few human-readable lines of a report."""
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
          for key, label in (("energy_baseline", "energy baseline"),
                             ("frame_difference_baseline", "frame-difference baseline"))
          if key in report),
        "confusion (rows true offset, columns predicted):",
    ]
    for s, row in zip(o["offsets"], o["confusion_matrix"]):
        lines.append(f"  {s:+d}: " + " ".join(f"{c:4d}" for c in row))
    lines.append(f"train time: {report['fit_seconds']:.1f} s wall, {report['fit_cpu_seconds']:.1f} "
                 f"s CPU ({report['epochs']} epochs, {report['replicas']} replica(s), "
                 f"{report['strategy']}); evaluation {report['eval_seconds']:.1f} s")
    return lines


@errors.command_line
def main(argv=None):
    args = parse_args(argv)
    from mmkeras.configs.av_sync_config import load_av_sync_config
    from training.cli import run_experiment

    return run_experiment(
        args, load_av_sync_config, lambda config: train(config, args.model_dir, fresh=args.fresh),
        lambda report: [*summary_lines(report),
                        f"report: {pathlib.Path(args.model_dir) / 'report.json'}"])


if __name__ == "__main__":
    sys.exit(main())
