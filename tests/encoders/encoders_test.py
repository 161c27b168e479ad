"""Encoders of every modality: shapes, token outputs, configs, serialisation, a train step."""

import numpy as np
import pytest
import keras

from mmkeras import encoders
from mmkeras import features
from mmkeras.configs import load_config
from mmkeras.layers import MFCC
from mmkeras.layers import SpecAugment
from mmkeras.models import build_classifier
from mmkeras.models import build_encoder

B = 2


def _zeros(model):
    spec = model.inputs[0]
    dtype = "int32" if "int" in str(spec.dtype) else "float32"
    return np.ones((B, *spec.shape[1:]), dtype) if dtype == "int32" else np.random.default_rng(
        0).random((B, *spec.shape[1:])).astype("float32")


CASES = {
    "image_cnn": lambda rs: encoders.image_cnn_encoder(embedding_dim=16, return_sequence=rs),
    "image_resnet": lambda rs: encoders.image_resnet_encoder(
        filters=(8, 16), embedding_dim=16, return_sequence=rs),
    "image_mobilenet": lambda rs: encoders.image_application_encoder(
        "MobileNetV2", (32, 32, 1), embedding_dim=16, alpha=0.35, return_sequence=rs),
    "audio_log_mel": lambda rs: encoders.audio_cnn_encoder(
        filters=(8,), embedding_dim=16, return_sequence=rs),
    "audio_mfcc_specaug": lambda rs: encoders.audio_cnn_encoder(
        filters=(8,), embedding_dim=16, features_type="mfcc",
        spec_augment=dict(freq_masks=1, time_masks=1), return_sequence=rs),
    "text_gru": lambda rs: encoders.text_encoder(50, 8, "gru", 8, 8, embedding_dim=16,
                                                 return_sequence=rs),
    "text_lstm": lambda rs: encoders.text_encoder(50, 8, "lstm", 8, 8, embedding_dim=16,
                                                  return_sequence=rs),
    "text_cnn": lambda rs: encoders.text_encoder(50, 8, "cnn", 8, 8, 2, embedding_dim=16,
                                                 return_sequence=rs),
    "text_transformer": lambda rs: encoders.text_encoder(50, 8, "transformer", 8, 16, 1, 2,
                                                         embedding_dim=16, return_sequence=rs),
    "video_cnn_gru": lambda rs: encoders.video_encoder((4, 32, 32, 1), "cnn_gru", (8,), 8, 16,
                                                       return_sequence=rs),
    "video_cnn_attention": lambda rs: encoders.video_encoder(
        (4, 32, 32, 1), "cnn_attention", (8,), 8, 16, return_sequence=rs),
    "video_conv3d": lambda rs: encoders.video_encoder((4, 32, 32, 1), "conv3d", (8, 8), 8, 16,
                                                      return_sequence=rs),
    "timeseries_cnn": lambda rs: encoders.timeseries_encoder((100, 6), "cnn", (8,), 8, 16,
                                                             return_sequence=rs),
    "timeseries_gru": lambda rs: encoders.timeseries_encoder((100, 6), "gru", (8,), 8, 16,
                                                             return_sequence=rs),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_embedding_and_tokens(name):
    plain = CASES[name](False)
    x = _zeros(plain)
    assert plain(x).shape == (B, 16)
    with_tokens = CASES[name](True)
    out = with_tokens(x)
    assert set(out) == {features.EMBEDDING, features.TOKENS}
    assert out[features.EMBEDDING].shape == (B, 16)
    tokens = out[features.TOKENS]
    assert tokens.ndim == 3 and tokens.shape[0] == B and tokens.shape[-1] == 16


def test_input_is_named_after_the_feature_key():
    assert encoders.text_encoder(10, 4).inputs[0].name == "text"
    assert encoders.video_encoder((2, 16, 16, 1), filters=(4,)).inputs[0].name == "video"
    assert encoders.tabular_encoder(2, 1).inputs[0].name == "tabular"
    assert encoders.timeseries_encoder().inputs[0].name == "timeseries"


def test_default_image_and_audio_encoders_unchanged():
    image, audio = encoders.image_cnn_encoder(), encoders.audio_cnn_encoder()
    assert len(image.outputs) == 1 and image.output.shape == (None, 64)
    assert len(audio.outputs) == 1 and audio.output.shape == (None, 64)
    assert [l.name for l in audio.layers][:3] == ["audio", "log_mel", "add_channel"]


def test_tabular_encoder_embeds_categories():
    encoder = encoders.tabular_encoder(2, 2, categorical_bins=5, category_dim=3, units=(8,),
                                       embedding_dim=4)
    x = np.array([[0.5, -1.0, 1.0, 4.0], [0.5, -1.0, 2.0, 4.0]], "float32")
    out = np.asarray(encoder(x))
    assert out.shape == (2, 4)
    features_layer = encoder.get_layer("features")
    f = np.asarray(features_layer(x))
    assert f.shape == (2, 2 + 2 * 3)
    assert not np.allclose(f[0], f[1])  # Different category id, different embedding.


def test_application_backbone_loads_local_weights_only(tmp_path):
    first = encoders.image_application_encoder("MobileNetV2", (32, 32, 3), alpha=0.35)
    backbone = [l for l in first.layers if isinstance(l, keras.Model)][0]
    path = tmp_path / "backbone.weights.h5"
    backbone.save_weights(path)
    second = encoders.image_application_encoder("MobileNetV2", (32, 32, 3), weights=str(path),
                                                alpha=0.35, trainable_backbone=False)
    other = [l for l in second.layers if isinstance(l, keras.Model)][0]
    for a, b in zip(backbone.get_weights(), other.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert not other.trainable
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        encoders.image_application_encoder("MobileNetV2", (32, 32, 3), weights=str(tmp_path / "x.h5"))
    with pytest.raises(ValueError, match="no backbone"):
        encoders.image_application_encoder("NoSuchNet")


def test_spec_augment_masks_in_training_only():
    layer = SpecAugment(freq_masks=2, freq_mask_width=5, time_masks=2, time_mask_width=6, seed=1)
    x = np.ones((4, 40, 60), "float32")
    np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)
    y = np.asarray(layer(x, training=True))
    assert y.shape == x.shape and (y == 0).any() and (y == 1).any()
    # Masks are whole frequency rows or whole time columns.
    for example in y:
        zero = example == 0
        rows, cols = zero.all(axis=1), zero.all(axis=0)
        np.testing.assert_array_equal(zero, rows[:, None] | cols[None, :])
        assert rows.sum() <= 10 and cols.sum() <= 12
    assert SpecAugment.from_config(layer.get_config()).time_mask_width == 6


def test_mfcc_matches_the_orthonormal_dct():
    scipy_fft = pytest.importorskip("scipy.fft")
    x = np.random.default_rng(0).normal(size=(2, 40, 7)).astype("float32")
    got = np.asarray(MFCC(13)(x))
    want = scipy_fft.dct(x, type=2, norm="ortho", axis=1)[:, :13]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("overrides", [
    ["model.image_encoder.type=resnet", "model.image_encoder.filters=[8,16]"],
    ["model.image_encoder.type=application", "model.image_encoder.backbone=MobileNetV2",
     "data.image_shape=[32,32,1]"],
    ["model.audio_encoder.features=mfcc", "model.audio_encoder.time_masks=2",
     "model.audio_encoder.freq_masks=1"],
])
def test_build_encoder_from_config(overrides):
    config = load_config(None, overrides)
    for m in config.model.modalities:
        encoder = build_encoder(m, config.model, config.data)
        assert encoder.inputs[0].name == m
        assert encoder.output.shape[-1] == 64


def test_classifier_over_every_new_modality_trains_and_round_trips(tmp_path):
    config = load_config(None, [
        "model.modalities=[text,video,tabular,timeseries]",
        "model.num_classes=3",
        "data.text_max_tokens=30", "data.text_sequence_length=6",
        "data.video_frames=3", "data.video_shape=[16,16,1]",
        "data.tabular_numeric=[a,b]", "data.tabular_categorical=[c]",
        "data.tabular_categorical_bins=4",
        "data.timeseries_steps=20", "data.timeseries_channels=3",
        "model.text_encoder.type=transformer", "model.text_encoder.units=16",
        "model.video_encoder.filters=[4]", "model.timeseries_encoder.filters=[4]",
        "model.head_units=[8]",
    ])
    model = build_classifier(config.model, config.data)
    rng = np.random.default_rng(0)
    x = {
        "text": rng.integers(0, 30, (4, 6)).astype("int32"),
        "video": rng.random((4, 3, 16, 16, 1)).astype("float32"),
        "tabular": np.concatenate([rng.normal(size=(4, 2)), rng.integers(0, 4, (4, 1))], 1)
        .astype("float32"),
        "timeseries": rng.normal(size=(4, 20, 3)).astype("float32"),
    }
    for m in list(x):
        x[features.presence_key(m)] = np.ones(4, "float32")
    assert model.input["text"].dtype == "int32"
    model.compile("adam", "sparse_categorical_crossentropy")
    loss = model.train_on_batch(x, np.array([0, 1, 2, 1]))
    assert np.isfinite(loss)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), atol=1e-5)


