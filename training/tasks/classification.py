"""Classification: the fusion classifier (`mmkeras.models.build_classifier`) on the
manifest's labels, with optional auxiliary heads (`model.tasks`).

`model.target` picks the head, loss, metrics and test figures:

| target | loss | metrics (logged) | `report.json` `test` | default monitor |
|---|---|---|---|---|
| `multiclass`, `binary` | cross-entropy | accuracy | accuracy, per-class accuracy, confusion matrix | `val_accuracy` |
| `multilabel` | binary cross-entropy | micro_f1, auc | micro / macro F1, per-label F1 and AUC, subset accuracy | `val_micro_f1` |
| `regression` | mean squared error (real units) | mae, rmse | MAE, RMSE, R² | `val_loss` |
"""

import pathlib

import keras
import numpy as np
import tensorflow as tf

from mmkeras import features
from mmkeras import errors
from mmkeras import model_dir as model_dir_lib
from mmkeras.data.targets import LABELS_FILE
from mmkeras.data.targets import LabelVocabulary
from mmkeras.models import build_classifier
from mmkeras.models import heads
from mmkeras.models import multitask
from mmkeras.models import transfer
from training import report as report_lib
from training import runtime
from training.losses import classification_compile_args
from training.losses import classification_loss
from training.monitoring import make_monitor
from training.tasks.base import Task
from training.tasks.base import recipe_hparams
from training.tasks.registry import register
from training.training_run import monitor_mode


def predict(model, dataset):
    """Returns (probabilities, labels) over a `(features, label)` dataset."""
    probabilities, labels = [], []
    for x, y in dataset:
        probabilities.append(np.asarray(model(x, training=False)))
        labels.append(np.asarray(y))
    return np.concatenate(probabilities), np.concatenate(labels)


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


# The monitor a target gets when `trainer.monitor` is left at its default.
DEFAULT_MONITOR = "val_accuracy"
TARGET_MONITORS = {"multilabel": "val_micro_f1", "regression": "val_loss"}


def target_compile_args(target, num_classes=None):
    """Loss and metrics of a `multilabel` or `regression` head (class targets:
    `training.losses.classification_compile_args`)."""
    if target == "multilabel":
        return dict(
            loss=keras.losses.BinaryCrossentropy(),
            metrics=[
                keras.metrics.F1Score(average="micro", threshold=0.5, name="micro_f1"),
                keras.metrics.AUC(multi_label=True, num_labels=num_classes, name="auc"),
            ],
        )
    if target == "regression":
        return dict(
            loss=keras.losses.MeanSquaredError(),
            metrics=[keras.metrics.MeanAbsoluteError(name="mae"),
                     keras.metrics.RootMeanSquaredError(name="rmse")],
        )
    raise ValueError(f"No target loss for model.target {target!r}: class targets use the "
                     "classification loss.")


def target_metrics(config, model_dir, outputs, labels):
    """The `test` figures of a `model.target` kind (see the module table)."""
    target = config.model.target
    if target == "regression":
        return report_lib.regression_metrics(outputs, labels)
    if target == "multilabel":
        names = None
        if (pathlib.Path(model_dir) / LABELS_FILE).is_file():
            names = LabelVocabulary.load(model_dir).labels
        return report_lib.multilabel_metrics(outputs, labels, names)
    return report_lib.classification_metrics(outputs, labels, config.model.num_classes)


def regression_statistics(model):
    """`{"mean", "std"}` the regression model un-standardises its output with."""
    layer = model.get_layer(heads.VALUE)
    return {"mean": float(np.asarray(layer.mean).reshape(-1)[0]),
            "std": float(np.sqrt(np.asarray(layer.variance).reshape(-1)[0]))}


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


