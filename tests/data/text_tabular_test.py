"""Text vectorised in tf.data (vocab.txt saved and reloaded), string-input export, sharding."""

import numpy as np
import pytest
import tensorflow as tf
import keras

from mmkeras import features
from mmkeras.configs import load_config
from mmkeras.data import Preprocessing
from mmkeras.data import make_dataset
from mmkeras.data import text as text_lib
from mmkeras.models import build_classifier

TEXTS = np.array(["grinning face", "flag: Peru", "red apple", "grinning cat face", "flag: Chile",
                  "green apple", "", "face with tears of joy"])


def _columns():
    present = np.array([t != "" for t in TEXTS], "float32")
    return {
        "id": np.array([f"r{i}" for i in range(len(TEXTS))]),
        "label": np.array([0, 1, 2, 0, 1, 2, 2, 0]),
        "text": TEXTS,
        "text_present": present,
        "tabular": np.array([[1.0], [2.0], [3.0], [4.0], [5.0], [6.0], [7.0], [8.0]], "float32"),
        "tabular_categories": np.array([["a"], ["b"], ["a"], ["a"], ["c"], ["b"], ["z"], ["a"]]),
        "tabular_present": np.ones(len(TEXTS), "float32"),
    }


def _config(*extra):
    return load_config(None, [
        "data.text_max_tokens=50", "data.text_sequence_length=5", "data.batch_size=4",
        "data.shuffle_buffer=0", "data.tabular_numeric=[x]", "data.tabular_categorical=[k]",
        "data.tabular_categorical_bins=3", "model.modalities=[text]", "model.num_classes=3",
        "model.text_encoder.units=8", "model.head_units=[8]", *extra])


def test_vocabulary_from_the_training_split_round_trips(tmp_path):
    config = _config()
    pre = Preprocessing.fit(_columns(), config.data, ["text"])
    vocab = text_lib.vocabulary(pre.vectorizer)
    assert "face" in vocab and "flag" in vocab and "" not in vocab and "[UNK]" not in vocab
    assert vocab[0] == "face"  # The most frequent token gets id 2.
    pre.save(tmp_path)
    assert (tmp_path / "vocab.txt").read_text().splitlines() == vocab
    loaded = Preprocessing.load(tmp_path, config.data, ["text"])
    batch = tf.constant(["grinning face", "unknown words here", ""])
    np.testing.assert_array_equal(np.asarray(pre.vectorizer(batch)),
                                  np.asarray(loaded.vectorizer(batch)))
    ids = np.asarray(loaded.vectorizer(batch))
    assert ids.shape == (3, 5) and ids[1, 0] == 1 and not ids[2].any()  # OOV = 1, pad = 0.


def test_text_is_integer_ids_in_tf_data_and_sharded_by_input_context():
    config = _config()
    columns = _columns()
    pre = Preprocessing.fit(columns, config.data, ["text"])
    ds = make_dataset(columns, config.data, ["text"], preprocessing=pre)
    x, y = next(iter(ds))
    assert x["text"].dtype == tf.int32 and x["text"].shape == (4, 5)
    context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1,
                                         num_replicas_in_sync=2)
    shard = make_dataset(columns, config.data, ["text"], preprocessing=pre, input_context=context)
    labels = np.concatenate([np.asarray(y) for _, y in shard])
    np.testing.assert_array_equal(labels, columns["label"][1::2])
    assert next(iter(shard))[0]["text"].shape[0] == 2  # Per-replica batch: 4 / 2.


def test_string_input_model_matches_the_id_model(tmp_path):
    config = _config()
    columns = _columns()
    pre = Preprocessing.fit(columns, config.data, ["text"])
    model = build_classifier(config.model, config.data)
    wrapped = text_lib.string_input_model(pre.vectorizer, model)
    assert wrapped.input["text"].dtype == "string"
    strings = tf.constant(["grinning face", "flag: Peru"])
    flags = tf.ones([2], tf.float32)
    want = model({"text": pre.vectorizer(strings), "text_present": flags})
    got = wrapped({"text": strings, "text_present": flags})
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-6)
    path = tmp_path / "strings.keras"
    wrapped.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(np.asarray(reloaded({"text": strings, "text_present": flags})),
                               np.asarray(want), atol=1e-6)


def test_tabular_normalises_and_looks_up_with_training_statistics(tmp_path):
    config = _config()
    columns = _columns()
    pre = Preprocessing.fit(columns, config.data, ["tabular"])
    assert pre.tabular["vocabularies"] == [["a", "b"]]  # Capped at bins - 1, most frequent first.
    pre.save(tmp_path)
    loaded = Preprocessing.load(tmp_path, config.data, ["tabular"])
    out = np.asarray(loaded.tabular_vector(tf.constant([[4.5], [1.0]]),
                                           tf.constant([["b"], ["c"]])))
    std = columns["tabular"].std()
    np.testing.assert_allclose(out[:, 0], [0.0, -3.5 / std], rtol=1e-5)
    np.testing.assert_array_equal(out[:, 1], [2.0, 0.0])  # "c" was cut: unknown id 0.


def test_each_text_feature_has_its_own_vocabulary(tmp_path):
    """Two text features (`data.modality_types`): a vectorizer each, adapted on its own
    column, saved as `vocab_<feature>.txt`, applied to its own input in tf.data."""
    config = _config("data.modality_types={title: text, notes: text}",
                     "model.modalities=[title, notes]", "data.modalities=[title, notes]")
    notes = np.array(["blue sky", "", "sea sky", "sky", "sea sea", "sky", "blue", ""])
    columns = {"id": _columns()["id"], "label": _columns()["label"],
               "title": TEXTS, "title_present": _columns()["text_present"],
               "notes": notes, "notes_present": np.array([n != "" for n in notes], "float32")}
    pre = Preprocessing.fit(columns, config.data, ["notes", "title"])
    assert pre.text_features == ["notes", "title"] and sorted(pre.vectorizers) == ["notes", "title"]
    pre.save(tmp_path)
    assert not (tmp_path / "vocab.txt").exists()
    assert (tmp_path / "vocab_notes.txt").read_text().split() == ["sky", "sea", "blue"]
    assert "face" in (tmp_path / "vocab_title.txt").read_text().split()
    loaded = Preprocessing.load(tmp_path, config.data, ["notes", "title"])
    x, _ = next(iter(make_dataset(columns, config.data, ["notes", "title"],
                                  preprocessing=loaded)))
    assert x["notes"].dtype == tf.int32 and x["title"].dtype == tf.int32
    np.testing.assert_array_equal(x["notes"][0].numpy(), [4, 2, 0, 0, 0])  # blue sky
    np.testing.assert_array_equal(  # the title's vocabulary: "blue" is unknown there
        loaded.text_ids(tf.constant(["blue face"]), "title").numpy()[0, :1], [1])
    with pytest.raises(ValueError, match="No tokenizer for text feature 'text'"):
        loaded.text_ids(tf.constant(["x"]), "text")
