"""`AdversarialInvarianceTrainer`: k discriminator updates per encoder update, each optimizer
moving only its own variables, the R1-style penalty in closed form, the schedule's ramp, a
`.keras` round trip that keeps both optimizers' states (what the driver's best checkpoint and
resume rely on), and training on two mirrored CPU replicas."""

import json
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from mmkeras.layers.gradient_reversal import AdversarialDiscriminator
from mmkeras.layers.gradient_reversal import GradientReversalSchedule
from mmkeras.layers.gradient_reversal import dann_lambda
from mmkeras.models import AdversarialInvarianceTrainer
from mmkeras.models import build_modality_invariant_classifier
from tests.models.modality_invariant_classifier_test import _data
from tests.models.modality_invariant_classifier_test import _network


def _trainer(adversary="reversal", steps=3, **kwargs):
    model = AdversarialInvarianceTrainer(_network(adversary), ["image", "audio"], adversary=adversary,
                            discriminator_steps=steps, **kwargs)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  discriminator_optimizer=keras.optimizers.Adam(3e-3))
    return model


@pytest.mark.parametrize("adversary, steps", [("reversal", 1), ("confusion", 3), ("reversal", 4)])
def test_trainer_takes_k_discriminator_steps_per_batch(adversary, steps):
    model = _trainer(adversary, steps)
    x, labels = _data(n=96)
    disc = [v.numpy().copy() for v in model.discriminator_variables]
    enc = [v.numpy().copy() for v in model.encoder_variables]
    history = model.fit(x, labels, epochs=2, batch_size=32, shuffle=False, verbose=0).history
    batches = 2 * 3
    assert int(model.optimizer.iterations.numpy()) == batches
    assert int(model.discriminator_optimizer.iterations.numpy()) == steps * batches
    # Each optimizer moves only its own variables; both moved.
    assert all(not np.allclose(a, v.numpy()) for a, v in zip(disc, model.discriminator_variables))
    assert any(not np.allclose(a, v.numpy()) for a, v in zip(enc, model.encoder_variables))
    assert not set(map(id, model.discriminator_variables)) & set(map(id, model.encoder_variables))
    for key in ("loss", "task_loss", "adversarial_loss", "discriminator_loss",
                "discriminator_acc", "image_class_acc", "audio_class_acc"):
        assert np.all(np.isfinite(history[key])), key


def test_inverted_adversary_with_gradient_penalty_trains_and_pulls_the_embeddings():
    # The non-saturating inverted-label loss on a discriminator kept smooth by the R1-style
    # penalty: finite losses, a positive penalty, and the adversarial loss (the encoders'
    # cross-entropy against the *other* modality) falls as the encoders learn to fool it.
    model = _trainer("inverted", 2, gradient_penalty=1.0)
    x, labels = _data(n=96)
    history = model.fit(x, labels, epochs=4, batch_size=32, shuffle=False, verbose=0).history
    for key in ("loss", "adversarial_loss", "discriminator_loss", "gradient_penalty"):
        assert np.all(np.isfinite(history[key])), key
    assert min(history["gradient_penalty"]) > 0.0
    plain = _trainer("reversal", 2)
    plain.fit(x, labels, epochs=1, batch_size=32, verbose=0)
    assert plain.get_metrics_result()["gradient_penalty"] == 0.0


def test_gradient_penalty_is_the_squared_slope_of_the_centred_logits():
    # The discriminator's `logits` are those behind its probabilities; for a one-layer
    # discriminator (no hidden units) the slope of each centred logit is the centred
    # kernel column, so the R1 penalty is known in closed form.
    disc = AdversarialDiscriminator(2, units=())
    z = tf.constant(np.random.default_rng(0).normal(size=(5, 3)).astype("float32"))
    probabilities = disc(z)
    np.testing.assert_allclose(tf.nn.softmax(disc.logits(z)).numpy(), probabilities.numpy(),
                               rtol=1e-6)
    kernel = disc.dense_layers[0].kernel.numpy()
    centred = kernel - kernel.mean(axis=1, keepdims=True)
    expected = float(np.sum(centred ** 2))  # sum over both logits of ||slope||^2
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(z)
        logits = disc.logits(z)
        c = logits - tf.reduce_mean(logits, axis=-1, keepdims=True)
        totals = [tf.reduce_sum(c[:, j]) for j in range(2)]
    penalty = sum(float(tf.reduce_mean(tf.reduce_sum(tape.gradient(t, z) ** 2, -1)))
                  for t in totals)
    assert penalty == pytest.approx(expected, rel=1e-5)


