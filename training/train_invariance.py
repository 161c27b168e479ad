"""Adversarial modality invariance: train a shared embedding against a modality
discriminator, beside the same model without the adversary, and measure both honestly.

    python -m training.train_invariance --config training/configs/avmnist/modality_invariance.yaml \
        --model-dir runs/invariance/reversal

Training alternates (`AdversarialInvarianceTrainer`, a custom `train_step` that also runs
under `tf.distribute`, e.g. `--set runtime.cpu_replicas=2`): per batch, one encoder/task
update, then `cross_modal.discriminator_steps` updates of the modality discriminator with its
own Adam (`discriminator_learning_rate`) on the batch's detached embeddings. Lambda stays 0
for `adversary_warmup_epochs`, then follows DANN's ramp up to `reversal_scale`. With
`discriminator_gradient_penalty` gamma, each discriminator update also minimises the R1-style
`gamma / 2 * E ||grad_z logits||^2` on the embeddings, which keeps the judge smooth so that
its gradient neither vanishes nor swamps the task. Optionally a non-adversarial alignment term
(`moment_matching: cmd | linear_mmd | paired`, weight `moment_weight`, same warm-up and ramp)
aligns the modalities' embeddings directly (`paired`: each image with its own audio).

Two models are trained with the same data, seed and schedule: `<adversary>` (the
`cross_modal.adversary`: `reversal` (DANN), `confusion` (Tzeng et al.) or `inverted` (the
non-saturating inverted-label loss, as in ADDA); `no_adversary` when
lambda is 0; `_cmd` / `_linear_mmd` appended with moment matching) and `baseline` (lambda 0,
no moment matching: the discriminator learns, but does not shape the encoders). For each,
`report.json` gives on the test split:

- `task_accuracy`: digit accuracy of the shared task head from each modality alone;
- `discriminator_accuracy`: accuracy of the model's own discriminator (chance: 0.5), and
  `discriminator_gap` = |accuracy - chance| (an accuracy near 0 is as separable as near 1);
- `probe_modality_accuracy`: fresh modality discriminators fitted on frozen training
  embeddings - `linear` (closed-form ridge) and `mlp` - tested on test embeddings (the
  invariance metric: a discriminator the encoders never fought; chance 0.5), and
  `mlp_on_predictions`, the MLP probe on the task head's class probabilities alone (what the
  modalities' unequal accuracy gives away: a floor for any embedding the head reads);
- `probe_class_accuracy`: a linear probe of the digit from the embeddings of both modalities
  pooled, and `probe_transfer_accuracy`: fitted on one modality's training embeddings,
  tested on the other's test embeddings (what invariance buys);
- `embedding_statistics`: per-modality mean norm, fraction of zeros, per-dimension spread,
  and the per-dimension mean shift between the modalities in pooled standard deviations
  (what a probe can read);
- `discriminator_updates` / `encoder_updates`: the two optimizers' step counts.
"""

import sys
import time

from mmkeras import errors


def parse_args(argv=None):
    from training.cli import experiment_parser

    parser = experiment_parser(__doc__)
    parser.add_argument("--no-baseline", action="store_true",
                        help="train only the adversarial model (not the lambda = 0 baseline)")
    return parser.parse_args(argv)


_TRAINER_CLASS = None


