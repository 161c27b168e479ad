"""DANN's lambda schedule, the adversarial discriminator's gradients (the discriminator learns
the true domains; only the encoders get the adversarial signal), the domain confusion loss
and the schedule callback."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from mmkeras.layers.gradient_reversal import AdversarialDiscriminator
from mmkeras.layers.gradient_reversal import GradientReversal
from mmkeras.layers.gradient_reversal import GradientReversalSchedule
from mmkeras.layers.gradient_reversal import dann_lambda
from mmkeras.layers.gradient_reversal import domain_confusion_loss
from mmkeras.layers.gradient_reversal import scale_gradient


@pytest.mark.parametrize("progress, expected", [
    (0.0, 0.0),
    (0.1, 2.0 / (1.0 + math.exp(-1.0)) - 1.0),  # 0.46212
    (0.5, 2.0 / (1.0 + math.exp(-5.0)) - 1.0),  # 0.98661
    (1.0, 2.0 / (1.0 + math.exp(-10.0)) - 1.0),  # 0.99991
    (-1.0, 0.0), (2.0, 2.0 / (1.0 + math.exp(-10.0)) - 1.0),  # progress clipped to [0, 1]
])
def test_dann_lambda_closed_form(progress, expected):
    assert dann_lambda(progress) == pytest.approx(expected, abs=1e-12)


def test_dann_lambda_known_values_and_gamma():
    assert dann_lambda(0.1) == pytest.approx(0.462117, abs=1e-6)  # tanh(0.5)
    assert dann_lambda(0.5) == pytest.approx(0.986614, abs=1e-6)  # tanh(2.5)
    assert dann_lambda(0.5, gamma=2.0) == pytest.approx(math.tanh(0.5), abs=1e-12)


def _tiny(adversary, scale=0.5):
    """Encoder Dense(3 -> 2) and an AdversarialDiscriminator (2 -> 4 -> 2) with fixed weights."""
    rng = np.random.default_rng(0)
    encoder = keras.layers.Dense(2, name="encoder")
    encoder.build((None, 3))
    encoder.set_weights([rng.normal(size=(3, 2)).astype("float32"), np.zeros(2, "float32")])
    disc = AdversarialDiscriminator(2, units=(4,), adversary=adversary, scale=scale)
    disc.build((None, 2))
    hidden, logits = disc.dense_layers
    hidden.set_weights([rng.normal(size=(2, 4)).astype("float32"),
                        (rng.normal(size=(4,)) * 0.1).astype("float32")])
    logits.set_weights([rng.normal(size=(4, 2)).astype("float32"),
                        (rng.normal(size=(2,)) * 0.1).astype("float32")])
    x = rng.normal(size=(8, 3)).astype("float32")
    domains = np.array([0, 1] * 4)
    return encoder, disc, x, domains


def _plain_mlp(disc, z):
    """The discriminator's forward pass with ordinary (unreversed, unstopped) gradients."""
    hidden, logits = disc.dense_layers
    h = tf.nn.relu(tf.matmul(z, hidden.kernel) + hidden.bias)
    return tf.nn.softmax(tf.matmul(h, logits.kernel) + logits.bias)


def _grads(loss_fn, encoder, disc):
    variables = encoder.trainable_variables + disc.trainable_variables
    with tf.GradientTape() as tape:
        loss = loss_fn()
    grads = tape.gradient(loss, variables)
    n = len(encoder.trainable_variables)
    return [g if g is None else g.numpy() for g in grads[:n]], [
        g if g is None else g.numpy() for g in grads[n:]]


def _ce(probs, domains):
    return tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(domains, probs))


def test_reversal_reverses_only_the_encoder_gradient():
    encoder, disc, x, domains = _tiny("reversal", scale=0.5)
    enc_adv, disc_adv = _grads(lambda: _ce(disc(encoder(x)), domains), encoder, disc)
    enc_ref, disc_ref = _grads(lambda: _ce(_plain_mlp(disc, encoder(x)), domains), encoder, disc)
    # The discriminator learns the true domains: its gradient is the ordinary one.
    for a, r in zip(disc_adv, disc_ref):
        np.testing.assert_allclose(a, r, rtol=1e-5, atol=1e-7)
    # The encoder gets the reversed gradient, times lambda.
    assert np.abs(enc_ref[0]).max() > 1e-4
    for a, r in zip(enc_adv, enc_ref):
        np.testing.assert_allclose(a, -0.5 * r, rtol=1e-5, atol=1e-7)
    assert np.all(np.sign(enc_adv[0]) == -np.sign(enc_ref[0]))


def test_confusion_splits_the_gradients():
    encoder, disc, x, domains = _tiny("confusion", scale=0.5)

    def total():
        probabilities, confusion = disc(encoder(x))
        return _ce(probabilities, domains) + tf.reduce_mean(domain_confusion_loss(None, confusion))

    enc_adv, disc_adv = _grads(total, encoder, disc)
    # Discriminator: only the true-domain cross-entropy (the confusion term leaves it alone).
    _, disc_ref = _grads(lambda: _ce(_plain_mlp(disc, encoder(x)), domains), encoder, disc)
    for a, r in zip(disc_adv, disc_ref):
        np.testing.assert_allclose(a, r, rtol=1e-5, atol=1e-7)
    # Encoder: only lambda times the confusion gradient (the true-domain term is stopped).
    enc_ref, _ = _grads(
        lambda: tf.reduce_mean(domain_confusion_loss(None, _plain_mlp(disc, encoder(x)))),
        encoder, disc)
    assert np.abs(enc_ref[0]).max() > 1e-5
    for a, r in zip(enc_adv, enc_ref):
        np.testing.assert_allclose(a, 0.5 * r, rtol=1e-5, atol=1e-7)
    # Both outputs are the same discriminator forward.
    probabilities, confusion = disc(encoder(x))
    np.testing.assert_allclose(probabilities.numpy(), confusion.numpy(), rtol=1e-6)


