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


def _flagged_model(modalities=("audio", "image")):
    """A tiny classifier on `modalities` (vectors; `image` is 4x4x1) with presence flags."""
    keras.utils.set_random_seed(5)
    inputs, parts = {}, []
    for m in modalities:
        shape = (4, 4, 1) if m == "image" else (6,)
        inputs[m] = keras.Input(shape, name=m)
        inputs[f"{m}_present"] = keras.Input((), name=f"{m}_present")
        flag = keras.layers.Reshape((1,))(inputs[f"{m}_present"])
        parts += [keras.layers.Flatten()(inputs[m]), flag]
    hidden = keras.layers.Dense(8, activation="relu")(keras.layers.Concatenate()(parts))
    probabilities = keras.layers.Dense(3, activation="softmax", name="probabilities")(hidden)
    return keras.Model(inputs, probabilities)


def test_subset_signature_names_follow_the_documented_rule():
    two = sm.modality_subsets(_flagged_model(("image", "audio")))
    assert two == {"serve_audio_only": ["audio"], "serve_image_only": ["image"]}
    four = sm.modality_subsets(_flagged_model(("d", "c", "b", "a")))
    assert len(four) == 2**4 - 2
    assert four["serve_a_c_d_only"] == ["a", "c", "d"] and "serve_a_b_c_d_only" not in four
    five = sm.modality_subsets(_flagged_model(("a", "b", "c", "d", "e")))
    assert sorted(five) == [f"serve_{m}_only" for m in "abcde"]  # beyond 4: single ones only
    assert sm.modality_subsets(_flagged_model(("image",))) == {}
    assert sm.subset_signature_name(["image", "audio"]) == "serve_audio_image_only"


def test_each_subset_signature_equals_serving_default_with_the_rest_missing(tmp_path):
    model = _flagged_model(("a", "b", "c"))
    path = tmp_path / "subsets"
    sm.build_archive(model).write_out(str(path), verbose=False)
    signatures = tf.saved_model.load(str(path)).signatures
    rng = np.random.default_rng(1)
    x = {"a": rng.normal(size=(5, 6)), "b": rng.normal(size=(5, 6)), "c": rng.normal(size=(5, 6))}
    x = {k: v.astype(np.float32) for k, v in x.items()}
    subsets = sm.modality_subsets(model)
    assert set(signatures) == {"serving_default", *subsets} and len(subsets) == 6
    for name, subset in subsets.items():
        fn = signatures[name]
        assert set(fn.structured_input_signature[1]) == set(subset)
        got = fn(**{m: tf.constant(x[m]) for m in subset})
        full = {}
        for m in x:
            full[m] = x[m] if m in subset else np.zeros_like(x[m])
            full[f"{m}_present"] = np.full(5, float(m in subset), np.float32)
        expected = signatures["serving_default"](**{k: tf.constant(v) for k, v in full.items()})
        np.testing.assert_array_equal(got["probabilities"].numpy(),
                                      expected["probabilities"].numpy())
        np.testing.assert_array_equal(got["class_id"].numpy(), expected["class_id"].numpy())
        # ... and differs from calling the model with every modality present.
        present = np.asarray(model({**x, **{f"{m}_present": np.ones(5, np.float32) for m in x}}))
        assert np.abs(got["probabilities"].numpy() - present).max() > 1e-4


def test_a_left_out_string_input_is_the_empty_string():
    specs = {"text": tf.TensorSpec([None], tf.string, name="text"),
             "text_present": tf.TensorSpec([None], tf.float32, name="text_present"),
             "image": tf.TensorSpec([None, 2, 2, 1], tf.float32, name="image")}
    out = sm.complete_inputs({"image": tf.ones([3, 2, 2, 1])}, specs, ["image"])
    assert out["text"].numpy().tolist() == [b"", b"", b""]
    assert out["text_present"].numpy().tolist() == [0.0, 0.0, 0.0]
    assert out["image"].shape == (3, 2, 2, 1)
