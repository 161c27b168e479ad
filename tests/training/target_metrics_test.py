"""Multi-label and regression test figures (`training.report`) against hand computations on
fixed arrays, and the Keras metrics the task logs agreeing with them."""

import keras
import numpy as np
import pytest

from training import report
from training.tasks.classification import target_compile_args

PROBABILITIES = np.array([[0.9, 0.2, 0.6],
                          [0.4, 0.7, 0.1],
                          [0.8, 0.55, 0.3],
                          [0.1, 0.3, 0.45]])
LABELS = np.array([[1, 0, 1],
                   [1, 1, 0],
                   [0, 1, 0],
                   [0, 0, 1]], dtype=float)


def test_multilabel_metrics_by_hand():
    m = report.multilabel_metrics(PROBABILITIES, LABELS, ["a", "b", "c"])
    # Predicted at 0.5: [1,0,1] [0,1,0] [1,1,0] [0,0,0]
    # label a: tp 1 (row 0), fp 1 (row 2), fn 1 (row 1) -> F1 2/4
    # label b: tp 2 (rows 1, 2), fp 0, fn 0           -> F1 1
    # label c: tp 1 (row 0), fp 0, fn 1 (row 3)       -> F1 2/3
    # micro: tp 4, fp 1, fn 2 -> 8 / 11
    assert m["micro_f1"] == pytest.approx(8 / 11)
    assert m["per_label"]["a"]["f1"] == pytest.approx(0.5)
    assert m["per_label"]["b"]["f1"] == pytest.approx(1.0)
    assert m["per_label"]["c"]["f1"] == pytest.approx(2 / 3)
    assert m["macro_f1"] == pytest.approx((0.5 + 1 + 2 / 3) / 3)
    assert m["subset_accuracy"] == pytest.approx(1 / 4)  # row 0 only
    # AUC of a: positives 0.9, 0.4; negatives 0.8, 0.1 -> pairs won 0.9>0.8, 0.9>0.1, 0.4>0.1
    assert m["per_label"]["a"]["auc"] == pytest.approx(3 / 4)
    assert m["per_label"]["b"]["auc"] == pytest.approx(1.0)
    # c: positives 0.6, 0.45; negatives 0.1, 0.3 -> all won
    assert m["per_label"]["c"]["auc"] == pytest.approx(1.0)
    bce = -np.mean(LABELS * np.log(PROBABILITIES) + (1 - LABELS) * np.log(1 - PROBABILITIES))
    assert m["loss"] == pytest.approx(bce)
    assert m["examples"] == 4 and m["per_label"]["b"]["support"] == 2


def test_auc_ties_and_one_class():
    assert report.binary_auc([0.5, 0.5], [1, 0]) == pytest.approx(0.5)
    assert report.binary_auc([0.2, 0.9], [1, 1]) is None


def test_regression_metrics_by_hand():
    m = report.regression_metrics([[2.0], [4.0], [7.0]], [1.0, 5.0, 7.0])
    # errors 1, -1, 0: MAE 2/3, MSE 2/3; targets mean 13/3, total SS 100/9+4/9+64/9 = 168/9
    assert m["mae"] == pytest.approx(2 / 3)
    assert m["loss"] == pytest.approx(2 / 3)
    assert m["rmse"] == pytest.approx(np.sqrt(2 / 3))
    assert m["r2"] == pytest.approx(1 - 2 / (168 / 9))
    assert report.regression_metrics([1.0, 2.0], [3.0, 3.0])["r2"] is None


def _keras_metrics(target, y_true, y_pred, num_classes=None):
    metrics = target_compile_args(target, num_classes)["metrics"]
    values = {}
    for metric in metrics:
        metric.update_state(np.asarray(y_true, "float32"), np.asarray(y_pred, "float32"))
        values[metric.name] = float(metric.result())
    return values


def test_logged_metrics_agree_with_the_report():
    logged = _keras_metrics("multilabel", LABELS, PROBABILITIES, 3)
    assert logged["micro_f1"] == pytest.approx(8 / 11, abs=1e-5)
    assert logged["auc"] == pytest.approx(
        report.multilabel_metrics(PROBABILITIES, LABELS)["macro_auc"], abs=0.02)
    logged = _keras_metrics("regression", [[1.0], [5.0], [7.0]], [[2.0], [4.0], [7.0]])
    assert logged["mae"] == pytest.approx(2 / 3, abs=1e-5)
    assert logged["rmse"] == pytest.approx(np.sqrt(2 / 3), abs=1e-5)
    loss = target_compile_args("regression")["loss"]
    assert float(loss(np.array([[1.0], [5.0]]), np.array([[2.0], [4.0]]))) == pytest.approx(1.0)
    assert isinstance(target_compile_args("multilabel", 3)["loss"],
                      keras.losses.BinaryCrossentropy)


def test_default_monitor_per_target():
    from mmkeras.configs import load_config
    from training.tasks.classification import ClassificationTask

    task = ClassificationTask()
    assert task.monitor(load_config(None, [])) == ("val_accuracy", "max")
    assert task.monitor(load_config(None, ["model.target=multilabel"])) == ("val_micro_f1", "max")
    assert task.monitor(load_config(None, ["model.target=regression"])) == ("val_loss", "min")
    assert task.monitor(load_config(None, ["model.target=regression",
                                           "trainer.monitor=val_mae"])) == ("val_mae", "min")
    assert task.monitor(load_config(None, ["model.target=regression",
                                           "trainer.monitor=val_rmse"])) == ("val_rmse", "min")


def test_classification_metrics_macro_f1_and_auc_against_hand_computation():
    import numpy as np

    from training.report import classification_metrics

    # 3 classes; predictions: class 0 right twice, class 1 right once and once as 2, class 2
    # right once.
    p = np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.3, 0.6],
                  [0.1, 0.2, 0.7]])
    y = np.array([0, 0, 1, 1, 2])
    m = classification_metrics(p, y, 3)
    # per-class F1: class 0: P=1, R=1 -> 1; class 1: P=1, R=0.5 -> 2/3; class 2: P=0.5, R=1 -> 2/3
    assert m["macro_f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    # one-vs-rest AUC, class 0: scores of positives {0.8, 0.6} above all negatives -> 1;
    # class 1: positives {0.7, 0.3} vs negatives {0.1, 0.3, 0.2}: 0.7 beats 3, 0.3 beats 2 and
    # ties 1 -> (3 + 2.5) / 6; class 2: positives {0.7} vs {0.1, 0.1, 0.1, 0.6} -> 1.
    assert m["auc"] == pytest.approx((1 + 5.5 / 6 + 1) / 3)
    binary = classification_metrics(np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7]]),
                                     np.array([0, 0, 1]), 2)
    assert binary["auc"] == pytest.approx(1.0) and binary["accuracy"] == pytest.approx(2 / 3)
