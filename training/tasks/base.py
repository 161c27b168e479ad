"""The Task interface: what differs between the things mmkeras trains.

The driver (`training/trainer.py`) owns everything tasks share: the model directory, the
strategy, `model.fit` with the best checkpoint, resume after a kill (`AtomicBackupAndRestore`),
TensorBoard (scalars, graph, HParams), `history.csv`, early stopping, the wall clock, the
model of record and `report.json`. A task supplies the rest, in the order the driver calls it:

    data = task.load_data(config, model_dir, evaluate_only)   # splits, fitted preprocessing
    task.save_data_state(data, model_dir)                      # chief only: vocabularies...
    train_ds, val_ds = task.fit_datasets(config, data)         # what `model.fit` reads
    with strategy.scope():
        model = task.build_model(config, data, strategy)       # built and compiled
    callbacks = task.callbacks(config, model_dir, data, model, val_ds)
    ... fit, under the driver's callbacks, monitoring `task.monitor(config)` ...
    best = task.save_model_of_record(model_dir, model)         # model.keras (+ extras)
    report.update(task.evaluate(config, model_dir, best, data, strategy))
    task.plots(report, model_dir, config)

(Model Garden's `base_task.Task` - build_model / build_inputs / build_losses / metrics - and
keras-hub's Backbone / Task split are the shapes this follows.) A task is registered under
its config's `task:` name with `@register` (`training/tasks/__init__.py`).
"""

import pathlib

import keras

from mmkeras import model_dir as model_dir_lib
from training.optimizers import make_optimizer
from training.optimizers import steps_per_epoch
from training.training_data import dataset_summary
from training.training_data import load_data
from training.training_run import monitor_mode


def recipe_hparams(config):
    """The training recipe's HParams (`trainer.*`), shared by every task."""
    t = config.trainer
    return {
        "trainer.optimizer": t.optimizer,
        "trainer.learning_rate": t.learning_rate,
        "trainer.weight_decay": -1.0 if t.weight_decay is None else t.weight_decay,
        "trainer.lr_schedule": t.lr_schedule,
        "trainer.label_smoothing": t.label_smoothing,
        "trainer.epochs": t.epochs,
        "data.batch_size": config.data.batch_size,
        **{f"trainer.lr_multipliers.{name}": value
           for name, value in sorted(t.lr_multipliers.items())},
    }


class Task:
    """Base class of the tasks; the defaults suit a model trained on the manifest rows."""

    name = None
    # Whether the multi-worker custom loop (`training/custom_loop.py`) can train it.
    supports_multi_worker = False

    def load_data(self, config, model_dir, evaluate_only=False):
        """The task's data (a `TrainingData` or the task's own); `evaluate_only` reloads the
        preprocessing saved in `model_dir` instead of fitting it."""
        return load_data(config, model_dir, reuse_preprocessing=evaluate_only)

    def save_data_state(self, data, model_dir):
        """Writes what was fitted on the data (vocabularies, statistics) to `model_dir`."""
        if getattr(data, "preprocessing", None) is not None:
            data.preprocessing.save(model_dir)

    def fit_datasets(self, config, data):
        """`(train_ds, val_ds)`: what `model.fit` reads."""
        return (data.dataset("train", config.data, training=True),
                data.dataset("validation", config.data))

    def optimizer(self, config, data, strategy, model):
        """The configured optimizer (`trainer.*`) of `model`, with the steps per epoch that
        schedules counted in epochs (`lr_schedule: cosine`, `warmup_epochs`) need."""
        steps = steps_per_epoch(config.trainer, self.data_size(data, "train"),
                                config.data.batch_size)
        return make_optimizer(config.trainer, strategy.num_replicas_in_sync, steps, model=model)

    def build_model(self, config, data, strategy):
        """The compiled model (called inside `strategy.scope()`)."""
        raise NotImplementedError

    def replica_step(self, model, x, y, global_batch, training):
        """The multi-worker custom loop's per-replica forward pass (`supports_multi_worker`):
        `(loss, sums)` - the loss whose gradient, summed over the replicas, is the gradient of
        the global batch's mean loss, and `{name: sum over this replica's examples}` with at
        least `loss` and `examples` (logged as sum / examples, `val_` on validation)."""
        raise NotImplementedError(f"task {self.name!r} has no multi-worker step")

    def monitor(self, config):
        """`(metric, mode)` of the best checkpoint and early stopping."""
        return config.trainer.monitor, monitor_mode(config.trainer.monitor)

    def callbacks(self, config, model_dir, data, model, val_ds):
        """`(first, last)`: task callbacks run before the driver's (e.g. renaming logs) and
        after them (e.g. monitors)."""
        return [], []

    def hparams(self, config):
        """The HParams of the run (TensorBoard's HParams dashboard)."""
        return {
            "task": config.task,
            "model.modalities": ",".join(sorted(config.model.modalities)),
            **recipe_hparams(config),
            "runtime.cpu_replicas": config.runtime.cpu_replicas,
        }

    def save_model_of_record(self, model_dir, model):
        """Writes `model_dir/model.keras` from the best checkpoint (else `model`); returns it."""
        model_dir = pathlib.Path(model_dir)
        checkpoint = model_dir / model_dir_lib.BEST_CHECKPOINT
        best = keras.saving.load_model(checkpoint) if checkpoint.is_file() else model
        with model_dir_lib.atomic_file(model_dir / model_dir_lib.MODEL_FILE) as tmp:
            best.save(tmp)
        return best

    def load_model(self, model_dir):
        """The model of record of a trained `model_dir` (`--evaluate-only`)."""
        return keras.saving.load_model(pathlib.Path(model_dir) / model_dir_lib.MODEL_FILE)

    def data_size(self, data, split):
        return data.size(split)

    def data_problems(self, data):
        return data.problems() if hasattr(data, "problems") else None

    def dataset_summary(self, data):
        return dataset_summary(data) if hasattr(data, "info") else None

    def evaluate(self, config, model_dir, model, data, strategy):
        """The task's test figures: a dict merged into `report.json`."""
        raise NotImplementedError

    def plots(self, report, model_dir, config):
        """Task figures beside the learning curves (e.g. a confusion matrix)."""

    def summary_lines(self, report):
        """A few lines printed after training."""
        return []
