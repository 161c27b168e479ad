"""SequencePooling and TokenIdInputs: values, serialization, use in a functional model."""

import keras
import numpy as np
import pytest

from mmkeras.layers import SequencePooling
from mmkeras.layers import TokenIdInputs


def test_mean_pooling_ignores_padding_and_cls_takes_the_first_token():
    x = np.arange(24, dtype="float32").reshape(2, 3, 4)
    mask = np.array([[1, 1, 0], [1, 0, 0]])
    mean = SequencePooling("mean")(x, padding_mask=mask)
    np.testing.assert_allclose(mean, [x[0, :2].mean(0), x[1, 0]])
    np.testing.assert_allclose(SequencePooling("mean")(x), x.mean(1))
    np.testing.assert_allclose(SequencePooling("cls")(x, padding_mask=mask), x[:, 0])
    with pytest.raises(ValueError, match="mode must be one of"):
        SequencePooling("max")


def test_token_id_inputs_derive_mask_and_segments():
    out = TokenIdInputs(pad_token_id=0)(np.array([[101, 7, 102, 0], [101, 102, 0, 0]]))
    np.testing.assert_array_equal(out["padding_mask"], [[1, 1, 1, 0], [1, 1, 0, 0]])
    np.testing.assert_array_equal(out["segment_ids"], np.zeros((2, 4)))
    assert set(TokenIdInputs(1, segment_ids=False)(np.ones((1, 2), "int32"))) == {
        "token_ids", "padding_mask"}


def test_both_serialize_inside_a_saved_model(tmp_path):
    ids = keras.Input((5,), dtype="int32")
    derived = TokenIdInputs(pad_token_id=0, name="derive")(ids)
    tokens = keras.layers.Embedding(10, 3)(derived["token_ids"])
    pooled = SequencePooling("mean", name="pool")(tokens, padding_mask=derived["padding_mask"])
    model = keras.Model(ids, pooled)
    x = np.array([[1, 2, 0, 0, 0], [3, 4, 5, 6, 0]], "int32")
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-7)
    assert loaded.get_layer("derive").get_config()["pad_token_id"] == 0
    assert loaded.get_layer("pool").get_config()["mode"] == "mean"
