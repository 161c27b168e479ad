"""Adversarial modality invariance: a shared embedding trained against a modality
discriminator (`mmkeras.models.AdversarialInvarianceTrainer`), measured with fresh probes
(`mmkeras.metrics.invariance_report`).

    python -m training.train --config training/configs/avmnist/modality_invariance.yaml \
        --model-dir runs/invariance/reversal
    # the lambda = 0 baseline (same data, seed and schedule; the discriminator learns but does
    # not shape the encoders), as a run of its own:
    python -m training.train --config training/configs/avmnist/modality_invariance.yaml \
        --model-dir runs/invariance/baseline --set cross_modal.reversal_scale=0

Training alternates per batch one encoder/task update and `cross_modal.discriminator_steps`
discriminator updates with its own Adam (`discriminator_learning_rate`). Lambda stays 0 for
`adversary_warmup_epochs`, then follows DANN's ramp up to `reversal_scale`
(`GradientReversalSchedule`, which continues from the optimizer's step after a resume).

The run is named after its recipe (`run`): the `cross_modal.adversary` (`reversal`,
`confusion`, `inverted`), `no_adversary` with lambda 0 and moment matching, `baseline` with
lambda 0 and none; `_cmd` / `_linear_mmd` / `_paired` appended with moment matching.
`report.json[run]` holds the test figures of `invariance_report` (task accuracy per
modality, own discriminator, linear / MLP modality probes, probe transfer, embedding
statistics) and the recipe (lambda, schedule, discriminator steps and learning rate, both
optimizers' update counts).

Model directory: `model.keras` is the network of the LAST epoch (a functional model: inputs
per modality, class / modality / embedding outputs): lambda ramps over the whole run, so the
adversary's work is complete only at the end (the previous script's figures were of the last
epoch too). `trainer.keras` is the whole `AdversarialInvarianceTrainer` of the last epoch
(both optimizers' states). `checkpoints/best.keras` is the trainer at the best
`val_task_loss` (the monitor, see `InvarianceTask.monitor`); `backup/` resumes a killed run
with both optimizers, the ramp and the schedule's step.
"""

import pathlib

import keras
import numpy as np

from mmkeras import model_dir as model_dir_lib
from mmkeras.layers.gradient_reversal import GradientReversalSchedule
from mmkeras.metrics import invariance_report
from mmkeras.models import AdversarialInvarianceTrainer
from mmkeras.models import build_encoder
from mmkeras.models import build_modality_invariant_classifier
from training import runtime
from training.tasks.base import Task
from training.tasks.registry import register

TRAINER_FILE = "trainer.keras"


def run_name(cross_modal):
    """The run's name in `report.json` (see the module docstring)."""
    moment = bool(cross_modal.moment_matching and cross_modal.moment_weight > 0)
    if cross_modal.reversal_scale > 0:
        name = cross_modal.adversary
    else:
        name = "no_adversary" if moment else "baseline"
    return f"{name}_{cross_modal.moment_matching}" if moment else name


def steps_per_epoch(config, data):
    return config.trainer.steps_per_epoch or int(
        np.ceil(data.size("train") / config.data.batch_size))


def warmup_steps(config, data):
    return int(round(config.cross_modal.adversary_warmup_epochs * steps_per_epoch(config, data)))


def discriminator_learning_rate(config):
    return config.cross_modal.discriminator_learning_rate or config.trainer.learning_rate


def scheduled(cross_modal):
    """Whether lambda or the moment term is ramped (not for the baseline)."""
    return bool(cross_modal.reversal_scale > 0
                or (cross_modal.moment_matching and cross_modal.moment_weight > 0))


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