def test_trainer_encoder_step_leaves_the_discriminator_alone():
    # With a zero discriminator learning rate the discriminator's weights stay exactly put
    # through the encoder updates (lambda 1): its adversarial gradient reaches the encoders only.
    model = AdversarialInvarianceTrainer(_network("reversal"), ["image", "audio"], discriminator_steps=2)
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  discriminator_optimizer=keras.optimizers.SGD(0.0))
    before = [v.numpy().copy() for v in model.discriminator_variables]
    x, labels = _data(n=64)
    model.fit(x, labels, epochs=1, batch_size=32, verbose=0)
    for a, v in zip(before, model.discriminator_variables):
        np.testing.assert_array_equal(a, v.numpy())


def test_trainer_with_moment_matching_and_schedule_warmup():
    model = _trainer("confusion", 1, moment_matching="cmd", moment_weight=1.0)
    x, labels = _data(n=64)
    schedule = GradientReversalSchedule(total_steps=4, warmup_steps=2)
    history = model.fit(x, labels, epochs=2, batch_size=32, verbose=0,
                        callbacks=[schedule]).history
    assert history["moment_loss"][0] > 0 and np.all(np.isfinite(history["loss"]))
    # Step 3 of 4 with 2 warm-up steps: ramp at p = 1 / 2.
    assert float(model.ramp.numpy()) == pytest.approx(dann_lambda(0.5), rel=1e-6)
    assert float(model.discriminator.scale.numpy()) == pytest.approx(dann_lambda(0.5), rel=1e-6)


def test_log_probabilities_match_the_outputs_and_stay_finite():
    network = _network("confusion", scale=0.5)
    disc = network.get_layer("modality_discriminator")
    z = np.random.default_rng(0).normal(size=(6, 8)).astype("float32")
    probabilities, confusion = disc(z)
    for branch in ("judge", "reversal", "confusion"):
        np.testing.assert_allclose(np.exp(disc.log_probabilities(z, branch).numpy()),
                                   probabilities.numpy(), rtol=1e-5, atol=1e-7)
    # Far past the 1e-7 clip of the probabilities the log-softmax still has a gradient.
    big = tf.Variable(z * 1e4)
    with tf.GradientTape() as tape:
        loss = -tf.reduce_mean(disc.log_probabilities(big, "confusion"))
    gradient = tape.gradient(loss, big).numpy()
    assert np.all(np.isfinite(gradient)) and np.abs(gradient).max() > 0
    with pytest.raises(ValueError, match="branch"):
        disc.log_probabilities(z, "flip")


def test_keras_round_trip_keeps_the_network_and_both_optimizers(tmp_path):
    model = _trainer("inverted", 2, gradient_penalty=1.0, moment_matching="paired",
                     moment_weight=0.5)
    x, labels = _data(n=64)
    model.fit(x, labels, epochs=1, batch_size=32, verbose=0)
    model.ramp.assign(0.25)
    model.save(tmp_path / "trainer.keras")
    restored = keras.saving.load_model(tmp_path / "trainer.keras")
    assert isinstance(restored, AdversarialInvarianceTrainer)
    assert (restored.adversary, restored.discriminator_steps, restored.moment_matching) == (
        "inverted", 2, "paired")
    for key, value in model(x).items():
        np.testing.assert_allclose(restored(x)[key], value, rtol=1e-5, atol=1e-6)
    assert float(restored.ramp.numpy()) == 0.25
    # Both optimizers come back with their step counts and moments.
    assert int(restored.optimizer.iterations.numpy()) == 2
    assert int(restored.discriminator_optimizer.iterations.numpy()) == 4
    for a, b in zip(model.discriminator_optimizer.variables,
                    restored.discriminator_optimizer.variables):
        np.testing.assert_allclose(a.numpy(), b.numpy())
    # Weights-only (what BackupAndRestore writes) into a freshly compiled trainer.
    model.save_weights(tmp_path / "backup.weights.h5")
    fresh = _trainer("inverted", 2, gradient_penalty=1.0, moment_matching="paired",
                     moment_weight=0.5)
    fresh.load_weights(tmp_path / "backup.weights.h5")
    assert int(fresh.discriminator_optimizer.iterations.numpy()) == 4
    # Evaluation runs test_step: the same logs, no update.
    before = [v.numpy().copy() for v in restored.trainable_variables]
    logs = restored.evaluate(x, labels, batch_size=32, verbose=0, return_dict=True)
    assert {"task_loss", "discriminator_acc", "image_class_acc"} <= set(logs)
    for a, v in zip(before, restored.trainable_variables):
        np.testing.assert_array_equal(a, v.numpy())


