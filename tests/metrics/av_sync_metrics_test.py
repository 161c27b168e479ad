"""AV-sync figures and the rules with nothing learned (`mmkeras.metrics.av_sync`)."""

import numpy as np
import pytest

from mmkeras.metrics import av_sync as m


def test_roc_auc_closed_form():
    assert m.roc_auc([3, 4], [1, 2]) == 1.0
    assert m.roc_auc([1, 2], [3, 4]) == 0.0
    assert m.roc_auc([1, 1], [1, 1]) == 0.5  # ties count one half
    assert m.roc_auc([2, 0], [1]) == 0.5


def test_offset_and_sync_figures():
    s = 1  # offsets -1, 0, 1
    eye = np.eye(3)
    # Shifted by -1 and 0: predicted right; shifted by +1: predicted 0 (within one frame).
    logits = {-1: eye[[0, 0]], 0: eye[[1, 1]], 1: eye[[1, 1]]}
    o = m.offset_figures(logits, s)
    assert o["evaluations"] == 6 and o["exact_accuracy"] == pytest.approx(4 / 6)
    assert o["within_1_accuracy"] == 1.0 and o["mean_abs_error_frames"] == pytest.approx(2 / 6)
    assert o["chance_exact"] == pytest.approx(1 / 3)
    assert o["chance_within_1"] == pytest.approx(7 / 9)
    assert o["confusion_matrix"] == [[2, 0, 0], [0, 2, 0], [0, 2, 0]]
    assert o["per_offset_exact_accuracy"] == {"-1": 1.0, "0": 1.0, "1": 0.0}
    sync = {-1: np.array([-1.0, -2.0]), 0: np.array([1.0, 2.0]), 1: np.array([1.5, -1.0])}
    y = m.sync_figures(sync, logits, s, threshold=0.0)
    assert y["auc"] == pytest.approx(0.875)  # 7 of 8 positive-negative pairs ranked right
    assert y["auc_by_abs_offset"] == {"1": pytest.approx(0.875)}
    assert (y["true_positive_rate"], y["true_negative_rate"]) == (1.0, 0.75)
    assert y["argmax_balanced_accuracy"] == pytest.approx((1.0 + 0.5) / 2)
    assert "balanced_accuracy" not in m.sync_figures(sync, logits, s, threshold=None)


def test_baselines_find_the_offset_of_a_shifted_onset_track():
    """Frames that brighten and change exactly where a loud burst sits, 2 frames late in the
    audio window: both rules pick the offset whose window lines the burst up."""
    frame_samples, steps, s = 8, 10, 2
    rng = np.random.default_rng(0)
    on = np.zeros(steps, bool)
    on[[2, 3, 6]] = True
    frames = np.broadcast_to(
        np.where(on, 200, 10).astype(np.uint8)[None, :, None, None], (1, steps, 4, 4))
    shift = 1  # the audio of video frame t sits at window step t + s + shift
    energy = np.full(steps + 2 * s, 0.01)
    energy[np.flatnonzero(on) + s + shift] = 1.0
    audio = (rng.standard_normal((steps + 2 * s, frame_samples)) * energy[:, None]).reshape(1, -1)
    for rule in m.BASELINES.values():
        logits = rule(audio, frames, s, frame_samples)
        assert logits.shape == (1, 2 * s + 1)
        assert int(np.argmax(logits[0])) - s == shift, rule.__name__
    score = m.baseline_sync_scores(np.array([[0.1, 0.9, 0.3], [0.5, 0.2, 0.4]]), 1)
    assert score == pytest.approx([0.6, -0.3])