@register
class InvarianceTask(Task):
    """The modality-invariant classifier under alternating adversarial training."""

    name = "invariance"

    def __init__(self):
        self.trainer = None  # the AdversarialInvarianceTrainer of the model of record

    def build_model(self, config, data, strategy):
        cm = config.cross_modal
        modalities = sorted(config.model.modalities)
        moment = cm.moment_matching if cm.moment_weight > 0 else None
        encoders = {m: build_encoder(m, config.model, config.data) for m in modalities}
        network = build_modality_invariant_classifier(
            encoders, config.model.num_classes, embedding_dim=cm.embedding_dim,
            discriminator_units=cm.discriminator_units, reversal_scale=cm.reversal_scale,
            adversary=cm.adversary, embedding_norm=cm.embedding_norm,
            shared_projection=cm.shared_projection,
            name=f"{config.model.name}_{run_name(cm)}",
        )
        model = AdversarialInvarianceTrainer(
            network, modalities, adversary=cm.adversary,
            discriminator_steps=cm.discriminator_steps, moment_matching=moment,
            moment_weight=cm.moment_weight if moment else 0.0, cmd_moments=cm.cmd_moments,
            gradient_penalty=cm.discriminator_gradient_penalty,
        )
        model.compile(
            optimizer=self.optimizer(config, data, strategy, model),
            discriminator_optimizer=keras.optimizers.Adam(discriminator_learning_rate(config)),
            jit_compile=runtime.resolve_jit_compile(config.runtime, strategy),
        )
        print(f"[invariance] {run_name(cm)}: adversary={cm.adversary} "
              f"lambda={cm.reversal_scale} moment={moment}*{cm.moment_weight if moment else 0} "
              f"discriminator_steps={cm.discriminator_steps} "
              f"discriminator_lr={discriminator_learning_rate(config)} "
              f"warmup_steps={warmup_steps(config, data)} norm={cm.embedding_norm} "
              f"shared_projection={cm.shared_projection}", flush=True)
        return model

    def monitor(self, config):
        """The validation task loss (the digit cross-entropy summed over the modalities).

        Not `trainer.monitor` (`val_accuracy`, which this model does not log), and not the
        total or adversarial loss: lambda ramps during training and the adversarial term is a
        game, so neither falls as the model improves. The task loss is what both the
        adversarial model and the baseline must keep; it is smoother than the accuracy of
        the few hundred validation pairs. It picks `checkpoints/best.keras` and drives early
        stopping; the model of record is the last epoch's (see the module docstring).
        """
        return "val_task_loss", "min"

    def callbacks(self, config, model_dir, data, model, val_ds):
        cm = config.cross_modal
        if not scheduled(cm):
            return [], []
        warmup = warmup_steps(config, data)
        total = steps_per_epoch(config, data) * config.trainer.epochs
        # First: its `reversal_scale` log reaches history.csv and TensorBoard.
        return [GradientReversalSchedule(
            total_steps=total if cm.reversal_schedule else warmup + 1, warmup_steps=warmup)], []

    def hparams(self, config):
        cm = config.cross_modal
        return {
            **super().hparams(config),
            "cross_modal.adversary": cm.adversary,
            "cross_modal.reversal_scale": cm.reversal_scale,
            "cross_modal.embedding_dim": cm.embedding_dim,
            "cross_modal.discriminator_steps": cm.discriminator_steps,
            "cross_modal.discriminator_gradient_penalty": cm.discriminator_gradient_penalty,
            "cross_modal.moment_matching": f"{cm.moment_matching}*{cm.moment_weight:g}"
            if cm.moment_matching else "none",
        }

    def save_model_of_record(self, model_dir, model):
        """Writes the last epoch's network to `model.keras` and its trainer to
        `trainer.keras`; returns the network."""
        model_dir = pathlib.Path(model_dir)
        with model_dir_lib.atomic_file(model_dir / TRAINER_FILE) as tmp:
            model.save(tmp)
        with model_dir_lib.atomic_file(model_dir / model_dir_lib.MODEL_FILE) as tmp:
            model.network.save(tmp)
        self.trainer = model
        return model.network

    def load_model(self, model_dir):
        """The directory's trainer (`trainer.keras`: the network and both optimizers)."""
        return keras.saving.load_model(pathlib.Path(model_dir) / TRAINER_FILE)

    def evaluate(self, config, model_dir, model, data, strategy):
        cm = config.cross_modal
        run = run_name(cm)
        ramped = scheduled(cm)
        updates = {}
        if self.trainer is not None:
            updates = {
                "discriminator_updates": int(keras.ops.convert_to_numpy(
                    self.trainer.discriminator_optimizer.iterations)),
                "encoder_updates": int(keras.ops.convert_to_numpy(
                    self.trainer.optimizer.iterations)),
            }
        figures = invariance_report(
            model, data.dataset("train", config.data), data.dataset("test", config.data),
            data.modalities, config.model.num_classes, probe_mlp_epochs=cm.probe_mlp_epochs)
        result = {
            "adversary": cm.adversary if cm.reversal_scale > 0 else None,
            "reversal_scale": cm.reversal_scale,
            "schedule": bool(cm.reversal_schedule and ramped),
            "final_lambda": float(keras.ops.convert_to_numpy(
                model.get_layer("modality_discriminator").scale)),
            "moment_matching": cm.moment_matching if cm.moment_weight > 0 else None,
            "moment_weight": cm.moment_weight if cm.moment_matching else 0.0,
            "discriminator_steps": cm.discriminator_steps,
            "discriminator_learning_rate": discriminator_learning_rate(config),
            "warmup_steps": warmup_steps(config, data),
            **updates,
            **figures,
        }
        return {"run": run, run: result}

    def summary_lines(self, report):
        r = report[report["run"]]
        probes = r["probe_modality_accuracy"]
        head = (f"{report['run']}: task accuracy "
                + ", ".join(f"{m} {v:.3f}" for m, v in r["task_accuracy"].items())
                + "; modality probes " + ", ".join(f"{k} {v:.3f}" for k, v in probes.items())
                + f"; own discriminator {r['discriminator_accuracy']:.3f}")
        return [head, *format_table(report).splitlines()]
