"""The trainer: config -> strategy -> data -> model -> fit -> evaluation -> model directory.

A model directory holds everything later steps need, so export and evaluation can run in
another process or on another machine:

    DIR/config.yaml          the resolved experiment config
    DIR/model.keras          the best model (by `trainer.monitor`); with `model.tasks`, its
                             main head only (what evaluation and serving use)
    DIR/multitask.keras      with `model.tasks`: the best model with every task head
    DIR/checkpoints/         best.keras + best.json (written atomically)
    DIR/backup/              the training state of the last completed epoch (a killed run
                             resumes from here): `AtomicBackupAndRestore` for `fit`, a
                             `tf.train.CheckpointManager` for the custom loop
    DIR/logs/                TensorBoard: train/ and validation/ scalars and graph, hparams/,
                             monitor/ (`trainer.monitor_every`: training/monitoring.py)
    DIR/history.csv          per-epoch metrics (one row per epoch, also after a resume)
    DIR/report.json          test metrics (and each task head's, `tasks`), timings, dataset
                             version, config, where transferred encoders came from
                             (`init_from`: path and SHA-256 of the source model file)
    DIR/learning_curves.png, DIR/confusion_matrix.png

Two training paths end in the same artifacts: `model.fit` under MirroredStrategy (or no
strategy), and the custom loop of `training/custom_loop.py` under MultiWorkerMirroredStrategy
(`runtime.distribution: multi_worker`), where Keras 3 `fit` does not work (keras#20585).
"""

import dataclasses
import json
import logging
import pathlib
import shutil
import time
import typing

import keras
import numpy as np
import tensorflow as tf

from mmkeras import features
from mmkeras import model_dir as model_dir_lib
from mmkeras.configs import ConfigError
from mmkeras.configs import save_config
from mmkeras.configs import to_dict
from mmkeras.data import DataError
from mmkeras.data import load_split
from mmkeras.data import make_dataset
from mmkeras.data.preprocessing import Preprocessing
from mmkeras.data.sources import dataset_dir_for
from mmkeras.data.sources import dataset_info
from mmkeras.models import build_classifier
from mmkeras.models import multitask
from mmkeras.models import transfer
from training import custom_loop
from training import report as report_lib
from training import runtime
from training.callbacks import AtomicBackupAndRestore
from training.callbacks import BestModelCheckpoint
from training.callbacks import HParamsLogger
from training.callbacks import WallClock
from training.monitoring import make_monitor
from training.losses import classification_compile_args
from training.optimizers import make_optimizer
from training.optimizers import steps_per_epoch
from training.training_run import TrainingRun
from training.training_run import announce
from training.training_run import monitor_mode

log = logging.getLogger(__name__)




def load_splits(config, dataset_dir):
    """Reads and checks the train/validation/test manifest rows: `{split: (columns, report)}`."""
    return {
        split: load_split(
            dataset_dir, split, config.data, config.model.modalities, config.model.num_classes
        )
        for split in ("train", "validation", "test")
    }


def predict(model, dataset):
    """Returns (probabilities, labels) over a `(features, label)` dataset."""
    probabilities, labels = [], []
    for x, y in dataset:
        probabilities.append(np.asarray(model(x, training=False)))
        labels.append(np.asarray(y))
    return np.concatenate(probabilities), np.concatenate(labels)


def _hparams(config):
    c = config
    return {
        "model.fusion.type": c.model.fusion.type,
        "model.modalities": ",".join(sorted(c.model.modalities)),
        "trainer.learning_rate": c.trainer.learning_rate,
        "trainer.epochs": c.trainer.epochs,
        "data.batch_size": c.data.batch_size,
        "data.variant": c.data.variant,
        "data.snr_db": c.data.snr_db,
        "runtime.cpu_replicas": c.runtime.cpu_replicas,
        "model.missing.dropout": ",".join(
            f"{m}={rate:g}" for m, rate in sorted(c.model.missing.dropout.items())
        ) or "none",
        "model.missing.imputation": c.model.missing.imputation,
        "model.tasks": ",".join(
            f"{t.name}={t.loss_weight:g}" for t in c.model.tasks
        ) or "none",
        "model.init_from": ",".join(
            f"{'+'.join(s.modalities) or 'shared'}:{'finetune' if s.trainable else 'frozen'}"
            for s in c.model.init_from
        ) or "none",
    }


