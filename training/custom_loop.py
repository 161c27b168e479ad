"""A custom distributed training loop that leaves the same model directory as `model.fit`.

Keras 3 `fit` does not run under `tf.distribute.MultiWorkerMirroredStrategy` (keras#20585), so
`runtime.distribution: multi_worker` trains with this loop instead. It works under any
`tf.distribute` strategy (MirroredStrategy, the default strategy), which is how a single
process can reproduce a multi-worker run.

Per step, every replica takes its share of the GLOBAL batch (`data.batch_size`) from
`strategy.distribute_datasets_from_function` (the pipeline shards by worker and batches per
replica), computes the per-example loss and divides its sum by the global batch size (what
`tf.nn.compute_average_loss` does), so the gradients the optimizer sums across replicas are
the gradients of the mean loss over the global batch, as in single-device training.
Non-trainable float variables (BatchNormalization moving statistics, which each replica
updates from its local batch) are averaged across replicas after every epoch: the update is
linear, so this equals averaging them every step, and every worker holds the same model.

After each epoch, in this order (the order is what makes a kill at any point recoverable):
validation over the whole validation split (distributed); the epoch-end callbacks `fit` uses,
driven by hand (on the chief only, as they write files: a row appended to `history.csv`, the
best model in `checkpoints/best.keras` (atomic), TensorBoard scalars in `logs/train` and
`logs/validation`, HParams; `EarlyStopping` on every worker, so that all stop together); then,
on every worker, the training state (model, optimizer, epoch) is saved with a
`tf.train.CheckpointManager`: the chief into `DIR/backup`, the others into
`DIR/backup/.tmp-worker<i>`, deleted at the end (saving may need every worker's participation,
but one copy is enough). A restarted run restores the newest checkpoint in `DIR/backup`, drops
history rows of epochs it will repeat, and continues. All workers must see `DIR` (a shared
file system or bucket) to resume; the loop checks that they restored the same epoch.
The input stream restarts from its beginning after a resume (as with `fit`).
"""

import math
import pathlib
import shutil
import time

import keras
import numpy as np
import tensorflow as tf

from mmkeras.configs import ConfigError
from mmkeras.models import build_classifier
from training import report as report_lib
from training import runtime
from training.callbacks import BestModelCheckpoint
from training.callbacks import HParamsLogger
from training.losses import classification_compile_args
from training.losses import classification_loss
from training.optimizers import make_optimizer
from training.training_run import TrainingRun
from training.training_run import announce
from training.training_run import monitor_mode
from training.callbacks import WallClock

SUM = tf.distribute.ReduceOp.SUM


def _agree(strategy, value=0.0):
    """A barrier across workers; returns the mean and the variance of `value` over replicas."""

    @tf.function
    def gather():
        def replica_fn():
            ctx = tf.distribute.get_replica_context()
            v = tf.constant(float(value), tf.float32)
            n = tf.cast(ctx.num_replicas_in_sync, tf.float32)
            mean = ctx.all_reduce(SUM, v) / n
            return mean, ctx.all_reduce(SUM, tf.square(v - mean)) / n

        return strategy.run(replica_fn)

    mean, variance = gather()
    first = strategy.experimental_local_results
    return float(first(mean)[0]), float(first(variance)[0])


def _sync_non_trainable(strategy, model):
    """Averages the float non-trainable variables (e.g. BN moving statistics) over replicas."""
    variables = [v for v in model.non_trainable_variables if "float" in str(v.dtype)]
    if not variables or strategy.num_replicas_in_sync == 1:
        return

    @tf.function
    def sync():
        def replica_fn():
            ctx = tf.distribute.get_replica_context()
            values = [tf.identity(v.value) for v in variables]
            means = ctx.all_reduce(tf.distribute.ReduceOp.MEAN, values)
            for v, m in zip(variables, means):
                v.assign(m)

        strategy.run(replica_fn)

    sync()


