"""The training recipe options (`trainer.*`): optimizer, weight decay, learning-rate schedule
with warm-up, gradient clipping, label smoothing; each builds and trains a tiny epoch on the
small real AV-MNIST slice, by `fit` and by the custom loop."""

import math

import keras
import numpy as np
import pytest

import mmkeras.optimizers
from mmkeras.configs import ConfigError
from mmkeras.configs import STANDARD_RECIPE
from mmkeras.configs import TrainerConfig
from mmkeras.configs import load_config
from mmkeras.losses import SparseLabelSmoothingCrossentropy
from training.losses import classification_loss
from training.optimizers import make_optimizer
from training.optimizers import steps_per_epoch

EARLY = "training/configs/avmnist/early_fusion.yaml"
TINY = [
    "trainer.epochs=1",
    "trainer.steps_per_epoch=3",
    "trainer.verbose=0",
    "data.batch_size=16",
    "data.shuffle_buffer=64",
    "runtime.cpu_replicas=1",
    "model.image_encoder.filters=[8]",
    "model.audio_encoder.filters=[8]",
    "model.image_encoder.embedding_dim=16",
    "model.audio_encoder.embedding_dim=16",
    "model.head_units=[16]",
]


def test_trainer_config_defaults_build_the_legacy_optimizer():
    """`TrainerConfig()` itself is the legacy recipe; `load_config` resolves `trainer.recipe`."""
    optimizer = make_optimizer(TrainerConfig(), replicas=1)
    assert type(optimizer) is keras.optimizers.Adam
    assert float(optimizer.learning_rate) == pytest.approx(1e-3)
    assert optimizer.weight_decay is None and optimizer.clipnorm is None
    assert optimizer.global_clipnorm is None
    assert type(classification_loss(TrainerConfig())) is keras.losses.SparseCategoricalCrossentropy
    # AdamW keeps Keras's own default decay unless weight_decay is set.
    assert make_optimizer(TrainerConfig(optimizer="adamw"), 1).weight_decay == pytest.approx(0.004)


def test_options_reach_the_optimizer():
    config = TrainerConfig(optimizer="sgd", weight_decay=1e-4, momentum=0.8, clipnorm=1.5)
    optimizer = make_optimizer(config, 1)
    # Clipping picks mmkeras's subclass (the global batch's gradient is clipped under a strategy).
    assert type(optimizer) is mmkeras.optimizers.SGD
    assert optimizer.weight_decay == pytest.approx(1e-4) and optimizer.momentum == 0.8
    assert optimizer.clipnorm == 1.5
    optimizer = make_optimizer(TrainerConfig(optimizer="adamw", global_clipnorm=2.0,
                                             weight_decay=0.0), 1)
    assert optimizer.global_clipnorm == 2.0 and optimizer.weight_decay == 0.0
    loss = classification_loss(TrainerConfig(label_smoothing=0.1))
    assert isinstance(loss, SparseLabelSmoothingCrossentropy) and loss.label_smoothing == 0.1


def test_cosine_schedule_with_warmup_epochs():
    config = TrainerConfig(learning_rate=1e-2, lr_schedule="cosine", warmup_epochs=1.0,
                           min_lr_ratio=0.1, epochs=5)
    # (the optimizer's `learning_rate` is the current value; call the schedule itself)
    schedule = make_optimizer(config, 1, steps_per_epoch=10)._learning_rate
    lr = lambda step: float(schedule(step))  # noqa: E731
    assert lr(0) == pytest.approx(0.0)
    assert lr(5) == pytest.approx(5e-3)  # linear warm-up over 10 steps
    assert lr(10) == pytest.approx(1e-2)
    # Cosine over the remaining 40 steps, from 1e-2 to 1e-3.
    assert lr(30) == pytest.approx(1e-3 + 0.9e-2 * 0.5, rel=1e-5)
    assert lr(50) == pytest.approx(1e-3, rel=1e-5)
    # Warm-up in steps, constant afterwards.
    flat = make_optimizer(TrainerConfig(learning_rate=1e-2, warmup_steps=4), 1)._learning_rate
    assert [round(float(flat(s)), 6) for s in (0, 2, 4, 100)] == [0.0, 0.005, 0.01, 0.01]
    with pytest.raises(ConfigError, match="steps per epoch"):
        make_optimizer(TrainerConfig(lr_schedule="cosine"), 1)
    assert steps_per_epoch(TrainerConfig(), 100, 16) == 7
    assert steps_per_epoch(TrainerConfig(steps_per_epoch=3), 100, 16) == 3