class MainTaskLogs(keras.callbacks.Callback):
    """Gives the main head's metrics of a multi-task model the names a single-task model's
    have (`probabilities_accuracy` -> `accuracy`, `val_probabilities_accuracy` ->
    `val_accuracy`), so `trainer.monitor`, `history.csv` and TensorBoard read the same keys
    with or without task heads. `loss` stays the weighted total; the main head's own loss is
    `probabilities_loss`. Must come before the callbacks that read the logs."""

    PREFIX = f"{features.PROBABILITIES}_"

    def on_epoch_end(self, epoch, logs=None):
        for key in list(logs or {}):
            for split in ("", "val_"):
                head = split + self.PREFIX
                if key.startswith(head) and key != f"{head}loss":
                    logs[split + key[len(head):]] = logs.pop(key)


class OnModel(keras.callbacks.Callback):
    """Runs `callback` on `model` instead of the model being fit (e.g. the main-task view
    of a multi-task model, for the monitor, which reads class probabilities)."""

    def __init__(self, callback, model):
        super().__init__()
        self.callback = callback
        self.callback.set_model(model)

    def set_model(self, model):
        pass

    def on_train_begin(self, logs=None):
        self.callback.on_train_begin(logs)

    def on_epoch_end(self, epoch, logs=None):
        self.callback.on_epoch_end(epoch, logs)

    def on_train_end(self, logs=None):
        self.callback.on_train_end(logs)


@dataclasses.dataclass
class TrainingData:
    """The checked manifest rows of an experiment, and where they came from."""

    dataset_dir: pathlib.Path
    info: dict
    splits: dict
    modalities: list
    # Fitted on the train split (text vocabulary, tabular statistics); None if not needed.
    preprocessing: typing.Any = None

    def columns(self, split):
        return self.splits[split][0]

    def size(self, split):
        return len(self.columns(split)["label"])

    def dataset(self, split, data_config, **kwargs):
        """`make_dataset` over a split (`training=True` shuffles; see its other kwargs)."""
        kwargs.setdefault("preprocessing", self.preprocessing)
        return make_dataset(self.columns(split), data_config, self.modalities, **kwargs)


