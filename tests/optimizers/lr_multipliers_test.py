"""`trainer.lr_multipliers`: a layer with multiplier m is updated as Keras would update it at
m times the learning rate (weight decay included), other layers exactly as Keras does; the
names resolve to layers or modality encoders; bad names and values are errors that name them.
The mirrored case is in `replica_clipping_test.py`'s subprocess."""

import keras
import numpy as np
import pytest

from mmkeras import optimizers
from mmkeras.configs import ConfigError
from mmkeras.configs import TrainerConfig
from mmkeras.configs import load_config
from training.optimizers import make_optimizer

EARLY = "training/configs/avmnist/early_fusion.yaml"


def _model():
    inputs = keras.Input((2,), name="audio")
    hidden = keras.layers.Dense(3, name="audio_encoder")(inputs)
    outputs = keras.layers.Dense(2, name="head")(hidden)
    model = keras.Model(inputs, outputs)
    for i, variable in enumerate(model.trainable_variables):
        variable.assign(np.full(variable.shape, 0.5 + i, "float32"))
    return model


def _step(optimizer, bind=True):
    """The layers' weights after one update with fixed gradients."""
    model = _model()
    if bind:
        optimizer.bind_layers(model)
    grads = [np.linspace(-1, 2, np.prod(v.shape), dtype="float32").reshape(v.shape)
             for v in model.trainable_variables]
    optimizer.apply(grads, model.trainable_variables)
    return {layer.name: [np.asarray(v) for v in layer.trainable_weights]
            for layer in model.layers if layer.trainable_weights}


@pytest.mark.parametrize("name", ["Adam", "AdamW", "SGD"])
def test_a_multiplier_is_that_layers_learning_rate(name):
    kwargs = {"weight_decay": 0.1} if name != "SGD" else {"momentum": 0.9, "weight_decay": 0.1}
    ours = _step(getattr(optimizers, name)(0.1, lr_multipliers={"audio": 0.5}, **kwargs))
    full = _step(getattr(keras.optimizers, name)(0.1, **kwargs), bind=False)
    half = _step(getattr(keras.optimizers, name)(0.05, **kwargs), bind=False)
    for ours_v, half_v in zip(ours["audio_encoder"], half["audio_encoder"]):
        np.testing.assert_allclose(ours_v, half_v, rtol=1e-6)
    for ours_v, full_v in zip(ours["head"], full["head"]):
        np.testing.assert_array_equal(ours_v, full_v)  # untouched layers: Keras's update exactly
    # The multiplier made a difference (the test can fail).
    assert np.max(np.abs(ours["audio_encoder"][0] - full["audio_encoder"][0])) > 1e-3


def test_multiplier_zero_holds_a_layer_still_and_decay_with_it():
    start = [np.asarray(v) for v in _model().get_layer("audio_encoder").trainable_weights]
    after = _step(optimizers.AdamW(0.1, weight_decay=0.5, lr_multipliers={"audio_encoder": 0}))
    for before, now in zip(start, after["audio_encoder"]):
        np.testing.assert_array_equal(before, now)


def test_names_unbound_optimizers_and_bad_values_are_errors():
    with pytest.raises(ValueError, match=r"no layer 'video'.*\['audio_encoder', 'head'\]"):
        optimizers.SGD(0.1, lr_multipliers={"video": 2}).bind_layers(_model())
    with pytest.raises(ValueError, match="bind_layers"):
        _step(optimizers.SGD(0.1, lr_multipliers={"head": 2}), bind=False)
    with pytest.raises(ValueError, match="finite number >= 0"):
        optimizers.SGD(0.1, lr_multipliers={"head": -1})
    with pytest.raises(ConfigError, match="trainer.lr_multipliers: the model has no layer 'vidoe'"):
        make_optimizer(TrainerConfig(lr_multipliers={"vidoe": 2.0}), 1, model=_model())
    with pytest.raises(ConfigError, match="'trainer.lr_multipliers.audio' must be a number >= 0"):
        load_config(EARLY, ["trainer.lr_multipliers={audio: -2}"])


def test_config_to_optimizer_and_back():
    config = load_config(EARLY, ["trainer.lr_multipliers={image: 0.1, head_dense0: 2}"])
    assert config.trainer.lr_multipliers == {"image": 0.1, "head_dense0": 2}
    optimizer = make_optimizer(config.trainer, 1, steps_per_epoch=10, model=_model_like(config))
    assert isinstance(optimizer, optimizers.AdamW)  # the standard recipe's, with multipliers
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert restored.lr_multipliers == {"image": 0.1, "head_dense0": 2.0}
    # Without multipliers or clipping the trainer keeps Keras's own classes.
    plain = make_optimizer(TrainerConfig(), 1)
    assert type(plain) is keras.optimizers.Adam


def _model_like(config):
    from mmkeras.models import build_classifier

    return build_classifier(config.model, config.data)


class _Wrapper(keras.Model):
    """A trainer-style model holding the network (as the invariance task's does)."""

    def __init__(self, network):
        super().__init__()
        self.network = network

    def call(self, inputs):
        return self.network(inputs)


def test_names_are_found_inside_nested_models_and_the_innermost_wins():
    network = _model()
    wrapper = _Wrapper(network)
    optimizer = optimizers.SGD(0.1, lr_multipliers={"audio": 0.5, network.name: 2.0})
    optimizer.bind_layers(wrapper)
    factors = [optimizer._factor(v) for v in network.trainable_variables]
    assert factors == [0.5, 0.5, 2.0, 2.0]  # audio_encoder's kernel, bias; head's kernel, bias
    with pytest.raises(ValueError, match=rf"no layer 'video'.*\['audio_encoder', '{network.name}', "
                                         r"'head'\]\."):
        optimizers.SGD(0.1, lr_multipliers={"video": 2}).bind_layers(wrapper)
    twice = _Wrapper(keras.Sequential([_model(), _model()]))
    with pytest.raises(ValueError, match="'head' names 2 different layers"):
        optimizers.SGD(0.1, lr_multipliers={"head": 2}).bind_layers(twice)
    with pytest.raises(ValueError, match=r"no layer 'video'.* and 2 more inside them\."):
        optimizers.SGD(0.1, lr_multipliers={"video": 2}).bind_layers(twice)
