"""Alternating adversarial training of a modality-invariant classifier.

`AdversarialInvarianceTrainer` wraps the functional network of
`build_modality_invariant_classifier` with a `train_step` that alternates an encoder/task
update and `discriminator_steps` updates of the modality discriminator, each with its own
optimizer. It saves as `.keras` (network, both optimizers' states, the ramp and the metrics),
so a best checkpoint or a `BackupAndRestore` resume continues where training stopped.
"""

import keras
import tensorflow as tf
from keras import ops

from mmkeras.api_export import mmkeras_export
from mmkeras.losses.distributed import num_replicas_in_sync
from mmkeras.losses.moment_matching_loss import moment_matching_loss
from mmkeras.models.modality_invariant_classifier import class_key
from mmkeras.models.modality_invariant_classifier import embedding_key
from mmkeras.models.modality_invariant_classifier import modality_key

ADVERSARIES = ("reversal", "confusion", "inverted")


@mmkeras_export("mmkeras.models.AdversarialInvarianceTrainer")
class AdversarialInvarianceTrainer(keras.Model):
    """Alternating adversarial training of a modality-invariant classifier.

    Each `train_step` on a batch:

    1. one encoder/task update (`optimizer`): the summed digit cross-entropy of every
       modality plus the adversarial term the network's `AdversarialDiscriminator` routes to
       the encoders only (`reversal`: its cross-entropy on the true modality, whose encoder
       gradient the layer reverses and scales by lambda; `confusion`: the cross-entropy of its
       prediction against uniform, scaled by lambda; `inverted`: the cross-entropy against the
       other modalities; all from its stable `log_probabilities`, so a confident
       discriminator still gives the encoders a gradient; logged unscaled as
       `adversarial_loss`), plus optionally `moment_weight * ramp * moment_matching_loss` on
       the embeddings (non-adversarial). The discriminator's weights are not updated here.
    2. `discriminator_steps` discriminator updates (`discriminator_optimizer`, its own
       learning rate) on the true modality of the same batch's embeddings, detached; with
       `gradient_penalty` gamma each also minimises the R1-style
       `gamma / 2 * E ||grad_z centred logits||^2`.

    Losses are local-batch means divided by the replicas in sync, so the gradients that
    `tf.distribute` sums over replicas are those of the global batch. Lambda and `ramp` are
    set by `mmkeras.layers.gradient_reversal.GradientReversalSchedule` (warm-up, then DANN's
    ramp). `test_step` logs the same losses and accuracies without updating anything (the
    gradient penalty is not computed there: 0).

    Args:
        network: the functional model of `build_modality_invariant_classifier`.
        modalities: the modality names (inputs of `network`).
        adversary: `"reversal"`, `"confusion"` or `"inverted"`.
        discriminator_steps: discriminator updates per encoder update (>= 1).
        moment_matching: None, or a `moment_matching_loss` method (`"cmd"`, `"linear_mmd"`,
            `"paired"`).
        moment_weight: weight of the moment-matching term (times the ramp).
        cmd_moments: moments of the CMD.
        gradient_penalty: the R1-style penalty's gamma (0: off).
        **kwargs: `keras.Model` arguments (`name`).

    Call arguments:
        inputs: a dict holding (at least) one tensor per modality.

    Returns:
        The network's outputs.

    Example:
    ```python
    model = AdversarialInvarianceTrainer(network, ["image", "audio"], discriminator_steps=5)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  discriminator_optimizer=keras.optimizers.Adam(3e-3))
    model.fit(dataset_of_features_and_labels, epochs=2,
              callbacks=[GradientReversalSchedule(warmup_steps=100)])
    ```

    References:
        Ganin et al., "Domain-Adversarial Training of Neural Networks" (JMLR 2016); Tzeng et
        al., "Simultaneous Deep Transfer Across Domains and Tasks" (ICCV 2015); Mescheder et
        al., "Which Training Methods for GANs do actually Converge?" (ICML 2018, R1).
    """

    def __init__(self, network, modalities, adversary="reversal", discriminator_steps=1,
                 moment_matching=None, moment_weight=0.0, cmd_moments=5,
                 gradient_penalty=0.0, **kwargs):
        kwargs.setdefault("name", f"{network.name}_trainer")
        super().__init__(**kwargs)
        if discriminator_steps < 1:
            raise ValueError(f"discriminator_steps must be >= 1, got {discriminator_steps}.")
        if adversary not in ADVERSARIES:
            raise ValueError(f"adversary must be one of {ADVERSARIES}, got {adversary!r}.")
        self.network = network
        self.modalities = sorted(modalities)
        self.adversary = adversary
        self.discriminator_steps = int(discriminator_steps)
        self.moment_matching = moment_matching
        self.moment_weight = float(moment_weight)
        self.cmd_moments = int(cmd_moments)
        self.gradient_penalty = float(gradient_penalty)
        keys = [k for m in self.modalities
                for k in (class_key(m), modality_key(m), embedding_key(m))]
        self.full = keras.Model(network.inputs,
                                {k: network.get_layer(k).output for k in keys},
                                name=f"{network.name}_full")
        self.discriminator = network.get_layer("modality_discriminator")
        self.ramp = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                    name="ramp", dtype="float32")
        disc_ids = {id(v) for v in self.discriminator.trainable_variables}
        self.discriminator_variables = list(self.discriminator.trainable_variables)
        self.encoder_variables = [v for v in network.trainable_variables
                                  if id(v) not in disc_ids]
        self.trackers = {name: keras.metrics.Mean(name=name) for name in (
            "loss", "task_loss", "adversarial_loss", "moment_loss", "discriminator_loss",
            "gradient_penalty")}
        self.accuracies = {
            name: keras.metrics.SparseCategoricalAccuracy(name=name)
            for name in [f"{m}_class_acc" for m in self.modalities] + ["discriminator_acc"]
        }
        self.discriminator_optimizer = None
        self.built = True

    def call(self, inputs, training=False):
        return self.network({m: inputs[m] for m in self.modalities}, training=training)

    def compile(self, optimizer="adam", discriminator_optimizer="adam", **kwargs):
        """Like `keras.Model.compile` (no loss: the step computes its own), plus the
        discriminator's optimizer; both are built at once (a restore then finds their
        variables)."""
        super().compile(optimizer=optimizer, **kwargs)
        self.discriminator_optimizer = keras.optimizers.get(discriminator_optimizer)
        self.optimizer.build(self.encoder_variables)
        self.discriminator_optimizer.build(self.discriminator_variables)

    def get_compile_config(self):
        if self.optimizer is None or self.discriminator_optimizer is None:
            return None
        return {
            "optimizer": keras.optimizers.serialize(self.optimizer),
            "discriminator_optimizer": keras.optimizers.serialize(self.discriminator_optimizer),
        }

    def compile_from_config(self, config):
        self.compile(
            optimizer=keras.optimizers.deserialize(config["optimizer"]),
            discriminator_optimizer=keras.optimizers.deserialize(
                config["discriminator_optimizer"]),
        )

    @property
    def metrics(self):
        return list(self.trackers.values()) + list(self.accuracies.values())

    def _domains(self, labels, index):
        return ops.full_like(labels, index, dtype="int32")

    def _objective(self, x, labels, training):
        """`(outputs, task loss, adversarial loss, moment loss, total)` of a batch."""
        out = self.full(x, training=training)
        task, adversarial = 0.0, 0.0
        for i, m in enumerate(self.modalities):
            task = task + ops.mean(keras.losses.sparse_categorical_crossentropy(
                labels, out[class_key(m)]))
            # Stable log-softmax of the discriminator (the clipped probabilities of the
            # model's outputs give no gradient once it is confident past 1e-7).
            log_p = self.discriminator.log_probabilities(
                out[embedding_key(m)],
                branch="reversal" if self.adversary == "reversal" else "confusion")
            if self.adversary == "confusion":  # cross-entropy against uniform
                adversarial = adversarial - ops.mean(log_p)
            elif self.adversary == "inverted":  # against the other modalities
                others = 1.0 - ops.one_hot(self._domains(labels, i), len(self.modalities))
                others = others / float(len(self.modalities) - 1)
                adversarial = adversarial - ops.mean(ops.sum(others * log_p, axis=-1))
            else:  # the discriminator's cross-entropy, reversed for the encoders
                adversarial = adversarial - ops.mean(ops.take_along_axis(
                    log_p, ops.expand_dims(self._domains(labels, i), -1), axis=-1))
        loss = task + adversarial
        moment = ops.zeros(())
        if self.moment_matching and self.moment_weight > 0:
            kwargs = {"moments": self.cmd_moments} if self.moment_matching == "cmd" else {}
            moment = moment_matching_loss(
                self.moment_matching, [out[embedding_key(m)] for m in self.modalities],
                **kwargs)
            loss = loss + self.moment_weight * ops.convert_to_tensor(self.ramp) * moment
        return out, task, adversarial, moment, loss

    def _discriminator_batch(self, out, labels):
        embeddings = ops.stop_gradient(ops.concatenate(
            [out[embedding_key(m)] for m in self.modalities], axis=0))
        domains = ops.concatenate(
            [self._domains(labels, i) for i in range(len(self.modalities))], axis=0)
        return embeddings, domains

    @staticmethod
    def _cross_entropy(logits, domains):
        log_p = ops.log_softmax(logits, axis=-1)
        return -ops.mean(ops.take_along_axis(log_p, ops.expand_dims(domains, -1), axis=-1))

    def _track(self, out, labels, values):
        for name, value in values.items():
            self.trackers[name].update_state(value)
        for i, m in enumerate(self.modalities):
            self.accuracies[f"{m}_class_acc"].update_state(labels, out[class_key(m)])
            self.accuracies["discriminator_acc"].update_state(
                self._domains(labels, i), out[modality_key(m)])
        return {metric.name: metric.result() for metric in self.metrics}

    def train_step(self, data):
        x = {m: data[0][m] for m in self.modalities}
        labels = ops.cast(data[1], "int32")
        replicas = num_replicas_in_sync()
        with tf.GradientTape() as tape:
            out, task, adversarial, moment, loss = self._objective(x, labels, training=True)
            scaled = self.optimizer.scale_loss(loss / replicas)
        gradients = tape.gradient(scaled, self.encoder_variables)
        self.optimizer.apply_gradients(zip(gradients, self.encoder_variables))

        embeddings, domains = self._discriminator_batch(out, labels)
        for _ in range(self.discriminator_steps):
            with tf.GradientTape() as tape:
                with tf.GradientTape(persistent=True) as input_tape:
                    input_tape.watch(embeddings)
                    logits = self.discriminator.logits(embeddings)
                    totals = []
                    if self.gradient_penalty > 0:  # traced only when the penalty is on
                        centred = logits - ops.mean(logits, axis=-1, keepdims=True)
                        totals = [ops.sum(centred[:, j]) for j in range(len(self.modalities))]
                disc_loss = self._cross_entropy(logits, domains)
                penalty = ops.zeros(())
                if self.gradient_penalty > 0:
                    # R1-style: the squared norm of the (centred) logits' gradient with
                    # respect to the embeddings, on every example: a smooth judge, whose
                    # gradient the encoders can follow.
                    for total in totals:
                        slope = input_tape.gradient(total, embeddings)
                        penalty = penalty + ops.mean(ops.sum(ops.square(slope), axis=-1))
                    disc_loss_total = disc_loss + 0.5 * self.gradient_penalty * penalty
                else:
                    disc_loss_total = disc_loss
                scaled = self.discriminator_optimizer.scale_loss(disc_loss_total / replicas)
            del input_tape
            gradients = tape.gradient(scaled, self.discriminator_variables)
            self.discriminator_optimizer.apply_gradients(
                zip(gradients, self.discriminator_variables))

        return self._track(out, labels, {
            "loss": loss, "task_loss": task, "adversarial_loss": adversarial,
            "moment_loss": moment, "discriminator_loss": disc_loss, "gradient_penalty": penalty,
        })

    def test_step(self, data):
        x = {m: data[0][m] for m in self.modalities}
        labels = ops.cast(data[1], "int32")
        out, task, adversarial, moment, loss = self._objective(x, labels, training=False)
        embeddings, domains = self._discriminator_batch(out, labels)
        disc_loss = self._cross_entropy(self.discriminator.logits(embeddings), domains)
        return self._track(out, labels, {
            "loss": loss, "task_loss": task, "adversarial_loss": adversarial,
            "moment_loss": moment, "discriminator_loss": disc_loss,
            "gradient_penalty": ops.zeros(()),
        })

    def get_config(self):
        config = super().get_config()
        config.update({
            "network": keras.layers.serialize(self.network),
            "modalities": self.modalities,
            "adversary": self.adversary,
            "discriminator_steps": self.discriminator_steps,
            "moment_matching": self.moment_matching,
            "moment_weight": self.moment_weight,
            "cmd_moments": self.cmd_moments,
            "gradient_penalty": self.gradient_penalty,
        })
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["network"] = keras.layers.deserialize(config["network"])
        return cls(**config)