def prepare_model_dir(model_dir, fresh):
    """Creates `model_dir` (emptied first when `fresh`) and removes temp files of killed runs."""
    model_dir = pathlib.Path(model_dir)
    if fresh and model_dir.exists():
        shutil.rmtree(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    for folder in (model_dir, model_dir / "checkpoints", model_dir / "backup"):
        if folder.is_dir():
            for stale in folder.glob(".tmp-*"):
                if stale.is_dir():
                    shutil.rmtree(stale, ignore_errors=True)
                else:
                    stale.unlink(missing_ok=True)
    return model_dir


def load_data(config):
    """Finds (or prepares) the dataset and reads its checked splits."""
    dataset_dir = dataset_dir_for(config.data)
    splits = load_splits(config, dataset_dir)
    for split, (columns, rep) in splits.items():
        if rep.skipped or rep.masked or rep.unknown_split:
            print(f"[data] {split}: skipped {rep.skipped} rows, masked {rep.masked}, "
                  f"{rep.unknown_split} rows with an unknown split; "
                  f"first problems: {rep.problems[:3]}")
        if len(columns["label"]) == 0:
            raise DataError(f"The {split} split of {dataset_dir} has no usable rows.")
    modalities = sorted(config.model.modalities)
    preprocessing = None
    if {"text", "tabular"} & set(modalities):
        preprocessing = Preprocessing.fit(
            splits["train"][0], config.data, modalities, text_encoder=config.model.text_encoder
        )
    return TrainingData(
        dataset_dir=pathlib.Path(dataset_dir),
        info=dataset_info(dataset_dir),
        splits=splits,
        modalities=modalities,
        preprocessing=preprocessing,
    )


def fit(config, model_dir, strategy, data):
    """Trains with `model.fit` under `strategy`; resumes from `model_dir/backup`."""
    model_dir = pathlib.Path(model_dir)
    train_ds = data.dataset("train", config.data, training=True)
    val_ds = data.dataset("validation", config.data)
    fit_train_ds, fit_val_ds = train_ds, val_ds
    tasks = bool(config.model.tasks)
    if tasks:  # one target per head, derived from the label; modality heads masked by presence
        def to_targets(x, y):
            return x, multitask.targets(y, config.model), multitask.sample_weights(x, config.model)

        fit_train_ds, fit_val_ds = train_ds.map(to_targets), val_ds.map(to_targets)
        losses = multitask.compile_args(config.model)
    else:
        losses = classification_compile_args(config.trainer)

    jit_compile = runtime.resolve_jit_compile(config.runtime, strategy)
    with strategy.scope():
        model = build_classifier(config.model, config.data)
        model.compile(
            optimizer=make_optimizer(config.trainer, strategy.num_replicas_in_sync, steps_per_epoch(
                config.trainer, data.size("train"), config.data.batch_size)),
            jit_compile=jit_compile,
            **losses,
        )

    # Epoch-end order is the commit order: history row, best model, logs, and last the backup.
    # A kill before the backup is committed repeats the epoch on restart; the stale rows of
    # repeated epochs are dropped here, so history.csv keeps one row per epoch.
    backup_dir = model_dir / "backup"
    report_lib.truncate_history(
        model_dir / "history.csv", AtomicBackupAndRestore.saved_epoch(backup_dir)
    )
    callbacks = [MainTaskLogs()] if tasks else []
    callbacks += [
        keras.callbacks.CSVLogger(str(model_dir / "history.csv"), append=True),
        BestModelCheckpoint(model_dir / "checkpoints" / "best.keras", monitor=config.trainer.monitor,
                            mode=monitor_mode(config.trainer.monitor)),
        keras.callbacks.TensorBoard(str(model_dir / "logs"), write_graph=True, update_freq="epoch"),
        HParamsLogger(model_dir / "logs", _hparams(config), trial_id=config.name),
    ]
    monitor = make_monitor(config, model_dir, val_ds)
    if monitor is not None:
        callbacks.append(OnModel(monitor, multitask.main_model(model)) if tasks else monitor)
    if config.trainer.early_stopping_patience:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=config.trainer.monitor, patience=config.trainer.early_stopping_patience,
                mode=monitor_mode(config.trainer.monitor),
            )
        )
    wall_clock = WallClock(model_dir)
    callbacks += [wall_clock, AtomicBackupAndRestore(backup_dir)]

    announce(config, data, strategy)
    start = time.time()
    history = model.fit(
        fit_train_ds,
        validation_data=fit_val_ds,
        epochs=config.trainer.epochs,
        steps_per_epoch=config.trainer.steps_per_epoch,
        callbacks=callbacks,
        verbose=config.trainer.verbose,
        shuffle=False,  # train_ds shuffles (data.shuffle_buffer); fit cannot shuffle a Dataset
    )
    return TrainingRun(
        model=model,
        epochs_run=len(history.history.get("loss", [])),
        seconds=time.time() - start,
        jit_compile=jit_compile,
        previous_seconds=wall_clock.previous_seconds,
        runs=wall_clock.runs,
    )


def _save_atomic(model, path):
    with model_dir_lib.atomic_file(path) as tmp:
        model.save(tmp)