def trainer_class():
    """`AdversarialInvarianceTrainer`, a `keras.Model` wrapping the functional network of
    `build_modality_invariant_classifier` with a TensorFlow `train_step` (defined lazily:
    importing this module must not start TensorFlow before `runtime.configure_devices`)."""
    global _TRAINER_CLASS
    if _TRAINER_CLASS is not None:
        return _TRAINER_CLASS
    import keras
    import tensorflow as tf
    from keras import ops

    from mmkeras.losses.distributed import num_replicas_in_sync
    from mmkeras.losses.moment_matching_loss import moment_matching_loss
    from mmkeras.models.modality_invariant_classifier import class_key
    from mmkeras.models.modality_invariant_classifier import embedding_key
    from mmkeras.models.modality_invariant_classifier import modality_key

    class AdversarialInvarianceTrainer(keras.Model):
        """Alternating adversarial training of a modality-invariant classifier.

        Each `train_step` on a batch:

        1. one encoder/task update (`optimizer`): the summed digit cross-entropy of every
           modality plus the adversarial term the network's `AdversarialDiscriminator`
           routes to the encoders only (`reversal`: its cross-entropy on the true modality,
           whose encoder gradient the layer reverses and scales by lambda; `confusion`: the
           cross-entropy of its prediction against uniform, scaled by lambda; both from
           its stable `log_probabilities`, so a confident discriminator still gives the
           encoders a gradient; logged unscaled as `adversarial_loss`), plus
           optionally `moment_weight * ramp * moment_matching_loss` on the embeddings
           (non-adversarial). The discriminator's weights are not updated here.
        2. `discriminator_steps` discriminator updates (`discriminator_optimizer`, its own
           learning rate) on the true modality of the same batch's embeddings, detached.

        Losses are local-batch means divided by the replicas in sync, so the gradients that
        `tf.distribute` sums over replicas are those of the global batch. Lambda and `ramp`
        are set by `GradientReversalSchedule` (warm-up, then DANN's ramp).
        """

        def __init__(self, network, modalities, adversary="reversal", discriminator_steps=1,
                     moment_matching=None, moment_weight=0.0, cmd_moments=5,
                     gradient_penalty=0.0, **kwargs):
            super().__init__(name=kwargs.pop("name", f"{network.name}_trainer"), **kwargs)
            if discriminator_steps < 1:
                raise ValueError(f"discriminator_steps must be >= 1, got {discriminator_steps}.")
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

        def call(self, inputs, training=False):
            return self.network({m: inputs[m] for m in self.modalities}, training=training)

        def compile(self, optimizer, discriminator_optimizer, **kwargs):
            super().compile(optimizer=optimizer, **kwargs)
            self.discriminator_optimizer = discriminator_optimizer
            self.optimizer.build(self.encoder_variables)
            self.discriminator_optimizer.build(self.discriminator_variables)

        @property
        def metrics(self):
            return list(self.trackers.values()) + list(self.accuracies.values())

        def _domains(self, labels, index):
            return ops.full_like(labels, index, dtype="int32")

        def train_step(self, data):
            x = {m: data[0][m] for m in self.modalities}
            labels = ops.cast(data[1], "int32")
            replicas = num_replicas_in_sync()
            with tf.GradientTape() as tape:
                out = self.full(x, training=True)
                task, adversarial = 0.0, 0.0
                for i, m in enumerate(self.modalities):
                    task = task + ops.mean(keras.losses.sparse_categorical_crossentropy(
                        labels, out[class_key(m)]))
                    # Stable log-softmax of the discriminator (the clipped probabilities of
                    # the model's outputs give no gradient once it is confident past 1e-7).
                    log_p = self.discriminator.log_probabilities(
                        out[embedding_key(m)],
                        branch="reversal" if self.adversary == "reversal" else "confusion")
                    if self.adversary == "confusion":  # cross-entropy against uniform
                        adversarial = adversarial - ops.mean(log_p)
                    elif self.adversary == "inverted":  # against the other modalities
                        others = 1.0 - ops.one_hot(
                            self._domains(labels, i), len(self.modalities))
                        others = others / float(len(self.modalities) - 1)
                        adversarial = adversarial - ops.mean(ops.sum(others * log_p, axis=-1))
                    else:  # the discriminator's cross-entropy, reversed for the encoders
                        adversarial = adversarial - ops.mean(ops.take_along_axis(
                            log_p, ops.expand_dims(self._domains(labels, i), -1), axis=-1))
                loss = task + adversarial
                moment = ops.zeros(())
                if self.moment_matching and self.moment_weight > 0:
                    kwargs = ({"moments": self.cmd_moments} if self.moment_matching == "cmd"
                              else {})
                    moment = moment_matching_loss(
                        self.moment_matching,
                        [out[embedding_key(m)] for m in self.modalities], **kwargs)
                    loss = loss + self.moment_weight * ops.convert_to_tensor(self.ramp) * moment
                scaled = self.optimizer.scale_loss(loss / replicas)
            gradients = tape.gradient(scaled, self.encoder_variables)
            self.optimizer.apply_gradients(zip(gradients, self.encoder_variables))

            embeddings = ops.stop_gradient(ops.concatenate(
                [out[embedding_key(m)] for m in self.modalities], axis=0))
            domains = ops.concatenate(
                [self._domains(labels, i) for i in range(len(self.modalities))], axis=0)
            for _ in range(self.discriminator_steps):
                with tf.GradientTape() as tape:
                    with tf.GradientTape(persistent=True) as input_tape:
                        input_tape.watch(embeddings)
                        logits = self.discriminator.logits(embeddings)
                        totals = []
                        if self.gradient_penalty > 0:  # traced only when the penalty is on
                            centred = logits - ops.mean(logits, axis=-1, keepdims=True)
                            totals = [ops.sum(centred[:, j]) for j in range(len(self.modalities))]
                    log_p = ops.log_softmax(logits, axis=-1)
                    disc_loss = -ops.mean(ops.take_along_axis(
                        log_p, ops.expand_dims(domains, -1), axis=-1))
                    penalty = ops.zeros(())
                    if self.gradient_penalty > 0:
                        # R1-style: the squared norm of the (centred) logits' gradient with
                        # respect to the embeddings, on every example: a smooth judge,
                        # whose gradient the encoders can follow.
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

            for name, value in (("loss", loss), ("task_loss", task),
                                ("adversarial_loss", adversarial), ("moment_loss", moment),
                                ("discriminator_loss", disc_loss),
                                ("gradient_penalty", penalty)):
                self.trackers[name].update_state(value)
            for i, m in enumerate(self.modalities):
                self.accuracies[f"{m}_class_acc"].update_state(labels, out[class_key(m)])
                self.accuracies["discriminator_acc"].update_state(
                    self._domains(labels, i), out[modality_key(m)])
            return {metric.name: metric.result() for metric in self.metrics}

    _TRAINER_CLASS = AdversarialInvarianceTrainer
    return _TRAINER_CLASS


