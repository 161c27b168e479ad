"""Caption baselines and the BLEU row (`mmkeras.metrics.captioning`)."""

import numpy as np
import pytest

from mmkeras.metrics import captioning as cm

TRAIN = [["flag", ":", "peru"], ["red", "heart"], ["red", "heart"], ["grinning", "face"]]


def test_most_frequent_and_best_constant_caption():
    assert cm.most_frequent_caption(TRAIN) == ["red", "heart"]
    val = [[["flag", ":", "chad"]], [["flag", ":", "mali"]], [["red", "apple"]]]
    best, score = cm.best_constant_caption(TRAIN, val)
    assert best == ["flag", ":", "peru"] and score > 0
    # Limited to the most frequent caption, the pool holds only "red heart".
    best, _ = cm.best_constant_caption(TRAIN, val, candidates=1)
    assert best == ["red", "heart"]


def test_nearest_neighbour_captions():
    images = np.arange(4 * 3, dtype="float32").reshape(4, 3)
    test = images[[3, 0]] + 0.1
    assert cm.nearest_neighbour_captions(images, test, TRAIN) == [TRAIN[3], TRAIN[0]]
    directions = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
    query = np.array([[0.0, 5.0], [-0.1, 0.0]])  # cosine ignores the length
    assert cm.nearest_neighbour_captions(directions, query, TRAIN, "cosine") == [TRAIN[1], TRAIN[3]]


def test_bleu_row():
    refs = [[["flag", ":", "peru"]], [["red", "heart"]]]
    perfect = cm.bleu_row([["flag", ":", "peru"], ["red", "heart"]], refs)
    assert perfect["bleu1"] == pytest.approx(1.0) and perfect["exact_match"] == 1.0
    assert perfect["mean_length"] == 2.5
    wrong = cm.bleu_row([["grinning", "face"], ["grinning", "face"]], refs)
    assert wrong["bleu1"] == 0.0 and wrong["exact_match"] == 0.0
    partial = cm.bleu_row([["flag", ":", "chad"], ["red", "apple"]], refs)
    assert 0.0 < partial["bleu1"] < 1.0 and partial["bleu4"] == 0.0  # no 4-gram matches
    assert 0.0 < partial["bleu4_smoothed"] < perfect["bleu4_smoothed"]