def save_model_of_record(model_dir, model):
    """Writes `model_dir/model.keras` from the best checkpoint (else `model`); returns it.

    A multi-task model (`model.tasks`) is written whole to `model_dir/multitask.keras`, and
    `model.keras` (returned) is its main head: the same inputs, the `probabilities` output.
    """
    model_dir = pathlib.Path(model_dir)
    checkpoint_path = model_dir / "checkpoints" / "best.keras"
    best = keras.saving.load_model(checkpoint_path) if checkpoint_path.is_file() else model
    if isinstance(best.output, dict):
        _save_atomic(best, model_dir / "multitask.keras")
        full, best = best, multitask.main_model(best)
        if full.optimizer is not None:  # compiled like a single-task model of record
            best.compile(
                optimizer=keras.optimizers.deserialize(keras.optimizers.serialize(full.optimizer)),
                **classification_compile_args(),  # (multi-task heads: no label smoothing)
            )
            best.optimizer.build(best.trainable_variables)  # (fresh state: loads silently)
    _save_atomic(best, model_dir / "model.keras")
    return best


def task_metrics(model, dataset, model_config):
    """Test metrics of every head of a multi-task model: `{output name: {...}}` (a head on a
    modality is scored on the examples that have it)."""
    outputs, labels, present = {}, [], {}
    for x, y in dataset:
        for name, value in model(x, training=False).items():
            outputs.setdefault(name, []).append(np.asarray(value))
        for m in model_config.modalities:
            present.setdefault(m, []).append(np.asarray(x[features.presence_key(m)]))
        labels.append(np.asarray(y))
    labels = np.concatenate(labels)
    present = {m: np.concatenate(v) > 0.5 for m, v in present.items()}
    heads = [(features.PROBABILITIES, "fused", "label", model_config.main_loss_weight)] + [
        (t.name, t.input, t.target, t.loss_weight) for t in model_config.tasks
    ]
    result = {}
    for name, source, target, weight in heads:
        probabilities = np.concatenate(outputs[name])
        keep = present.get(source, np.ones(len(labels), bool))  # a modality head: where present
        if not keep.any():
            result[name] = {"input": source, "target": target, "loss_weight": weight,
                            "accuracy": None, "loss": None, "examples": 0}
            continue
        metrics = report_lib.classification_metrics(
            probabilities[keep], multitask.TARGETS[target](labels[keep]), probabilities.shape[-1]
        )
        result[name] = {
            "input": source, "target": target, "loss_weight": weight,
            **{k: metrics[k] for k in ("accuracy", "loss", "examples")},
        }
    return result


def build_report(config, model_dir, strategy, data, run, best, test):
    """The `report.json` payload."""
    model_dir = pathlib.Path(model_dir)
    best_json = model_dir / "checkpoints" / "best.json"
    history_all = report_lib.read_history(model_dir / "history.csv")
    steps = config.trainer.steps_per_epoch
    train_examples = data.size("train")
    samples_per_epoch = (
        train_examples if steps is None else min(train_examples, steps * config.data.batch_size)
    )
    replicas = strategy.num_replicas_in_sync
    info = data.info
    return {
        "experiment": config.name,
        "model_name": config.model.name,
        "test": test,
        "best_validation": json.loads(best_json.read_text()) if best_json.is_file() else None,
        "epochs": len(history_all.get("epoch", [])) or run.epochs_run,
        "epochs_this_run": run.epochs_run,
        # Every run of a resumed training; `wall_seconds_this_run`: this one.
        "wall_seconds": round(run.previous_seconds + run.seconds, 2),
        "wall_seconds_this_run": round(run.seconds, 2),
        "runs": run.runs,
        "samples_per_second": round(samples_per_epoch * run.epochs_run / run.seconds, 1)
        if run.epochs_run else None,
        "replicas": replicas,
        "workers": run.num_workers,
        "strategy": runtime.strategy_name(strategy),
        "global_batch_size": config.data.batch_size,
        "per_replica_batch_size": config.data.batch_size // replicas,
        "learning_rate": config.trainer.learning_rate
        * (replicas if config.trainer.scale_lr_with_replicas else 1),
        "mixed_precision": config.runtime.mixed_precision,
        "jit_compile": run.jit_compile,
        "parameters": int(best.count_params()),
        "seed": config.trainer.seed,
        "dataset": {
            "dir": str(data.dataset_dir),
            "name": info.get("name"),
            "variant": info.get("variant"),
            "recipe_version": info.get("recipe_version"),
            "checksum": info.get("checksum"),
            "recipe": {k: v for k, v in info.get("recipe", {}).items() if not isinstance(v, (list, dict))},
        },
        "data_problems": {split: rep.as_dict() for split, (_, rep) in data.splits.items()},
        "config": to_dict(config),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }


