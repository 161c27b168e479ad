"""`SparseLabelSmoothingCrossentropy` against hand-computed values."""

import math

import keras
import numpy as np
import pytest

from mmkeras.losses import SparseLabelSmoothingCrossentropy

P = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]], "float32")
Y = np.array([0, 2])


def _by_hand(s):
    # Row 0: target (1 - s) + s/3 on class 0, s/3 elsewhere; row 1 likewise on class 2.
    k = 3
    on, off = 1 - s + s / k, s / k
    row0 = -(on * math.log(0.7) + off * math.log(0.2) + off * math.log(0.1))
    row1 = -(off * math.log(0.1) + off * math.log(0.3) + on * math.log(0.6))
    return row0, row1


@pytest.mark.parametrize("s", [0.0, 0.1, 0.3])
def test_matches_hand_computation(s):
    row0, row1 = _by_hand(s)
    loss = SparseLabelSmoothingCrossentropy(label_smoothing=s)
    assert float(loss(Y, P)) == pytest.approx((row0 + row1) / 2, rel=1e-5)
    per_example = SparseLabelSmoothingCrossentropy(label_smoothing=s, reduction=None)
    np.testing.assert_allclose(np.asarray(per_example(Y[:, None], P)), [row0, row1], rtol=1e-5)
    if s == 0.0:  # no smoothing: Keras's sparse cross-entropy
        plain = keras.losses.SparseCategoricalCrossentropy()
        assert float(loss(Y, P)) == pytest.approx(float(plain(Y, P)), rel=1e-6)


def test_from_logits_and_serialization():
    logits = np.log(P)
    loss = SparseLabelSmoothingCrossentropy(label_smoothing=0.2, from_logits=True)
    row0, row1 = _by_hand(0.2)
    assert float(loss(Y, logits)) == pytest.approx((row0 + row1) / 2, rel=1e-5)
    again = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(again, SparseLabelSmoothingCrossentropy)
    assert again.get_config() == loss.get_config()