def test_schedule_continues_from_the_optimizer_step_after_a_restore():
    # A resumed fit (new callback, restored optimizer) continues the ramp, not restarts it.
    model = _trainer("reversal", 1)
    x, labels = _data(n=64)
    model.fit(x, labels, epochs=1, batch_size=32, verbose=0,
              callbacks=[GradientReversalSchedule(total_steps=4, warmup_steps=0)])
    schedule = GradientReversalSchedule(total_steps=4, warmup_steps=0)
    model.fit(x, labels, epochs=1, batch_size=32, verbose=0, callbacks=[schedule])
    assert schedule.step == 4
    assert float(model.ramp.numpy()) == pytest.approx(dann_lambda(3 / 4), rel=1e-6)


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="discriminator_steps"):
        AdversarialInvarianceTrainer(_network(), ["image", "audio"], discriminator_steps=0)
    with pytest.raises(ValueError, match="adversary"):
        AdversarialInvarianceTrainer(_network(), ["image", "audio"], adversary="flip")


_MIRRORED_SCRIPT = r"""
import json, sys
import numpy as np
from training import runtime
from mmkeras.configs.cross_modal_config import load_cross_modal_config
config = load_cross_modal_config(overrides=["runtime.cpu_replicas=2"])
strategy = runtime.make_strategy(config.runtime)
import keras
from mmkeras.models import AdversarialInvarianceTrainer
from mmkeras.models import build_modality_invariant_classifier
sys.path.insert(0, ".")
from tests.models.modality_invariant_classifier_test import _data, _encoder
keras.utils.set_random_seed(0)
with strategy.scope():
    network = build_modality_invariant_classifier(
        {"image": _encoder("image", 5), "audio": _encoder("audio", 4)}, num_classes=3,
        embedding_dim=8, adversary="confusion", embedding_norm="batch")
    model = AdversarialInvarianceTrainer(network, ["image", "audio"], adversary="confusion",
                            discriminator_steps=3, moment_matching="cmd", moment_weight=0.5)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  discriminator_optimizer=keras.optimizers.Adam(3e-3))
x, labels = _data(n=64)
import tensorflow as tf
ds = tf.data.Dataset.from_tensor_slices((x, labels)).batch(16)
history = model.fit(ds, epochs=1, verbose=0).history
print("RESULT " + json.dumps({
    "replicas": strategy.num_replicas_in_sync,
    "encoder_updates": int(model.optimizer.iterations.numpy()),
    "discriminator_updates": int(model.discriminator_optimizer.iterations.numpy()),
    "loss": history["loss"][-1], "discriminator_loss": history["discriminator_loss"][-1],
}))
"""


@pytest.mark.large
def test_trainer_on_two_mirrored_cpu_replicas():
    root = pathlib.Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", _MIRRORED_SCRIPT], cwd=root,
                          capture_output=True, text=True, timeout=300)
    lines = [l for l in done.stdout.splitlines() if l.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT "):])
    assert result["replicas"] == 2
    assert result["encoder_updates"] == 4  # 64 examples / global batch 16
    assert result["discriminator_updates"] == 3 * 4
    assert np.isfinite(result["loss"]) and np.isfinite(result["discriminator_loss"])
