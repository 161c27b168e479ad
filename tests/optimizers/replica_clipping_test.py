"""`mmkeras.optimizers`: under MirroredStrategy on 2 logical CPUs, a clipped update equals one
device's clipped update of the summed gradient (Keras's own optimizer clips each replica's
share, and differs), and a layer's learning-rate multiplier reaches every replica's copy of its
variables; on one device it is Keras's update; the classes serialize."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from mmkeras import optimizers
from tests.conftest import REPO

SCRIPT = r'''
import json
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras
import numpy as np

import mmkeras.optimizers

SHARES = np.array([[[3.0, -1.0], [0.5, 2.0]], [[1.0, 2.0], [-2.5, 0.0]]], "float32")
BIAS = np.array([[0.2, 4.0], [-0.1, 1.0]], "float32")
strategy = tf.distribute.MirroredStrategy(
    ["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice("/cpu:0"))


def step(make, distributed, copies=1):
    """The variables of `make()` after one update: on one device with the summed gradient, or
    on 2 replicas with one share each (`copies` variable pairs, each given SHARES and BIAS)."""
    if not distributed:
        variables, optimizer = make()
        optimizer.apply([tf.constant(SHARES.sum(0)), tf.constant(BIAS.sum(0))] * copies, variables)
        return [v.numpy().tolist() for v in variables]
    with strategy.scope():
        variables, optimizer = make()
        optimizer.build(variables)

    def replica():
        i = tf.distribute.get_replica_context().replica_id_in_sync_group
        optimizer.apply([tf.gather(tf.constant(SHARES), i), tf.gather(tf.constant(BIAS), i)]
                        * copies, variables)

    tf.function(lambda: strategy.run(replica))()
    return [v.numpy().tolist() for v in variables]


def updated(cls, clip, distributed):
    return step(lambda: ([tf.Variable(tf.zeros((2, 2))), tf.Variable(tf.zeros((2,)))],
                         cls(learning_rate=1.0, **clip)), distributed)


results = {}
for clip in ({"clipnorm": 1.0}, {"global_clipnorm": 1.0}):
    results[next(iter(clip))] = {
        "single": updated(keras.optimizers.SGD, clip, False),
        "mmkeras": updated(mmkeras.optimizers.SGD, clip, True),
        "keras": updated(keras.optimizers.SGD, clip, True),
    }


def multiplied(distributed, lr=1.0, multipliers=None):
    """Two Dense layers `a`, `b` after one SGD step; `b` at multiplier 0.5 (mmkeras)."""
    def make():
        inputs = keras.Input((2,))
        hidden = keras.layers.Dense(2, name="a", kernel_initializer="zeros")(inputs)
        model = keras.Model(inputs, keras.layers.Dense(2, name="b", kernel_initializer="zeros")(hidden))
        if multipliers is None:
            return model.trainable_variables, keras.optimizers.SGD(learning_rate=lr)
        optimizer = mmkeras.optimizers.SGD(learning_rate=lr, lr_multipliers=multipliers)
        return model.trainable_variables, optimizer.bind_layers(model)

    return step(make, distributed, copies=2)


results["lr_multipliers"] = {
    "mmkeras": multiplied(True, multipliers={"b": 0.5}),
    "full": multiplied(False),
    "half": multiplied(False, lr=0.5),
}
print("RESULTS" + json.dumps(results))
'''


@pytest.fixture(scope="module")
def mirrored_updates():
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True,
                            text=True, timeout=300, env=env)
    lines = [l for l in result.stdout.splitlines() if l.startswith("RESULTS")]
    assert lines, result.stderr[-3000:]
    return json.loads(lines[-1][len("RESULTS"):])


@pytest.mark.parametrize("clip", ["clipnorm", "global_clipnorm"])
def test_two_replicas_clip_the_global_gradient(mirrored_updates, clip):
    result = mirrored_updates[clip]
    for ours, single in zip(result["mmkeras"], result["single"]):
        np.testing.assert_allclose(ours, single, atol=1e-6)
    # Keras's own optimizer clips each replica's share, so its update is not the single one.
    assert max(np.max(np.abs(np.subtract(k, s))) for k, s in
               zip(result["keras"], result["single"])) > 0.1


def test_two_replicas_apply_the_layer_multiplier(mirrored_updates):
    """Under MirroredStrategy each replica's variable finds its layer's multiplier."""
    result = mirrored_updates["lr_multipliers"]
    for ours, full in zip(result["mmkeras"][:2], result["full"][:2]):  # layer a: m = 1
        np.testing.assert_allclose(ours, full, atol=1e-6)
    for ours, half in zip(result["mmkeras"][2:], result["half"][2:]):  # layer b: m = 0.5
        np.testing.assert_allclose(ours, half, atol=1e-6)
    assert np.max(np.abs(np.subtract(result["full"][2], result["half"][2]))) > 0.1


def test_one_device_update_is_keras_update():
    grads = [np.array([[3.0, -4.0]], "float32"), np.array([12.0], "float32")]
    values = {}
    for cls in (keras.optimizers.AdamW, optimizers.AdamW):
        variables = [keras.Variable(np.ones((1, 2), "float32")), keras.Variable(np.ones(1, "float32"))]
        optimizer = cls(learning_rate=0.1, weight_decay=0.05, clipnorm=1.0)
        optimizer.apply(grads, variables)
        values[cls] = [np.asarray(v) for v in variables]
    for ours, theirs in zip(values[optimizers.AdamW], values[keras.optimizers.AdamW]):
        np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("cls", [optimizers.Adam, optimizers.AdamW, optimizers.SGD])
def test_optimizers_serialize(cls):
    optimizer = cls(learning_rate=0.01, clipnorm=0.5)
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(restored) is cls and restored.clipnorm == 0.5
    assert restored.get_config() == optimizer.get_config()