def _collect(model, dataset, modalities):
    import numpy as np

    from mmkeras.models.modality_invariant_classifier import class_key
    from mmkeras.models.modality_invariant_classifier import embedding_key
    from mmkeras.models.modality_invariant_classifier import modality_key

    from mmkeras.models.modality_invariant_classifier import embedding_model

    embedder = embedding_model(model)
    out = {k: [] for m in modalities for k in (class_key(m), modality_key(m), embedding_key(m))}
    labels = []
    for x, y in dataset:
        inputs = {m: x[m] for m in modalities}
        pred = {**model(inputs, training=False), **embedder(inputs, training=False)}
        for k in out:
            out[k].append(np.asarray(pred[k]))
        labels.append(np.asarray(y))
    return {k: np.concatenate(v) for k, v in out.items()}, np.concatenate(labels)


def evaluate(model, train_ds, test_ds, modalities, num_classes, probe_mlp_epochs=30):
    """Task, discriminator and probe accuracies (see the module docstring)."""
    import numpy as np

    from mmkeras.metrics import ridge_probe
    from mmkeras.models.modality_invariant_classifier import class_key
    from mmkeras.models.modality_invariant_classifier import embedding_key
    from mmkeras.models.modality_invariant_classifier import modality_key
    from mmkeras.models.modality_invariant_classifier import embedding_statistics
    from mmkeras.models.modality_invariant_classifier import modality_probe_accuracy

    train, train_labels = _collect(model, train_ds, modalities)
    test, test_labels = _collect(model, test_ds, modalities)
    train_emb = {m: train[embedding_key(m)] for m in modalities}
    test_emb = {m: test[embedding_key(m)] for m in modalities}
    chance = 1.0 / len(modalities)
    per_modality = {
        m: float(np.mean(test[modality_key(m)].argmax(1) == i)) for i, m in enumerate(modalities)
    }
    discriminator = float(np.mean(list(per_modality.values())))
    probes = {"linear": modality_probe_accuracy(train_emb, test_emb, probe="linear")}
    if probe_mlp_epochs:
        probes["mlp"] = modality_probe_accuracy(train_emb, test_emb, probe="mlp",
                                                epochs=probe_mlp_epochs)
        # The same MLP probe reading only the task head's class probabilities: what the
        # modalities' unequal predictions (accuracy, confidence) give away by themselves. An
        # embedding the head reads cannot hide that much, whatever the adversary does.
        probes["mlp_on_predictions"] = modality_probe_accuracy(
            {m: train[class_key(m)] for m in modalities},
            {m: test[class_key(m)] for m in modalities}, probe="mlp", epochs=probe_mlp_epochs)
    pooled_train = np.concatenate([train_emb[m] for m in modalities])
    pooled_test = np.concatenate([test_emb[m] for m in modalities])
    transfer = {
        f"{a}->{b}": ridge_probe(train_emb[a], train_labels, test_emb[b], test_labels,
                                 num_classes=num_classes)["accuracy"]
        for a in modalities for b in modalities if a != b
    }
    # The head's mean confidence (max probability) per modality: a function of the
    # embedding, in [0, 1], so for two modalities the best possible modality probe on the
    # embedding scores at least 0.5 + |difference| / 2 (total variation bound). For a
    # calibrated head the confidence is the accuracy: invariance then caps the accuracy gap.
    confidence = {m: float(np.mean(test[class_key(m)].max(1))) for m in modalities}
    bound = None
    if len(modalities) == 2:
        bound = 0.5 + abs(confidence[modalities[0]] - confidence[modalities[1]]) / 2.0
    return {
        "task_accuracy": {
            m: float(np.mean(test[class_key(m)].argmax(1) == test_labels)) for m in modalities
        },
        "head_confidence": confidence,
        "probe_lower_bound_from_confidence": bound,
        "discriminator_accuracy": discriminator,
        "discriminator_accuracy_per_modality": per_modality,
        "discriminator_gap": abs(discriminator - chance),
        "probe_modality_accuracy": probes,
        "probe_class_accuracy": ridge_probe(
            pooled_train, np.tile(train_labels, len(modalities)),
            pooled_test, np.tile(test_labels, len(modalities)), num_classes=num_classes,
        )["accuracy"],
        "probe_transfer_accuracy": transfer,
        "embedding_statistics": embedding_statistics(test_emb),
        "chance": {"modality": chance, "class": 1.0 / num_classes},
        "test_examples": int(len(test_labels)),
    }