def _build(config, strategy, steps_per_epoch=None):
    """Model, optimizer (loss-scaled under mixed_float16), epoch counter and checkpoint."""

    with strategy.scope():
        model = build_classifier(config.model, config.data)
        optimizer = make_optimizer(config.trainer, strategy.num_replicas_in_sync, steps_per_epoch)
        if keras.mixed_precision.global_policy().name == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(model.trainable_variables)
        # Compiled (never fit) so that saved models carry the same compile config as fit's.
        model.compile(optimizer=optimizer, **classification_compile_args(config.trainer))
        epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=epoch)
    return model, optimizer, epoch, checkpoint


def _step_functions(config, strategy, model, optimizer, global_batch):
    """`train_step(iterator)` and `eval_step(x, y)`: global sums of (loss, correct, examples)."""
    loss_fn = classification_loss(config.trainer, reduction=None)

    def sums(y, probabilities, per_example):
        y = tf.cast(tf.reshape(y, [-1]), tf.int64)
        correct = tf.cast(tf.equal(tf.argmax(probabilities, axis=-1), y), tf.float32)
        return (
            tf.reduce_sum(tf.cast(per_example, tf.float32)),
            tf.reduce_sum(correct),
            tf.cast(tf.shape(y)[0], tf.float32),
        )

    def forward_backward(x, y):
        with tf.GradientTape() as tape:
            probabilities = tf.cast(model(x, training=True), tf.float32)
            per_example = loss_fn(y, probabilities)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
            if model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
            scaled = optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, model.trainable_variables)
        return grads, sums(y, probabilities, per_example)

    if config.runtime.jit_compile is True:
        # XLA for the computation only: the optimizer's cross-replica all-reduce stays outside.
        forward_backward = tf.function(forward_backward, jit_compile=True)

    def replica_train(x, y):
        grads, result = forward_backward(x, y)
        optimizer.apply(grads, model.trainable_variables)
        return result

    def replica_eval(x, y):
        probabilities = tf.cast(model(x, training=False), tf.float32)
        return sums(y, probabilities, loss_fn(y, probabilities))

    @tf.function
    def train_step(iterator):
        x, y = next(iterator)
        results = strategy.run(replica_train, args=(x, y))
        return [strategy.reduce(SUM, r, axis=None) for r in results]

    @tf.function
    def eval_step(x, y):
        results = strategy.run(replica_eval, args=(x, y))
        return [strategy.reduce(SUM, r, axis=None) for r in results]

    return train_step, eval_step


def _evaluate(eval_step, dataset):
    total = np.zeros(3)
    for x, y in dataset:
        total += [float(v) for v in eval_step(x, y)]
    return total