def _recipe_keys(trainer):
    return {key: getattr(trainer, key) for key in STANDARD_RECIPE}


def test_classification_configs_get_the_standard_recipe_and_legacy_is_one_setting_away(tmp_path):
    from mmkeras.configs import save_config

    config = load_config(EARLY)
    assert config.trainer.recipe == "standard" and _recipe_keys(config.trainer) == STANDARD_RECIPE
    legacy = load_config(EARLY, ["trainer.recipe=legacy"])
    assert legacy.trainer.recipe == "legacy"
    assert _recipe_keys(legacy.trainer) == _recipe_keys(TrainerConfig())
    # The resolved config is saved with every value: it reloads unchanged under either recipe.
    save_config(legacy, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == legacy
    with pytest.raises(ConfigError, match="trainer.recipe"):
        load_config(EARLY, ["trainer.recipe=modern"])


def test_a_model_directory_from_before_the_recipe_reloads_as_legacy():
    from mmkeras.configs import config_from_dict
    from mmkeras.configs import to_dict

    values = to_dict(load_config(EARLY, ["trainer.recipe=legacy"]))
    for key in ("recipe", *STANDARD_RECIPE):  # the keys that did not exist yet
        del values["trainer"][key]
    trainer = config_from_dict(values).trainer
    assert trainer.recipe == "legacy" and _recipe_keys(trainer) == _recipe_keys(TrainerConfig())
    assert config_from_dict(to_dict(load_config(EARLY))).trainer.recipe == "standard"


def test_keys_the_config_sets_win_over_the_recipe():
    trainer = load_config(EARLY, ["trainer.label_smoothing=0", "trainer.lr_schedule=constant"]).trainer
    assert (trainer.label_smoothing, trainer.lr_schedule, trainer.optimizer) == (0, "constant", "adamw")
    # An optimizer given without a weight decay keeps its own default decay.
    trainer = load_config(EARLY, ["trainer.optimizer=sgd"]).trainer
    assert trainer.optimizer == "sgd" and trainer.weight_decay is None
    # Clipping and warm-up given another way are not doubled.
    trainer = load_config(EARLY, ["trainer.global_clipnorm=2", "trainer.warmup_steps=5"]).trainer
    assert trainer.clipnorm is None and trainer.warmup_epochs == 0.0
    # No one-hot classes to smooth: a regression target, or several task heads.
    trainer = load_config(EARLY, ["model.target=regression"]).trainer
    assert trainer.label_smoothing == 0.0 and trainer.optimizer == "adamw"
    trainer = load_config(EARLY, ["model.tasks=[{name: parity, target: parity}]"]).trainer
    assert trainer.label_smoothing == 0.0


def test_other_tasks_keep_the_legacy_recipe():
    from mmkeras.configs.cross_modal_config import load_cross_modal_config

    config = load_cross_modal_config("training/configs/avmnist/dual_encoder.yaml")
    assert config.trainer.recipe == "legacy"
    assert _recipe_keys(config.trainer) == _recipe_keys(TrainerConfig())


@pytest.mark.parametrize("override, message", [
    ("trainer.lr_schedule=linear", "trainer.lr_schedule"),
    ("trainer.label_smoothing=1.0", "trainer.label_smoothing"),
    ("trainer.weight_decay=-0.1", "trainer.weight_decay"),
    ("trainer.clipnorm=0", "trainer.clipnorm"),
])
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(EARLY, [override])
    with pytest.raises(ConfigError, match="not both"):
        load_config(EARLY, ["trainer.clipnorm=1", "trainer.global_clipnorm=1"])


RECIPES = {
    "adamw_cosine_warmup_clip_smooth": [
        "trainer.optimizer=adamw", "trainer.weight_decay=0.01", "trainer.lr_schedule=cosine",
        "trainer.warmup_epochs=0.5", "trainer.clipnorm=1.0", "trainer.label_smoothing=0.1"],
    "sgd_warmup_steps_global_clip": [
        "trainer.optimizer=sgd", "trainer.learning_rate=0.01", "trainer.weight_decay=0.0005",
        "trainer.warmup_steps=2", "trainer.global_clipnorm=1.0",
        "trainer.lr_multipliers={image: 0.5}"],
}


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_trains_a_tiny_epoch(name, avmnist_small, tmp_path):
    from training.trainer import train

    config = load_config(EARLY, TINY + RECIPES[name] + [f"data.data_dir={avmnist_small}"])
    report = train(config, tmp_path / name)
    assert report["epochs"] == 1 and 0.0 <= report["test"]["accuracy"] <= 1.0
    model = keras.saving.load_model(tmp_path / name / "model.keras")
    smoothing = config.trainer.label_smoothing
    assert isinstance(model.loss, SparseLabelSmoothingCrossentropy) == bool(smoothing)
    assert getattr(model.optimizer, "lr_multipliers", {}) == config.trainer.lr_multipliers
    history = (tmp_path / name / "history.csv").read_text().splitlines()
    assert len(history) == 2 and math.isfinite(float(history[1].split(",")[2]))


def test_custom_loop_uses_the_same_recipe(avmnist_small, tmp_path):
    """The custom loop (multi_worker's path; here under the default strategy) builds the same
    optimizer and smoothed loss, and its epoch loss is the smoothed cross-entropy."""
    import tensorflow as tf

    from training import custom_loop
    from training import report as report_lib
    from training.tasks import get_task
    from training.training_data import load_data

    config = load_config(EARLY, TINY + RECIPES["adamw_cosine_warmup_clip_smooth"]
                         + [f"data.data_dir={avmnist_small}", "runtime.distribution=default"])
    data = load_data(config)
    strategy = tf.distribute.get_strategy()
    run = custom_loop.train_loop(get_task(config.task), config, tmp_path / "loop", strategy, data)
    assert run.epochs_run == 1
    assert isinstance(run.model.loss, SparseLabelSmoothingCrossentropy)
    assert isinstance(run.model.optimizer, keras.optimizers.AdamW)
    assert run.model.optimizer.clipnorm == 1.0
    # Smoothing puts a floor under the loss: with s = 0.1 over 10 classes the smoothed target's
    # entropy is > 0.5, so the logged training loss cannot be below it.
    history = report_lib.read_history(tmp_path / "loop" / "history.csv")
    s, k = 0.1, 10
    on, off = 1 - s + s / k, s / k
    entropy = -(on * math.log(on) + (k - 1) * off * math.log(off))
    assert history["loss"][0] > entropy
    # The loss the loop optimised equals the smoothed loss on a batch.
    x, y = next(iter(data.dataset("validation", config.data)))
    p = run.model(x, training=False)
    loop_loss = classification_loss(config.trainer, reduction=None)(y, p)
    onehot = np.eye(k)[np.asarray(y).reshape(-1)] * (1 - s) + s / k
    by_hand = -(onehot * np.log(np.clip(np.asarray(p), 1e-7, 1.0))).sum(-1)
    np.testing.assert_allclose(np.asarray(loop_loss), by_hand, rtol=1e-4, atol=1e-5)


def test_early_stopping_keeps_the_best_epoch(avmnist_small, tmp_path):
    """`trainer.early_stopping_patience` stops on the monitored validation metric, and the
    model of record is the best epoch's (the best checkpoint), not the last one's."""
    from training import report as report_lib
    from training.trainer import train

    config = load_config(EARLY, TINY + [
        "trainer.epochs=4", "trainer.early_stopping_patience=1", "trainer.learning_rate=0.01",
        f"data.data_dir={avmnist_small}"])
    report = train(config, tmp_path / "run")
    history = report_lib.read_history(tmp_path / "run" / "history.csv")
    epochs = len(history["val_accuracy"])
    best_epoch = int(np.argmax(history["val_accuracy"])) + 1  # the first of equal values
    # Keras's EarlyStopping: it stops `patience` epochs after the last improvement.
    assert epochs == min(4, best_epoch + 1)
    assert report["best_validation"]["epoch"] == best_epoch
    assert report["best_validation"]["value"] == pytest.approx(max(history["val_accuracy"]))
    best = keras.saving.load_model(tmp_path / "run" / "checkpoints" / "best.keras")
    record = keras.saving.load_model(tmp_path / "run" / "model.keras")
    for a, b in zip(best.get_weights(), record.get_weights()):
        np.testing.assert_array_equal(a, b)