def train(config, model_dir, fresh=False, baseline=True):
    from training.trainer import prepare_model_dir

    model_dir = prepare_model_dir(model_dir, fresh=fresh)
    from training import runtime

    strategy = runtime.setup(config)  # before TensorFlow runs anything
    import keras
    import numpy as np

    from mmkeras.configs import save_config
    from mmkeras.configs import to_dict
    from mmkeras.data import load_split
    from mmkeras.data import make_dataset
    from mmkeras.data.sources import dataset_dir_for
    from mmkeras.data.sources import dataset_info
    from mmkeras.models import build_encoder
    from mmkeras.layers.gradient_reversal import GradientReversalSchedule
    from mmkeras.models.modality_invariant_classifier import build_modality_invariant_classifier
    from training import report as report_lib
    from training.optimizers import make_optimizer

    save_config(config, model_dir / "config.yaml")
    cm = config.cross_modal
    modalities = sorted(config.model.modalities)
    dataset_dir = dataset_dir_for(config.data)
    columns = {
        s: load_split(dataset_dir, s, config.data, modalities, config.model.num_classes)[0]
        for s in ("train", "validation", "test")
    }

    train_ds = make_dataset(columns["train"], config.data, modalities, training=True)
    plain_train = make_dataset(columns["train"], config.data, modalities)
    test_ds = make_dataset(columns["test"], config.data, modalities)
    steps = config.trainer.steps_per_epoch or int(np.ceil(len(columns["train"]["label"]) / config.data.batch_size))
    total_steps = steps * config.trainer.epochs
    warmup_steps = int(round(cm.adversary_warmup_epochs * steps))
    disc_lr = cm.discriminator_learning_rate or config.trainer.learning_rate

    results = {}
    label = cm.adversary if cm.reversal_scale > 0 else "no_adversary"
    if cm.moment_matching and cm.moment_weight > 0:
        label += f"_{cm.moment_matching}"
    runs = [(label, cm.reversal_scale, cm.moment_weight)]
    if baseline:
        runs.append(("baseline", 0.0, 0.0))
    jit = runtime.resolve_jit_compile(config.runtime, strategy)
    for run, scale, moment_weight in runs:
        runtime.set_seed(config.trainer.seed)
        with strategy.scope():
            encoders = {m: build_encoder(m, config.model, config.data) for m in modalities}
            network = build_modality_invariant_classifier(
                encoders, config.model.num_classes, embedding_dim=cm.embedding_dim,
                discriminator_units=cm.discriminator_units, reversal_scale=scale,
                adversary=cm.adversary, embedding_norm=cm.embedding_norm,
                shared_projection=cm.shared_projection, name=f"{config.model.name}_{run}",
            )
            model = trainer_class()(
                network, modalities, adversary=cm.adversary,
                discriminator_steps=cm.discriminator_steps,
                moment_matching=cm.moment_matching if moment_weight > 0 else None,
                moment_weight=moment_weight, cmd_moments=cm.cmd_moments,
                gradient_penalty=cm.discriminator_gradient_penalty,
            )
            model.compile(
                optimizer=make_optimizer(config.trainer, strategy.num_replicas_in_sync),
                discriminator_optimizer=keras.optimizers.Adam(disc_lr), jit_compile=jit,
            )
        scheduled = bool(scale > 0 or moment_weight > 0)
        callbacks = [keras.callbacks.CSVLogger(str(model_dir / f"history_{run}.csv"))]
        if scheduled:
            schedule = GradientReversalSchedule(
                total_steps=total_steps if cm.reversal_schedule else warmup_steps + 1,
                warmup_steps=warmup_steps)
            callbacks.insert(0, schedule)
        print(f"[train_invariance] {run}: adversary={cm.adversary} lambda={scale} "
              f"moment={cm.moment_matching if moment_weight > 0 else None}*{moment_weight} "
              f"discriminator_steps={cm.discriminator_steps} discriminator_lr={disc_lr} "
              f"warmup_steps={warmup_steps} norm={cm.embedding_norm} "
              f"shared_projection={cm.shared_projection}", flush=True)
        start = time.time()
        model.fit(train_ds, epochs=config.trainer.epochs, steps_per_epoch=config.trainer.steps_per_epoch,
                  callbacks=callbacks, verbose=config.trainer.verbose)
        seconds = time.time() - start
        network.save(model_dir / f"model_{run}.keras")
        final_scale = float(keras.ops.convert_to_numpy(
            network.get_layer("modality_discriminator").scale))
        results[run] = {
            "adversary": cm.adversary if scale > 0 else None,
            "reversal_scale": scale,
            "schedule": bool(cm.reversal_schedule and scheduled),
            "final_lambda": final_scale,
            "moment_matching": cm.moment_matching if moment_weight > 0 else None,
            "moment_weight": moment_weight,
            "discriminator_steps": cm.discriminator_steps,
            "discriminator_learning_rate": disc_lr,
            "warmup_steps": warmup_steps,
            "discriminator_updates": int(keras.ops.convert_to_numpy(
                model.discriminator_optimizer.iterations)),
            "encoder_updates": int(keras.ops.convert_to_numpy(model.optimizer.iterations)),
            **evaluate(network, plain_train, test_ds, modalities, config.model.num_classes,
                       probe_mlp_epochs=cm.probe_mlp_epochs),
            "fit_seconds": round(seconds, 1),
        }
        print(f"[train_invariance] {run}: {results[run]}", flush=True)

    info = dataset_info(dataset_dir)
    report = {
        "experiment": config.name,
        **results,
        "dataset": {"dir": str(dataset_dir), "variant": info.get("variant"),
                    "checksum": info.get("checksum")},
        "replicas": strategy.num_replicas_in_sync,
        "config": to_dict(config),
    }
    report_lib.write_json(model_dir / "report.json", report)
    return report


