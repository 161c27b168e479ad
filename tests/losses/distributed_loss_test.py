"""Losses under MirroredStrategy on 2 logical CPUs equal the single-device loss.

Logical devices must be configured before TensorFlow initialises, so the check runs in a
fresh subprocess. For each loss, the same global batch is split across the two replicas (an
uneven 6 + 5 split, as a short last batch gives); inside `strategy.run` each replica computes
the loss (which all-gathers the embeddings) and its gradients; the replicas' losses and
gradients are summed (what `model.fit` does) and compared with the loss and gradients of the
whole batch on one device.
"""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

SCRIPT = r'''
import json
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras
import numpy as np

from mmkeras import layers, losses

rng = np.random.default_rng(0)
N, SPLIT = 11, 6
a = rng.normal(size=(N, 6)).astype("float32")
b = rng.normal(size=(N, 5)).astype("float32")
labels = rng.integers(0, 3, size=N).astype("int32")
weights = [rng.normal(size=(6, 4)).astype("float32"), rng.normal(size=(5, 4)).astype("float32")]

LOSSES = {
    "clip": lambda: losses.CLIPLoss(),
    "clip_labels": lambda: losses.CLIPLoss(positives="labels"),
    "siglip": lambda: losses.SigLIPLoss(),
    "cca": lambda: losses.CCALoss(regularization=1e-2),
    "kernel_alignment": lambda: losses.PairKernelAlignmentLoss(
        embedding_keys=["image_embedding", "audio_embedding"]),
    "kernel_alignment_rbf": lambda: losses.PairKernelAlignmentLoss(
        embedding_keys=["image_embedding", "audio_embedding"], kernel="rbf", gamma=0.1),
}


def make_parts():
    proj_a = keras.layers.Dense(4, use_bias=False)
    proj_b = keras.layers.Dense(4, use_bias=False)
    proj_a.build((None, 6))
    proj_b.build((None, 5))
    proj_a.set_weights([weights[0]])
    proj_b.set_weights([weights[1]])
    scale = layers.LogitScale(temperature=0.2, bias=-3.0)
    return proj_a, proj_b, scale


def step(parts, loss, a, b, y):
    proj_a, proj_b, scale = parts
    variables = proj_a.trainable_weights + proj_b.trainable_weights + scale.trainable_weights
    with tf.GradientTape() as tape:
        pred = {
            "image_embedding": proj_a(a),
            "audio_embedding": proj_b(b),
            "logit_scale": scale.scale(),
            "logit_bias": scale.bias(),
        }
        value = loss(y, pred)
    grads = tape.gradient(value, variables)
    # A loss may not use every variable (CLIP has no bias): its gradient is then zero.
    return value, [tf.zeros_like(v) if g is None else g for g, v in zip(grads, variables)]


strategy = tf.distribute.MirroredStrategy(
    ["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice("/cpu:0")
)
with strategy.scope():
    distributed_parts = make_parts()
single_parts = make_parts()


def split(x):
    return strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(x[:SPLIT] if ctx.replica_id_in_sync_group == 0 else x[SPLIT:])
    )


results = {}
for name, factory in LOSSES.items():
    loss = factory()
    replica_fn = tf.function(lambda a_, b_, y_: step(distributed_parts, loss, a_, b_, y_))
    value, grads = strategy.run(replica_fn, args=(split(a), split(b), split(labels)))
    value = float(strategy.reduce("SUM", value, axis=None))
    grads = [strategy.reduce("SUM", g, axis=None).numpy() for g in grads]
    ref_value, ref_grads = step(single_parts, factory(), a, b, labels)
    results[name] = {
        "distributed": value,
        "single": float(ref_value),
        "grad_max_abs_diff": max(float(np.max(np.abs(g - r.numpy()))) for g, r in zip(grads, ref_grads)),
        "grad_max_abs": max(float(np.max(np.abs(r.numpy()))) for r in ref_grads),
        "replicas": strategy.num_replicas_in_sync,
    }
print("RESULTS" + json.dumps(results))
'''


@pytest.fixture(scope="module")
def results():
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULTS")][-1]
    return json.loads(line[len("RESULTS"):])


@pytest.mark.parametrize(
    "loss", ["clip", "clip_labels", "siglip", "cca", "kernel_alignment", "kernel_alignment_rbf"])
def test_two_replica_loss_and_gradients_equal_single_device(results, loss):
    r = results[loss]
    assert r["replicas"] == 2
    assert r["distributed"] == pytest.approx(r["single"], rel=1e-5, abs=1e-5)
    assert r["grad_max_abs"] > 1e-4  # the gradients are not trivially zero
    assert r["grad_max_abs_diff"] <= 1e-4 * max(1.0, r["grad_max_abs"])
