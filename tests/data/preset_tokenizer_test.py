"""A keras_hub text encoder's preset tokenizer in tf.data: fitted, saved, reloaded, applied."""

import numpy as np
import pytest
import tensorflow as tf

from mmkeras import features
from mmkeras.configs import load_config
from mmkeras.data import Preprocessing
from mmkeras.data import make_dataset
from mmkeras.data import text as text_lib

pytest.importorskip("keras_hub")
TEXTS = np.array(["grinning face", "flag: Peru", "", "face with tears of joy"])


def _columns():
    return {
        "id": np.array([f"r{i}" for i in range(len(TEXTS))]),
        "label": np.array([0, 1, 2, 0]),
        "text": TEXTS,
        "text_present": np.array([t != "" for t in TEXTS], "float32"),
    }


def test_preset_tokenizer_is_saved_in_the_model_dir_and_gives_the_same_ids(tmp_path):
    config = load_config(None, [
        "data.text_sequence_length=8", "data.batch_size=4", "data.shuffle_buffer=0",
        "model.modalities=[text]", "model.text_encoder.type=keras_hub",
        "model.text_encoder.preset=all-minilm-l6-v2"])
    fitted = Preprocessing.fit(_columns(), config.data, ["text"], text_encoder=config.model.text_encoder)
    assert fitted.vectorizer is None and fitted.text_preprocessor is not None
    fitted.save(tmp_path)
    assert not (tmp_path / text_lib.VOCAB_FILE).exists()
    assert (tmp_path / "text_preprocessor" / "assets" / "tokenizer" / "vocabulary.txt").is_file()
    loaded = Preprocessing.load(tmp_path, config.data, ["text"], text_encoder=config.model.text_encoder)
    again = Preprocessing.load(tmp_path, config.data, ["text"])  # found without the config
    x, _ = next(iter(make_dataset(_columns(), config.data, ["text"], preprocessing=loaded)))
    ids = x[features.TEXT].numpy()
    assert x[features.TEXT].dtype == tf.int32 and ids.shape == (4, 8)
    np.testing.assert_array_equal(ids, fitted.text_ids(tf.constant(TEXTS)).numpy())
    np.testing.assert_array_equal(ids, again.text_ids(tf.constant(TEXTS)).numpy())
    # [CLS] grinning face [SEP], padding 0; a missing text is [CLS] [SEP].
    assert ids[0, 0] == 101 and ids[0, 3] == 102 and (ids[0, 4:] == 0).all()
    assert ids[2, :2].tolist() == [101, 102] and (ids[2, 2:] == 0).all()
    # Longer texts are truncated to the sequence length, [SEP] kept last.
    long_ids = fitted.text_ids(tf.constant(["a " * 30])).numpy()
    assert long_ids.shape == (1, 8) and long_ids[0, -1] == 102