def train_loop(config, model_dir, strategy, data, hparams=None):
    """Trains `config` under `strategy` with the custom loop; returns a `TrainingRun`.

    Every worker calls this with the same arguments. `data` is a `training.trainer.TrainingData`.
    """

    model_dir = pathlib.Path(model_dir)
    _, task_id, is_chief, num_workers = runtime.worker_info(strategy)
    replicas = strategy.num_replicas_in_sync
    global_batch = config.data.batch_size
    if global_batch % replicas:
        raise ConfigError(
            f"data.batch_size={global_batch} (the global batch) must be divisible by the "
            f"{replicas} replicas."
        )
    steps_per_epoch = config.trainer.steps_per_epoch or math.ceil(data.size("train") / global_batch)

    train_ds = strategy.distribute_datasets_from_function(
        lambda ctx: data.dataset("train", config.data, training=True, input_context=ctx, repeat=True)
    )
    val_ds = strategy.distribute_datasets_from_function(
        lambda ctx: data.dataset("validation", config.data, input_context=ctx)
    )
    model, optimizer, epoch, checkpoint = _build(config, strategy, steps_per_epoch)
    train_step, eval_step = _step_functions(config, strategy, model, optimizer, global_batch)

    # Resume: everyone waits until the chief has prepared DIR, then restores the same epoch.
    backup_dir = model_dir / "backup"
    _agree(strategy)
    latest = tf.train.latest_checkpoint(str(backup_dir))
    if latest:
        checkpoint.restore(latest).assert_existing_objects_matched()
    epochs_done = int(epoch.numpy())
    _, spread = _agree(strategy, epochs_done)
    if spread > 0:
        raise RuntimeError(
            f"Workers restored different epochs from {backup_dir} (this one: {epochs_done}); "
            "every worker must see the same model directory (shared storage)."
        )
    if latest:
        print(f"[train] worker {task_id}: resumed from {latest} after epoch {epochs_done}")

    # Other workers save too (saving can involve collectives) but into a scratch directory
    # that the chief's next start-up removes if a kill left it behind.
    write_dir = backup_dir if is_chief else backup_dir / f".tmp-worker{task_id}"
    write_dir.mkdir(parents=True, exist_ok=True)
    manager = tf.train.CheckpointManager(checkpoint, str(write_dir), max_to_keep=1 if not is_chief else 2)

    # The same epoch-end callbacks as fit, driven by hand; files are the chief's.
    monitor = config.trainer.monitor
    callbacks = []
    if config.trainer.early_stopping_patience:  # every worker must stop at the same epoch
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor=monitor, patience=config.trainer.early_stopping_patience,
            mode=monitor_mode(monitor)))
    wall_clock = None
    if is_chief:
        report_lib.truncate_history(model_dir / "history.csv", epochs_done)
        wall_clock = WallClock(model_dir)
        callbacks += [
            wall_clock,
            keras.callbacks.CSVLogger(str(model_dir / "history.csv"), append=True),
            BestModelCheckpoint(model_dir / "checkpoints" / "best.keras", monitor=monitor,
                                mode=monitor_mode(monitor)),
            keras.callbacks.TensorBoard(str(model_dir / "logs"), write_graph=False, update_freq="epoch"),
        ]
        if hparams is not None:
            callbacks.append(HParamsLogger(model_dir / "logs", hparams, trial_id=config.name))
    callbacks = keras.callbacks.CallbackList(callbacks, model=model)

    announce(config, data, strategy)
    iterator = iter(train_ds)
    start = time.time()
    epochs_run = 0
    model.stop_training = False
    callbacks.on_train_begin()
    try:
        for current in range(epochs_done, config.trainer.epochs):
            epoch_start = time.time()
            total = np.zeros(3)
            for _ in range(steps_per_epoch):
                total += [float(v) for v in train_step(iterator)]
            _sync_non_trainable(strategy, model)
            val = _evaluate(eval_step, val_ds)
            logs = {
                "accuracy": total[1] / total[2],
                "loss": total[0] / total[2],
                "val_accuracy": val[1] / max(val[2], 1.0),
                "val_loss": val[0] / max(val[2], 1.0),
            }
            callbacks.on_epoch_end(current, dict(logs))
            epoch.assign(current + 1)
            manager.save(checkpoint_number=current + 1)
            epochs_run += 1
            if config.trainer.verbose:
                print(f"Epoch {current + 1}/{config.trainer.epochs} - "
                      f"{time.time() - epoch_start:.1f}s - "
                      + " - ".join(f"{k}: {v:.4f}" for k, v in logs.items()), flush=True)
            if model.stop_training:
                break
    finally:
        callbacks.on_train_end()
        if not is_chief:
            shutil.rmtree(write_dir, ignore_errors=True)
    return TrainingRun(
        model=model,
        epochs_run=epochs_run,
        seconds=time.time() - start,
        is_chief=is_chief,
        num_workers=num_workers,
        jit_compile=config.runtime.jit_compile is True,
        previous_seconds=wall_clock.previous_seconds if wall_clock else 0.0,
        runs=wall_clock.runs if wall_clock else 1,
    )