def finish(config, model_dir, strategy, data, run):
    """After training (either path): model of record, test evaluation, report and plots.

    Only the chief writes; other workers return a short summary.
    """
    if not run.is_chief:
        return {"experiment": config.name, "chief": False, "epochs_this_run": run.epochs_run}
    model_dir = pathlib.Path(model_dir)
    best = save_model_of_record(model_dir, run.model)
    probabilities, labels = predict(best, data.dataset("test", config.data))
    test = report_lib.classification_metrics(probabilities, labels, config.model.num_classes)
    report = build_report(config, model_dir, strategy, data, run, best, test)
    if config.model.tasks:
        full = keras.saving.load_model(model_dir / "multitask.keras")
        report["tasks"] = task_metrics(full, data.dataset("test", config.data), config.model)
        print("[train] test accuracy per head: " + ", ".join(
            f"{name} {head['accuracy']:.4f}" for name, head in report["tasks"].items()))
    if config.model.init_from:
        report["init_from"] = transfer.describe_sources(config.model)
    report_lib.write_json(model_dir / "report.json", report)
    history_all = report_lib.read_history(model_dir / "history.csv")
    report_lib.plot_learning_curves(history_all, model_dir / "learning_curves.png", config.name)
    report_lib.plot_confusion_matrix(
        test["confusion_matrix"], model_dir / "confusion_matrix.png",
        f"{config.name}: test accuracy {test['accuracy']:.3f}",
    )
    print(f"[train] {config.name}: test accuracy {test['accuracy']:.4f}, loss {test['loss']:.4f}, "
          f"{report['epochs']} epochs, {run.seconds:.1f}s -> {model_dir}")
    return report


def train(config, model_dir, fresh=False):
    """Trains `config` (an `ExperimentConfig`) into `model_dir`; returns the report dict.

    Re-running the same command after a crash resumes from `model_dir/backup`. `fresh=True`
    deletes the directory's previous contents first. With `runtime.distribution:
    multi_worker` every worker runs this with the same arguments (see `training/train.py`);
    the chief writes the model directory.
    """
    multi_worker = config.runtime.distribution == "multi_worker"
    if multi_worker and config.model.tasks:
        raise ConfigError(
            "model.tasks (multi-task heads) is not supported by the multi-worker custom loop "
            "(runtime.distribution=multi_worker): use mirrored or default."
        )
    if config.model.init_from:
        # Checks the source files before anything is written, and pins their checksums in
        # the config saved below (a resumed or repeated run then loads the same weights).
        config = dataclasses.replace(config, model=transfer.pin_sources(config.model))
    if multi_worker:
        # The strategy connects the cluster, so it comes first; only the chief touches DIR.
        strategy = runtime.setup(config)
        is_chief = runtime.worker_info(strategy)[2]
        model_dir = prepare_model_dir(model_dir, fresh) if is_chief else pathlib.Path(model_dir)
    else:
        model_dir = prepare_model_dir(model_dir, fresh)
        strategy = runtime.setup(config)
        is_chief = True
    if is_chief:
        save_config(config, model_dir / "config.yaml")
    data = load_data(config)
    if is_chief and data.preprocessing is not None:
        data.preprocessing.save(model_dir)  # DIR/vocab.txt or text_preprocessor/, tabular.json
    if multi_worker:
        run = custom_loop.train_loop(config, model_dir, strategy, data, hparams=_hparams(config))
    else:
        run = fit(config, model_dir, strategy, data)
    return finish(config, model_dir, strategy, data, run)
