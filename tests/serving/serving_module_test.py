"""`serving_module.build_archive` on single-output and multi-task (dict output) models: tiny
functional models, exported, reloaded and called by signature name."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from serving import serving_module as sm


def _model(heads=()):
    """A tiny image+audio classifier; `heads` adds `{name: classes}` softmax outputs (a dict)."""
    keras.utils.set_random_seed(3)
    image = keras.Input((4, 4, 1), name="image")
    audio = keras.Input((16,), name="audio")
    hidden = keras.layers.Dense(8, activation="relu")(
        keras.layers.Concatenate()([keras.layers.Flatten()(image), audio]))
    main = keras.layers.Dense(3, activation="softmax", name="probabilities")(hidden)
    if not heads:
        return keras.Model({"image": image, "audio": audio}, main)
    outputs = {"probabilities": main}
    for name, classes in heads.items():
        outputs[name] = keras.layers.Dense(classes, activation="softmax", name=name)(hidden)
    return keras.Model({"image": image, "audio": audio}, outputs)


def _inputs(batch=5):
    rng = np.random.default_rng(0)
    return {"image": rng.normal(size=(batch, 4, 4, 1)).astype(np.float32),
            "audio": rng.normal(size=(batch, 16)).astype(np.float32)}


def _export_and_call(model, path):
    sm.build_archive(model, [sm.SERVING_DEFAULT]).write_out(str(path), verbose=False)
    signature = tf.saved_model.load(str(path)).signatures[sm.SERVING_DEFAULT]
    return signature, signature(**{k: tf.constant(v) for k, v in _inputs().items()})


def test_single_output_model_keeps_the_two_outputs(tmp_path):
    model = _model()
    assert sm.head_names(model) == ["probabilities"]
    signature, out = _export_and_call(model, tmp_path / "single")
    assert set(signature.structured_outputs) == {"probabilities", "class_id"}
    expected = np.asarray(model(_inputs(), training=False))
    np.testing.assert_allclose(out["probabilities"].numpy(), expected, atol=1e-6)
    np.testing.assert_array_equal(out["class_id"].numpy(), expected.argmax(-1))


def test_multitask_model_adds_prefixed_heads(tmp_path):
    model = _model({"parity": 2, "audio_digit": 3})
    assert sm.head_names(model)[0] == "probabilities"
    assert set(sm.head_names(model)) == {"probabilities", "parity", "audio_digit"}
    assert sm.head_output_names("parity") == ("parity_probabilities", "parity_class_id")
    signature, out = _export_and_call(model, tmp_path / "multi")
    assert set(signature.structured_outputs) == set(sm.output_names(model)) == {
        "probabilities", "class_id", "parity_probabilities", "parity_class_id",
        "audio_digit_probabilities", "audio_digit_class_id"}
    expected = {k: np.asarray(v) for k, v in model(_inputs(), training=False).items()}
    for head, probs in expected.items():
        probabilities, class_id = sm.head_output_names(head)
        np.testing.assert_allclose(out[probabilities].numpy(), probs, atol=1e-6)
        np.testing.assert_array_equal(out[class_id].numpy(), probs.argmax(-1))
        assert out[class_id].dtype == tf.int64
    assert out["parity_probabilities"].shape == (5, 2)


def test_multitask_model_without_a_main_head_is_refused():
    image = keras.Input((4,), name="image")
    model = keras.Model(image, {"a": keras.layers.Dense(2, name="a")(image)})
    with pytest.raises(ValueError, match="main head under 'probabilities'"):
        sm.build_archive(model)
