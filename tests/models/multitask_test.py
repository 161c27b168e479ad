"""Multi-task heads (`model.tasks`): outputs, targets, loss weights, `.keras` round trip."""

import keras
import numpy as np
import pytest

from mmkeras import features
from mmkeras.configs import ConfigError
from mmkeras.configs import load_config
from mmkeras.configs.experiment_config import TASK_TARGETS
from mmkeras.models import build_classifier
from mmkeras.models import multitask
from tests.models.fusion_classifier_test import TINY
from tests.models.fusion_classifier_test import _inputs

TASKS = (
    "model.tasks=[{name: audio_digit, input: audio, loss_weight: 0.5},"
    " {name: image_digit, input: image, loss_weight: 0.25},"
    " {name: parity, input: fused, target: parity, loss_weight: 0.2, head_units: [4]}]"
)


def _config(*extra):
    return load_config(None, TINY + [TASKS, *extra])


def _build(*extra):
    keras.utils.set_random_seed(0)
    config = _config(*extra)
    return config, build_classifier(config.model, config.data)


def test_every_config_target_has_a_function():
    assert set(multitask.TARGETS) == set(TASK_TARGETS)


def test_outputs_one_softmax_per_head():
    config, model = _build()
    out = model(_inputs(model))
    assert set(out) == {"probabilities", "audio_digit", "image_digit", "parity"}
    assert multitask.output_names(config.model) == [
        "probabilities", "audio_digit", "image_digit", "parity"]
    for name, classes in [("probabilities", 10), ("audio_digit", 10), ("image_digit", 10),
                          ("parity", 2)]:
        probs = np.asarray(out[name])
        assert probs.shape == (3, classes)
        np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    # The per-modality heads read their encoder's embedding, linearly.
    assert model.get_layer("audio_digit").input.shape[-1] == config.model.audio_encoder.embedding_dim
    assert model.get_layer("parity_dense0").units == 4


def test_targets_and_loss_weights():
    config = _config()
    labels = np.array([0, 1, 2, 7, 9])
    t = multitask.targets(labels, config.model)
    np.testing.assert_array_equal(t["probabilities"], labels)
    np.testing.assert_array_equal(t["audio_digit"], labels)
    np.testing.assert_array_equal(t["parity"], [0, 1, 0, 1, 1])
    args = multitask.compile_args(config.model)
    assert args["loss_weights"] == {
        "probabilities": 1.0, "audio_digit": 0.5, "image_digit": 0.25, "parity": 0.2}
    assert set(args["metrics"]) == set(args["loss"]) == set(args["loss_weights"])


def test_total_loss_is_the_weighted_sum_of_head_losses():
    config, model = _build("model.main_loss_weight=0.7", "model.head_dropout=0.0")
    model.compile(optimizer="sgd", **multitask.compile_args(config.model))
    x = _inputs(model, batch=6)
    labels = np.arange(6) % 10
    y = multitask.targets(labels, config.model)
    logs = model.evaluate(x, y, verbose=0, return_dict=True)
    out = model.predict(x, verbose=0)
    cce = keras.losses.SparseCategoricalCrossentropy()
    weights = multitask.compile_args(config.model)["loss_weights"]
    expected = sum(w * float(cce(y[name], out[name])) for name, w in weights.items())
    assert logs["loss"] == pytest.approx(expected, rel=1e-4)
    assert "parity_accuracy" in logs and "audio_digit_loss" in logs