def test_text_classifier_converts_to_builtin_tflite():
    """Token ids in, no strings and no TensorList loops: builtin-only TFLite, same outputs."""
    import tensorflow as tf

    interpreter_module = pytest.importorskip("ai_edge_litert.interpreter")
    config = load_config(None, ["model.modalities=[text]", "model.text_encoder.type=gru",
                                "data.text_max_tokens=100", "data.text_sequence_length=8",
                                "model.text_encoder.units=8", "model.head_units=[8]"])
    model = build_classifier(config.model, config.data)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    interpreter = interpreter_module.Interpreter(model_content=converter.convert())
    runner = interpreter.get_signature_runner()
    x = {"text": np.array([[5, 7, 2, 0, 0, 0, 0, 0]], "int32"),
         "text_present": np.ones((1,), "float32")}
    got = list(runner(**x).values())[0]
    np.testing.assert_allclose(got, np.asarray(model(x)), atol=1e-5)


def test_audio_front_end_makes_the_encoder_gain_and_silence_invariant(tmp_path):
    encoder = encoders.audio_cnn_encoder(num_samples=4000, filters=(4,), embedding_dim=8,
                                num_mel_bins=16, loudness="rms", trim_silence=True, trim_window=128)
    t = np.arange(1500)
    burst = (np.sin(2 * np.pi * 300 * t / 8000) * np.hanning(1500)).astype("float32")
    x = np.zeros((2, 4000), "float32")
    x[0, 300:1800] = burst
    x[1, 2000:3500] = 0.05 * burst  # -26 dB, 1,700 samples later
    out = np.asarray(encoder(x))
    np.testing.assert_allclose(out[0], out[1], atol=1e-5)
    plain = encoders.audio_cnn_encoder(num_samples=4000, filters=(4,), embedding_dim=8, num_mel_bins=16)
    assert len(plain.layers) == len(encoder.layers) - 2
    path = str(tmp_path / "audio.keras")
    encoder.save(path)
    np.testing.assert_allclose(np.asarray(keras.saving.load_model(path)(x)), out, atol=1e-6)


