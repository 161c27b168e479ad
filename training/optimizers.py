"""The optimizer of a training run, from `trainer.*` (shared by every training path).

`trainer.optimizer` (`adam`, `adamw`, `sgd`), `weight_decay`, the learning-rate schedule
(`lr_schedule: constant | cosine`, linear warm-up over `warmup_epochs` or `warmup_steps`) and
gradient clipping (`clipnorm` or `global_clipnorm`). Every schedule is a Keras built-in
(`CosineDecay`), so saved models reload without custom objects. The defaults build the same
optimizer as before these options existed: a constant learning rate, no clipping, and each
optimizer's own weight decay.
"""

import math

import keras

import mmkeras.optimizers
from mmkeras.configs import ConfigError


def steps_per_epoch(trainer_config, train_examples, global_batch_size):
    """Optimizer steps per epoch: `trainer.steps_per_epoch`, else the batches of the train
    split (the last one partial)."""
    if trainer_config.steps_per_epoch:
        return int(trainer_config.steps_per_epoch)
    return max(1, math.ceil(train_examples / global_batch_size))


def learning_rate(trainer_config, replicas=1, steps_per_epoch=None):
    """The learning rate (a float) or schedule (a `LearningRateSchedule`) of `trainer.*`.

    `steps_per_epoch` is needed by `lr_schedule: cosine` and by `warmup_epochs`; without it
    `trainer.steps_per_epoch` is used.
    """
    lr = trainer_config.learning_rate
    if trainer_config.scale_lr_with_replicas:
        lr *= replicas
    schedule = trainer_config.lr_schedule
    warmup_epochs = trainer_config.warmup_epochs or 0.0
    warmup_steps = trainer_config.warmup_steps
    if schedule == "constant" and not warmup_steps and not warmup_epochs:
        return lr
    steps_per_epoch = steps_per_epoch or trainer_config.steps_per_epoch
    needs_epochs = schedule == "cosine" or (warmup_epochs and not warmup_steps)
    if needs_epochs and not steps_per_epoch:
        raise ConfigError(
            f"trainer.lr_schedule={schedule!r} with trainer.warmup_epochs={warmup_epochs} needs "
            "the steps per epoch: set trainer.steps_per_epoch (or trainer.warmup_steps with a "
            "constant schedule)."
        )
    if warmup_steps is None:
        warmup_steps = int(round(warmup_epochs * steps_per_epoch)) if warmup_epochs else 0
    if schedule == "constant":
        # CosineDecay with alpha=1 stays at its peak: a linear warm-up to a constant rate.
        return keras.optimizers.schedules.CosineDecay(
            0.0, decay_steps=1, alpha=1.0, warmup_target=lr, warmup_steps=warmup_steps,
        )
    if schedule != "cosine":
        raise ConfigError(f"Unknown trainer.lr_schedule '{schedule}'.")
    total = int(trainer_config.epochs * steps_per_epoch)
    decay_steps = max(1, total - warmup_steps)
    if not warmup_steps:
        return keras.optimizers.schedules.CosineDecay(
            lr, decay_steps=decay_steps, alpha=trainer_config.min_lr_ratio
        )
    return keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=decay_steps, alpha=trainer_config.min_lr_ratio,
        warmup_target=lr, warmup_steps=warmup_steps,
    )


def make_optimizer(trainer_config, replicas, steps_per_epoch=None, model=None):
    """The configured optimizer.

    Args:
        trainer_config: a `TrainerConfig`.
        replicas: replicas in sync; the learning rate is multiplied by it when
            `trainer.scale_lr_with_replicas` is set (the global batch is fixed, so this is off
            by default).
        steps_per_epoch: optimizer steps per epoch (`steps_per_epoch()`), for schedules
            counted in epochs; None: `trainer.steps_per_epoch`.
        model: the model to train; `trainer.lr_multipliers` name its layers.
    """
    lr = learning_rate(trainer_config, replicas, steps_per_epoch)
    kwargs = {}
    if trainer_config.weight_decay is not None:
        kwargs["weight_decay"] = trainer_config.weight_decay
    if trainer_config.clipnorm is not None:
        kwargs["clipnorm"] = trainer_config.clipnorm
    if trainer_config.global_clipnorm is not None:
        kwargs["global_clipnorm"] = trainer_config.global_clipnorm
    if trainer_config.lr_multipliers:
        kwargs["lr_multipliers"] = dict(trainer_config.lr_multipliers)
    name = trainer_config.optimizer.lower()
    # With clipping, mmkeras's subclasses clip the global batch's gradient under a strategy
    # (Keras clips each replica's share), and they hold the learning-rate multipliers;
    # without either, Keras's own classes, as saved before.
    library = (mmkeras.optimizers if kwargs.keys() & {"clipnorm", "global_clipnorm", "lr_multipliers"}
               else keras.optimizers)
    if name == "adam":
        optimizer = library.Adam(lr, **kwargs)
    elif name == "adamw":
        optimizer = library.AdamW(lr, **kwargs)
    elif name == "sgd":
        optimizer = library.SGD(lr, momentum=trainer_config.momentum, **kwargs)
    else:
        raise ValueError(f"Unknown trainer.optimizer '{trainer_config.optimizer}'.")
    if "lr_multipliers" in kwargs:
        if model is None:
            raise ValueError("trainer.lr_multipliers needs the model: pass make_optimizer(model=).")
        try:
            optimizer.bind_layers(model)
        except ValueError as e:
            raise ConfigError(f"trainer.{e}") from None
    return optimizer
