"""Training callbacks: an atomic best-model checkpoint that survives restarts, and hparams."""

import hashlib
import json
import os
import pathlib
import time

import keras
import numpy as np
from tensorboard.plugins.hparams import api as hp
import tensorflow as tf

from mmkeras import model_dir as model_dir_lib


class BestModelCheckpoint(keras.callbacks.Callback):
    """Saves the model when `monitor` improves, atomically (temp file, then rename).

    The best value is kept in `best.json` beside the model so that a resumed run (after
    `BackupAndRestore`) does not overwrite a better model with a worse one.
    """

    def __init__(self, path, monitor="val_accuracy", mode="max"):
        super().__init__()
        self.path = pathlib.Path(path)
        self.state_path = self.path.with_name("best.json")
        self.monitor = monitor
        self.better = np.greater if mode == "max" else np.less
        self.best = -np.inf if mode == "max" else np.inf
        if self.state_path.is_file():
            self.best = json.loads(self.state_path.read_text())["value"]

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not self.better(value, self.best):
            return
        self.best = float(value)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with model_dir_lib.atomic_file(self.path) as tmp:
            self.model.save(tmp)
        write_json_atomic(
            self.state_path, {"monitor": self.monitor, "value": self.best, "epoch": epoch + 1})


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` whose saved state cannot be torn by a kill.

    Keras's callback overwrites `latest.weights.h5` in place and then the epoch metadata, so a
    kill during or between the two writes leaves an unreadable file or weights of one epoch
    with the epoch number of another. Here each save writes a new weights file (temp name, then
    rename) and commits it by atomically replacing `training_metadata.json`, which names it;
    older weights files are removed after the commit. A restart loads whatever the metadata
    names. Saves once per epoch (the model state includes the optimizer's).
    """

    METADATA = "training_metadata.json"

    def __init__(self, backup_dir):
        super().__init__(str(backup_dir), save_freq="epoch", delete_checkpoint=False)
        self.backup_path = pathlib.Path(backup_dir)

    @classmethod
    def saved_epoch(cls, backup_dir):
        """Epochs completed according to the backup in `backup_dir` (0 when there is none)."""
        state = _read_json(pathlib.Path(backup_dir) / cls.METADATA)
        return int(state["epoch"]) if state and "weights" in state else 0

    def _save_model(self):
        self.backup_path.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{self._current_epoch:05d}.weights.h5"
        with model_dir_lib.atomic_file(self.backup_path / name) as tmp:
            self.model.save_weights(str(tmp), overwrite=True)
        write_json_atomic(
            self.backup_path / self.METADATA, {"epoch": self._current_epoch, "weights": name}
        )
        for old in self.backup_path.glob("*.weights.h5"):
            if old.name != name:
                old.unlink(missing_ok=True)

    def _load_model(self):
        state = _read_json(self.backup_path / self.METADATA)
        if not state or "weights" not in state:
            return
        if not self.model.built:
            raise ValueError("BackupAndRestore needs a built model.")
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(str(self.backup_path / state["weights"]))
        self.model._initial_epoch = int(state["epoch"])
        print(f"[train] resumed from {self.backup_path} after epoch {int(state['epoch'])}",
              flush=True)


def _read_json(path):
    try:
        return json.loads(pathlib.Path(path).read_text())
    except (FileNotFoundError, ValueError):
        return None


def write_json_atomic(path, payload):
    """Writes JSON to a temp file beside `path`, flushes it to disk, then renames it."""
    model_dir_lib.write_json(path, payload, indent=None)


class WallClock(keras.callbacks.Callback):
    """Training seconds summed over every run of a model directory (a killed and resumed
    training counts each run's time up to its last completed epoch, then the final run's).

    `DIR/wall_time.json` holds `runs`, `previous_runs_seconds` and `this_run_seconds`; it is
    rewritten (atomically) when training begins, after every epoch and at the end. The chief
    owns it (`training/custom_loop.py` gives it to the chief only).
    """

    FILE = "wall_time.json"

    def __init__(self, model_dir):
        super().__init__()
        self.path = pathlib.Path(model_dir) / self.FILE
        state = _read_json(self.path) or {}
        self.previous_seconds = float(state.get("previous_runs_seconds", 0.0)) + float(
            state.get("this_run_seconds", 0.0))
        self.runs = int(state.get("runs", 0)) + 1
        self.start = time.time()

    def elapsed(self):
        return time.time() - self.start

    def _write(self):
        write_json_atomic(self.path, {
            "runs": self.runs,
            "previous_runs_seconds": round(self.previous_seconds, 3),
            "this_run_seconds": round(self.elapsed(), 3),
        })

    def on_train_begin(self, logs=None):
        self.start = time.time()
        self._write()

    def on_epoch_end(self, epoch, logs=None):
        self._write()

    def on_train_end(self, logs=None):
        self._write()


class HParamsLogger(keras.callbacks.Callback):
    """Writes the experiment's hyperparameters and final metrics to TensorBoard's HParams tab.

    The HParams dashboard groups sessions by trial id, so the id is the experiment name plus a
    digest of the hyperparameter values: runs that differ in any value (e.g. the fusion type
    set with `--set`) stay separate rows side by side, and repeats of one setting group.
    """

    def __init__(self, log_dir, hparams, trial_id):
        super().__init__()
        self.log_dir = str(log_dir)
        self.hparams = hparams
        digest = hashlib.sha256(json.dumps(hparams, sort_keys=True).encode()).hexdigest()[:8]
        self.trial_id = f"{trial_id}-{digest}"

    def on_train_begin(self, logs=None):
        with tf.summary.create_file_writer(os.path.join(self.log_dir, "hparams")).as_default():
            hp.hparams(self.hparams, trial_id=self.trial_id)

    def on_epoch_end(self, epoch, logs=None):
        with tf.summary.create_file_writer(os.path.join(self.log_dir, "hparams")).as_default():
            for key in ("accuracy", "val_accuracy", "loss", "val_loss"):
                if logs and key in logs:
                    tf.summary.scalar(f"hparams/{key}", logs[key], step=epoch)