def test_modality_heads_are_masked_by_the_presence_flags():
    # An example without audio in its data adds nothing to the audio head's loss; the main
    # head and the fused head keep every example. Keras weighs per output by the dict.
    config, model = _build("model.head_dropout=0.0")
    model.compile(optimizer="sgd", **multitask.compile_args(config.model))
    x = _inputs(model, batch=6)
    x["audio_present"] = np.array([1, 0, 1, 0, 1, 1], "float32")
    labels = np.arange(6) % 10
    y = multitask.targets(labels, config.model)
    weights = multitask.sample_weights(x, config.model)
    np.testing.assert_array_equal(weights["audio_digit"], x["audio_present"])
    np.testing.assert_array_equal(weights["image_digit"], np.ones(6))
    np.testing.assert_array_equal(weights["parity"], np.ones(6))
    np.testing.assert_array_equal(weights["probabilities"], np.ones(6))
    logs = model.evaluate(x, y, sample_weight=weights, verbose=0, return_dict=True)
    out = model.predict(x, verbose=0)
    keep = x["audio_present"] > 0
    per_example = keras.losses.sparse_categorical_crossentropy(
        labels, out["audio_digit"]).numpy()
    # Keras's reduction: sum(w * loss) / batch size, so the absent examples add zero.
    assert logs["audio_digit_loss"] == pytest.approx(per_example[keep].sum() / 6, rel=1e-4)
    assert logs["image_digit_loss"] == pytest.approx(float(keras.losses.sparse_categorical_crossentropy(
        labels, out["image_digit"]).numpy().mean()), rel=1e-4)


def test_keras_round_trip_and_main_model(tmp_path):
    config, model = _build()
    x = _inputs(model)
    before = model(x)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    after = loaded(x)
    for name in before:
        np.testing.assert_allclose(np.asarray(after[name]), np.asarray(before[name]), atol=1e-6)
    main = multitask.main_model(loaded)
    assert not isinstance(main.output, dict)
    assert sorted(t.name for t in main.inputs) == sorted(t.name for t in model.inputs)
    np.testing.assert_allclose(np.asarray(main(x)), np.asarray(before["probabilities"]), atol=1e-6)
    assert "parity" not in [layer.name for layer in main.layers]
    main.save(tmp_path / "main.keras")  # the model of record round-trips on its own
    reloaded = keras.saving.load_model(tmp_path / "main.keras")
    np.testing.assert_allclose(np.asarray(reloaded(x)), np.asarray(before["probabilities"]),
                               atol=1e-6)
    single = build_classifier(load_config(None, TINY).model)
    assert multitask.main_model(single) is single


def test_late_fusion_tasks_need_a_modality_input():
    with pytest.raises(ValueError, match="decision-level fusion"):
        _build("model.fusion.type=late")
    _, model = _build("model.fusion.type=late",
                      "model.tasks=[{name: audio_digit, input: audio}]")
    assert set(model.output) == {features.PROBABILITIES, "audio_digit"}


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.tasks=[{name: a, inptu: audio}]", r"model\.tasks\[0\]\.inptu"),
        ("model.tasks=[{name: a, input: text}]", r"model\.tasks\[0\]\.input"),
        ("model.tasks=[{name: a, target: odd}]", r"model\.tasks\[0\]\.target"),
        ("model.tasks=[{name: probabilities}]", r"model\.tasks\[0\]\.name"),
        ("model.tasks=[{name: audio}]", r"model\.tasks\[0\]\.name"),
        ("model.tasks=[{name: a}, {name: a}]", r"model\.tasks\[1\]\.name"),
        ("model.tasks=[{input: audio}]", r"model\.tasks\[0\]\.name"),
        ("model.tasks=[{name: a, loss_weight: -1}]", r"model\.tasks\[0\]\.loss_weight"),
        ("model.tasks=[{name: a, loss_weight: high}]", r"model\.tasks\[0\]\.loss_weight"),
        ("model.main_loss_weight=-0.5", r"model\.main_loss_weight"),
        ("model.tasks={name: a}", r"model\.tasks"),
    ],
)
def test_bad_tasks_are_named(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_task_metrics_score_a_modality_head_where_the_modality_is_present():
    import tensorflow as tf

    from training.tasks.classification import task_metrics

    config, model = _build()
    x = _inputs(model, batch=6)
    x["audio_present"] = np.array([1, 0, 1, 0, 1, 1], "float32")
    labels = np.arange(6) % 10
    dataset = tf.data.Dataset.from_tensor_slices((x, labels)).batch(4)
    result = task_metrics(model, dataset, config.model)
    assert result["audio_digit"]["examples"] == 4
    assert result["image_digit"]["examples"] == result["probabilities"]["examples"] == 6
    out = model.predict(x, verbose=0)
    keep = x["audio_present"] > 0
    expected = float(np.mean(out["audio_digit"][keep].argmax(-1) == labels[keep]))
    assert result["audio_digit"]["accuracy"] == pytest.approx(expected)
