"""The optimizer of a training run, from `trainer.*` (shared by every training path)."""

import keras


def make_optimizer(trainer_config, replicas):
    """The configured optimizer; its learning rate times `replicas` when
    `trainer.scale_lr_with_replicas` is set (the global batch is fixed, so this is off by
    default)."""
    lr = trainer_config.learning_rate
    if trainer_config.scale_lr_with_replicas:
        lr *= replicas
    name = trainer_config.optimizer.lower()
    if name == "adam":
        return keras.optimizers.Adam(lr)
    if name == "adamw":
        return keras.optimizers.AdamW(lr)
    if name == "sgd":
        return keras.optimizers.SGD(lr, momentum=0.9)
    raise ValueError(f"Unknown trainer.optimizer '{trainer_config.optimizer}'.")