def test_scale_gradient():
    x = tf.constant([[1.0, 2.0]])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.reduce_sum(scale_gradient(x, 0.25) * 4.0)
    np.testing.assert_allclose(tape.gradient(y, x).numpy(), [[1.0, 1.0]])


@pytest.mark.parametrize("k", [2, 3, 10])
def test_confusion_loss_minimum_is_log_k_at_uniform(k):
    uniform = np.full((5, k), 1.0 / k, "float32")
    np.testing.assert_allclose(domain_confusion_loss(None, uniform).numpy(), np.log(k), rtol=1e-6)
    rng = np.random.default_rng(k)
    other = rng.dirichlet(np.ones(k), size=200).astype("float32")
    assert np.all(domain_confusion_loss(None, other).numpy() > np.log(k))
    # A confident, wrong or right, prediction is penalised either way: no gain in flipping.
    confident = np.eye(k, dtype="float32")[[0]] * 0.98 + 0.02 / k
    assert float(domain_confusion_loss(None, confident)[0]) > np.log(k) + 0.5


@pytest.mark.parametrize("adversary", ["reversal", "confusion"])
def test_adversarial_discriminator_serializes(adversary):
    layer = AdversarialDiscriminator(3, units=(5, 4), adversary=adversary, scale=0.3, name="d")
    x = np.random.default_rng(0).normal(size=(2, 6)).astype("float32")
    out = layer(x)
    restored = keras.layers.deserialize(keras.layers.serialize(layer))
    assert restored.get_config() == layer.get_config()
    restored(x)
    restored.set_weights(layer.get_weights())
    again = restored(x)
    outs = out if adversary == "confusion" else (out,)
    agains = again if adversary == "confusion" else (again,)
    for a, b in zip(outs, agains):
        assert a.shape == (2, 3)
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)
    assert len(layer.trainable_weights) == 6 and len(layer.non_trainable_weights) == 1
    with pytest.raises(ValueError, match="adversary"):
        AdversarialDiscriminator(2, adversary="flip")
    with pytest.raises(ValueError, match="scale"):
        AdversarialDiscriminator(2, scale=-1.0)


def test_schedule_callback_ramps_every_adversarial_layer():
    inputs = keras.Input((3,))
    z = keras.layers.Dense(2)(inputs)
    probabilities, confusion = AdversarialDiscriminator(
        2, units=(4,), adversary="confusion", scale=0.5, name="disc")(z)
    reversed_ = GradientReversal(2.0, name="grl")(z)
    model = keras.Model(inputs, [probabilities, confusion, reversed_])
    schedule = GradientReversalSchedule(total_steps=10)
    schedule.set_model(model)
    schedule.on_train_begin()
    seen = []
    for step in range(10):
        schedule.on_train_batch_begin(step)
        seen.append((float(model.get_layer("disc").scale.numpy()),
                     float(model.get_layer("grl").scale.numpy())))
    for step, (disc_scale, grl_scale) in enumerate(seen):
        assert disc_scale == pytest.approx(0.5 * dann_lambda(step / 10), rel=1e-6, abs=1e-7)
        assert grl_scale == pytest.approx(2.0 * dann_lambda(step / 10), rel=1e-6, abs=1e-7)
    logs = {}
    schedule.on_epoch_end(0, logs)
    assert logs["reversal_scale"] == pytest.approx(0.5 * dann_lambda(0.9), rel=1e-6)


def test_schedule_warmup_holds_lambda_at_zero_then_ramps():
    inputs = keras.Input((3,))
    z = keras.layers.Dense(2)(inputs)
    outputs = AdversarialDiscriminator(2, units=(4,), scale=2.0, name="disc")(z)
    inner = keras.Model(inputs, outputs)
    # A wrapper model: the schedule finds the discriminator nested one level down.
    wrapper = keras.Sequential([inner])
    schedule = GradientReversalSchedule(total_steps=12, warmup_steps=4)
    schedule.set_model(wrapper)
    schedule.on_train_begin()
    seen = []
    for step in range(12):
        schedule.on_train_batch_begin(step)
        seen.append(float(inner.get_layer("disc").scale.numpy()))
    assert seen[:4] == [0.0] * 4
    for step in range(4, 12):
        assert seen[step] == pytest.approx(2.0 * dann_lambda((step - 4) / 8), rel=1e-6, abs=1e-7)
    assert schedule.ramp_value(3) == 0.0 and schedule.ramp_value(12) == pytest.approx(
        dann_lambda(1.0))
    with pytest.raises(ValueError, match="warmup_steps"):
        GradientReversalSchedule(warmup_steps=-1)
