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

import keras
import tensorflow as tf

from mmkeras.configs import ConfigError
from mmkeras.configs import save_config
from mmkeras.configs import to_dict
from mmkeras.models import transfer
from training import custom_loop
from training import report as report_lib
from training import runtime
from training.callbacks import AtomicBackupAndRestore
from training.callbacks import BestModelCheckpoint
from training.callbacks import HParamsLogger
from training.callbacks import WallClock
from training.tasks import get_task
from training.training_run import TrainingRun
from training.training_run import announce

log = logging.getLogger(__name__)


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


def fit(task, config, model_dir, strategy, data):
    """Trains `task`'s model with `model.fit` under `strategy`; resumes from `model_dir/backup`."""
    model_dir = pathlib.Path(model_dir)
    train_ds, val_ds = task.fit_datasets(config, data)
    with strategy.scope():
        model = task.build_model(config, data, strategy)
    monitor, mode = task.monitor(config)

    # Epoch-end order is the commit order: history row, best model, logs, and last the backup.
    # A kill before the backup is committed repeats the epoch on restart; the stale rows of
    # repeated epochs are dropped here, so history.csv keeps one row per epoch.
    backup_dir = model_dir / "backup"
    report_lib.truncate_history(
        model_dir / "history.csv", AtomicBackupAndRestore.saved_epoch(backup_dir)
    )
    first, last = task.callbacks(config, model_dir, data, model, val_ds)
    callbacks = list(first) + [
        keras.callbacks.CSVLogger(str(model_dir / "history.csv"), append=True),
        BestModelCheckpoint(model_dir / "checkpoints" / "best.keras", monitor=monitor, mode=mode),
        keras.callbacks.TensorBoard(str(model_dir / "logs"), write_graph=True, update_freq="epoch"),
        HParamsLogger(model_dir / "logs", task.hparams(config), trial_id=config.name),
    ] + list(last)
    if config.trainer.early_stopping_patience:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=monitor, patience=config.trainer.early_stopping_patience, mode=mode,
            )
        )
    wall_clock = WallClock(model_dir)
    callbacks += [wall_clock, AtomicBackupAndRestore(backup_dir)]

    announce(config, data, strategy, size=task.data_size)
    start = time.time()
    history = model.fit(
        train_ds,
        validation_data=val_ds,
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
        jit_compile=runtime.resolve_jit_compile(config.runtime, strategy),
        previous_seconds=wall_clock.previous_seconds,
        runs=wall_clock.runs,
    )


def build_report(task, config, model_dir, strategy, data, run, best):
    """The task-independent part of `report.json`."""
    model_dir = pathlib.Path(model_dir)
    best_json = model_dir / "checkpoints" / "best.json"
    history_all = report_lib.read_history(model_dir / "history.csv")
    steps = config.trainer.steps_per_epoch
    train_examples = task.data_size(data, "train")
    samples_per_epoch = (
        train_examples if steps is None else min(train_examples, steps * config.data.batch_size)
    )
    replicas = strategy.num_replicas_in_sync
    return {
        "experiment": config.name,
        "task": config.task,
        "model_name": config.model.name,
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
        "dataset": task.dataset_summary(data),
        "data_problems": task.data_problems(data),
        "config": to_dict(config),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }


def finish(config, model_dir, strategy, data, run, task=None):
    """After training (either path): model of record, test evaluation, report and plots.

    Only the chief writes; other workers return a short summary.
    """
    task = task or get_task(config.task)
    if not run.is_chief:
        return {"experiment": config.name, "chief": False, "epochs_this_run": run.epochs_run}
    model_dir = pathlib.Path(model_dir)
    best = task.save_model_of_record(model_dir, run.model)
    report = build_report(task, config, model_dir, strategy, data, run, best)
    report.update(task.evaluate(config, model_dir, best, data, strategy))
    report_lib.write_json(model_dir / "report.json", report)
    history_all = report_lib.read_history(model_dir / "history.csv")
    report_lib.plot_learning_curves(history_all, model_dir / "learning_curves.png", config.name)
    task.plots(report, model_dir, config)
    print(f"[train] {config.name} ({config.task}): {report['epochs']} epochs, "
          f"{run.seconds:.1f}s -> {model_dir}")
    for line in task.summary_lines(report):
        print(f"[train] {line}")
    return report


def train(config, model_dir, fresh=False, evaluate_only=False):
    """Trains `config` (its `task:` picks the task) into `model_dir`; returns the report dict.

    Re-running the same command after a crash resumes from `model_dir/backup`. `fresh=True`
    deletes the directory's previous contents first. With `runtime.distribution:
    multi_worker` every worker runs this with the same arguments (see `training/train.py`);
    the chief writes the model directory. `evaluate_only` trains nothing: it evaluates the
    directory's model of record again and rewrites the report.
    """
    task = get_task(config.task)
    multi_worker = config.runtime.distribution == "multi_worker"
    if multi_worker and not task.supports_multi_worker:
        raise ConfigError(
            f"task '{config.task}' does not run under the multi-worker custom loop "
            "(runtime.distribution=multi_worker) yet: use mirrored or default."
        )
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
        model_dir = prepare_model_dir(model_dir, fresh and not evaluate_only)
        strategy = runtime.setup(config)
        is_chief = True
    data = task.load_data(config, model_dir, evaluate_only=evaluate_only)
    if evaluate_only:
        with strategy.scope():
            model = task.load_model(model_dir)
        wall_clock = WallClock(model_dir)
        run = TrainingRun(model=model, epochs_run=0, seconds=0.0,
                          previous_seconds=wall_clock.previous_seconds,
                          runs=max(wall_clock.runs - 1, 1))
        return finish(config, model_dir, strategy, data, run, task=task)
    if is_chief:
        save_config(config, model_dir / "config.yaml")
        task.save_data_state(data, model_dir)  # e.g. DIR/vocab.txt, tabular.json
    if multi_worker:
        run = custom_loop.train_loop(task, config, model_dir, strategy, data,
                                     hparams=task.hparams(config))
    else:
        run = fit(task, config, model_dir, strategy, data)
    return finish(config, model_dir, strategy, data, run, task=task)