def format_table(report):
    """The runs of a report as a Markdown table (test split)."""
    rows = [
        "| run | adversary | lambda (schedule) | disc steps / lr | moment | "
        "task acc per modality | disc acc (gap) | probe disc acc linear / mlp | "
        "mlp probe on predictions | probe transfer acc |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in [r for r in report if isinstance(report[r], dict) and "task_accuracy" in report[r]]:
        r = report[run]
        probes = r["probe_modality_accuracy"]
        moment = (f"{r['moment_matching']} x{r['moment_weight']:g}"
                  if r.get("moment_matching") else "-")
        schedule = "constant"
        if r["schedule"]:
            schedule = "DANN ramp" + (f", warm-up {r['warmup_steps']} steps"
                                      if r.get("warmup_steps") else "")
        rows.append(
            f"| {run} | {r['adversary'] or '-'} | {r['reversal_scale']:g} ({schedule}) | "
            f"{r.get('discriminator_steps', 1)} / {r.get('discriminator_learning_rate', 0):g} | "
            f"{moment} | "
            + ", ".join(f"{m} {v:.3f}" for m, v in r["task_accuracy"].items())
            + f" | {r['discriminator_accuracy']:.3f} ({r['discriminator_gap']:.3f}) | "
            + " / ".join(f"{probes[k]:.3f}" for k in ("linear", "mlp") if k in probes)
            + (f" | {probes['mlp_on_predictions']:.3f}" if "mlp_on_predictions" in probes
               else " | -")
            + " | " + ", ".join(f"{k} {v:.3f}" for k, v in r["probe_transfer_accuracy"].items())
            + " |"
        )
    return "\n".join(rows)


@errors.command_line
def main(argv=None):
    args = parse_args(argv)
    from training.cli import run_experiment
    from mmkeras.configs.cross_modal_config import load_cross_modal_config

    return run_experiment(
        args, load_cross_modal_config,
        lambda config: train(config, args.model_dir, fresh=args.fresh,
                             baseline=not args.no_baseline),
        lambda report: [format_table(report)])


if __name__ == "__main__":
    sys.exit(main())
