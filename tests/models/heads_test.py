"""The output heads per `model.target`: softmax, one sigmoid per label, and a linear head that
outputs real units through an inverted Normalization (kept by `.keras` saving)."""

import keras
import numpy as np
import pytest

from mmkeras.configs import ConfigError
from mmkeras.configs import load_config
from mmkeras.models import build_classifier
from mmkeras.models import heads
from tests.models.fusion_classifier_test import TINY
from tests.models.fusion_classifier_test import _inputs


def _build(target, stats=None, num_classes=4):
    keras.utils.set_random_seed(0)
    config = load_config(None, TINY + [f"model.target={target}",
                                       f"model.num_classes={num_classes}"])
    return build_classifier(config.model, config.data, target_stats=stats)


def test_multiclass_is_a_softmax_named_probabilities():
    model = _build("multiclass")
    out = np.asarray(model(_inputs(model)))
    assert model.layers[-1].name == "probabilities"
    np.testing.assert_allclose(out.sum(-1), 1.0, atol=1e-5)


def test_multilabel_is_one_sigmoid_per_label():
    model = _build("multilabel")
    out = np.asarray(model(_inputs(model)))
    assert out.shape == (3, 4) and model.layers[-1].name == "probabilities"
    assert ((out > 0) & (out < 1)).all()
    assert not np.allclose(out.sum(-1), 1.0, atol=1e-3)  # independent labels, not a softmax


def test_regression_outputs_real_units_and_survives_saving(tmp_path):
    standard = _build("regression", stats=(0.0, 1.0))
    scaled = _build("regression", stats=(100.0, 5.0))
    x = _inputs(standard)
    z = np.asarray(standard(x))
    assert z.shape == (3, 1) and scaled.layers[-1].name == heads.VALUE
    # Same seed, same weights: the only difference is the un-standardisation.
    np.testing.assert_allclose(np.asarray(scaled(x)), z * 5.0 + 100.0, rtol=1e-5)
    scaled.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(np.asarray(again(x)), np.asarray(scaled(x)), rtol=1e-6)


def test_target_statistics():
    assert heads.target_statistics([1.0, 3.0]) == (2.0, 1.0)
    assert heads.target_statistics([[2.0], [2.0]]) == (2.0, 1.0)  # constant: std 1


def test_target_is_checked_at_load():
    with pytest.raises(ConfigError, match="'model.target' must be one of"):
        load_config(None, ["model.target=ordinal"])
    with pytest.raises(ConfigError, match="needs a feature-level fusion"):
        load_config(None, ["model.target=regression", "model.fusion.type=late"])
    for target in ("multilabel", "regression"):
        with pytest.raises(ConfigError, match=f"model.target '{target}' has none"):
            load_config(None, [f"model.target={target}", "trainer.label_smoothing=0.1"])
    with pytest.raises(ConfigError, match="model.tasks"):
        load_config(None, ["model.target=multilabel",
                           "model.tasks=[{name: image_head, input: image}]"])