def test_features_of_one_type_get_encoders_of_their_own():
    """`title` and `description` (text), `front` and `back` (image): one encoder each, named
    `<feature>_encoder`, built from the type's settings, with separate weights; a pair of
    features that would share a layer name is refused in one line."""
    config = load_config(None, [
        "data.modality_types={title: text, description: text, front: image, back: image}",
        "model.modalities=[title, description, front, back]", "model.num_classes=3",
        "data.text_max_tokens=30", "data.text_sequence_length=6", "data.image_shape=[12,12,3]",
        "model.text_encoder.units=8", "model.image_encoder.filters=[4]", "model.head_units=[8]",
    ])
    model = build_classifier(config.model, config.data)
    names = [layer.name for layer in model.layers]
    for m in ("title", "description", "front", "back"):
        assert m in names and f"{m}_present" in names and f"{m}_encoder" in names
    assert "text_encoder" not in names and "image_encoder" not in names
    title, description = model.get_layer("title_encoder"), model.get_layer("description_encoder")
    assert title.input.name == "title" and description.input.name == "description"
    assert [w.shape for w in title.weights] == [w.shape for w in description.weights]
    assert not {id(w) for w in title.weights} & {id(w) for w in description.weights}
    assert model.input["front"].shape[1:] == (12, 12, 3) == model.input["back"].shape[1:]
    assert model.input["title"].dtype == "int32"
    rng = np.random.default_rng(0)
    x = {"title": rng.integers(0, 30, (2, 6)).astype("int32"),
         "description": rng.integers(0, 30, (2, 6)).astype("int32"),
         "front": rng.random((2, 12, 12, 3)).astype("float32"),
         "back": rng.random((2, 12, 12, 3)).astype("float32")}
    x.update({features.presence_key(m): np.ones(2, "float32") for m in list(x)})
    assert model(x).shape == (2, 3)

    # Built from configs that skipped the load-time check: a clear line, not Keras's.
    from mmkeras.configs import DataConfig
    import dataclasses

    clash = dataclasses.replace(config.data, modality_types={"title": "text",
                                                             "title_encoder": "text"})
    model_config = dataclasses.replace(config.model, modalities=["title", "title_encoder"])
    with pytest.raises(ValueError, match=r"^features 'title' and 'title_encoder' both make a "
                                         r"layer named 'title_encoder'"):
        build_classifier(model_config, clash)
    with pytest.raises(ValueError, match=r"feature 'fusion': the name is reserved"):
        build_classifier(dataclasses.replace(config.model, modalities=["fusion", "title"]),
                         DataConfig(modality_types={"fusion": "text", "title": "text"}))