@register
class ClassificationTask(Task):
    """The fusion classifier; `model.tasks` adds auxiliary heads (a multi-task model)."""

    name = "classification"
    supports_multi_worker = True

    def monitor(self, config):
        """`trainer.monitor`, or the target's own when left at `val_accuracy` (the default,
        which only class targets log): `val_micro_f1` (multilabel), `val_loss` (regression)."""
        if config.trainer.monitor == DEFAULT_MONITOR:
            monitor = TARGET_MONITORS.get(config.model.target, DEFAULT_MONITOR)
            return monitor, monitor_mode(monitor)
        return super().monitor(config)

    def fit_datasets(self, config, data):
        if (config.model.target not in heads.CLASS_TARGETS
                and config.runtime.distribution == "multi_worker"):
            raise errors.UserError(
                f"runtime.distribution multi_worker trains class targets only; model.target "
                f"is {config.model.target!r}: use mirrored or default")
        train_ds, val_ds = super().fit_datasets(config, data)
        if not config.model.tasks:
            return train_ds, val_ds

        # One target per head, derived from the label; modality heads masked by presence.
        def to_targets(x, y):
            return x, multitask.targets(y, config.model), multitask.sample_weights(x, config.model)

        return train_ds.map(to_targets), val_ds.map(to_targets)

    def build_model(self, config, data, strategy):
        target_stats = None
        if config.model.target == "regression":
            target_stats = heads.target_statistics(data.columns("train")["label"])
        model = build_classifier(config.model, config.data, target_stats=target_stats)
        if config.model.tasks:
            losses = multitask.compile_args(config.model)
        elif config.model.target in heads.CLASS_TARGETS:
            losses = classification_compile_args(config.trainer)
        else:
            losses = target_compile_args(config.model.target, config.model.num_classes)
        # The custom loop's per-example loss: the same loss (label smoothing included).
        self._per_example_loss = classification_loss(config.trainer, reduction=None)
        model.compile(
            optimizer=self.optimizer(config, data, strategy, model),
            jit_compile=runtime.resolve_jit_compile(config.runtime, strategy),
            **losses,
        )
        return model

    def replica_step(self, model, x, y, global_batch, training):
        probabilities = tf.cast(model(x, training=training), tf.float32)
        per_example = self._per_example_loss(y, probabilities)
        loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
        if training and model.losses:
            loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
        labels = tf.cast(tf.reshape(y, [-1]), tf.int64)
        correct = tf.cast(tf.equal(tf.argmax(probabilities, axis=-1), labels), tf.float32)
        return loss, {
            "loss": tf.reduce_sum(per_example),
            "accuracy": tf.reduce_sum(correct),
            "examples": tf.cast(tf.shape(labels)[0], tf.float32),
        }

    def callbacks(self, config, model_dir, data, model, val_ds):
        tasks = bool(config.model.tasks)
        first = [MainTaskLogs()] if tasks else []
        last = []
        if config.model.target not in heads.CLASS_TARGETS:  # the monitor reads class ids
            return first, last
        monitor = make_monitor(config, model_dir, data.dataset("validation", config.data))
        if monitor is not None:
            last.append(OnModel(monitor, multitask.main_model(model)) if tasks else monitor)
        return first, last

    def hparams(self, config):
        c = config
        return {
            "model.fusion.type": c.model.fusion.type,
            "model.target": c.model.target,
            "model.modalities": ",".join(sorted(c.model.modalities)),
            **recipe_hparams(c),
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

    def save_model_of_record(self, model_dir, model):
        """Writes `model_dir/model.keras` from the best checkpoint (else `model`); returns it.

        A multi-task model (`model.tasks`) is written whole to `model_dir/multitask.keras`,
        and `model.keras` (returned) is its main head: the same inputs, the `probabilities`
        output.
        """
        model_dir = pathlib.Path(model_dir)
        checkpoint_path = model_dir / model_dir_lib.BEST_CHECKPOINT
        best = keras.saving.load_model(checkpoint_path) if checkpoint_path.is_file() else model
        if isinstance(best.output, dict):
            with model_dir_lib.atomic_file(model_dir / model_dir_lib.MULTITASK_FILE) as tmp:
                best.save(tmp)
            full, best = best, multitask.main_model(best)
            if full.optimizer is not None:  # compiled like a single-task model of record
                best.compile(
                    optimizer=keras.optimizers.deserialize(
                        keras.optimizers.serialize(full.optimizer)),
                    **classification_compile_args(),  # (multi-task heads: no label smoothing)
                )
                best.optimizer.build(best.trainable_variables)  # (fresh state: loads silently)
        with model_dir_lib.atomic_file(model_dir / model_dir_lib.MODEL_FILE) as tmp:
            best.save(tmp)
        return best

    def evaluate(self, config, model_dir, model, data, strategy):
        outputs, labels = predict(model, data.dataset("test", config.data))
        result = {"test": target_metrics(config, model_dir, outputs, labels)}
        if config.model.target == "regression":
            result["target_statistics"] = regression_statistics(model)
        if config.model.tasks:
            full = keras.saving.load_model(pathlib.Path(model_dir) / model_dir_lib.MULTITASK_FILE)
            result["tasks"] = task_metrics(full, data.dataset("test", config.data), config.model)
            print("[train] test accuracy per head: " + ", ".join(
                f"{name} {head['accuracy']:.4f}" for name, head in result["tasks"].items()))
        if config.model.init_from:
            result["init_from"] = transfer.describe_sources(config.model)
        return result

    def plots(self, report, model_dir, config):
        if config.model.target not in heads.CLASS_TARGETS:
            return
        test = report["test"]
        report_lib.plot_confusion_matrix(
            test["confusion_matrix"], pathlib.Path(model_dir) / "confusion_matrix.png",
            f"{config.name}: test accuracy {test['accuracy']:.3f}",
        )

    def summary_lines(self, report):
        test = report["test"]
        if "rmse" in test:
            r2 = "n/a" if test["r2"] is None else f"{test['r2']:.4f}"
            return [f"test MAE {test['mae']:.4f}, RMSE {test['rmse']:.4f}, R2 {r2}"]
        if "micro_f1" in test:
            f1 = "n/a" if test["micro_f1"] is None else f"{test['micro_f1']:.4f}"
            return [f"test micro-F1 {f1}, subset accuracy {test['subset_accuracy']:.4f}, "
                    f"loss {test['loss']:.4f}"]
        return [f"test accuracy {test['accuracy']:.4f}, loss {test['loss']:.4f}"]
