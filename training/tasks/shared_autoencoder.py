"""Shared-representation autoencoder on two modalities: within- and cross-modal
reconstruction and linear probes of the shared code.

    python -m training.train --config training/configs/avmnist/shared_autoencoder.yaml \
        --model-dir runs/shared_autoencoder

Targets: the image pixels and the audio's log-mel spectrogram (computed in tf.data with the
audio encoder's settings, standardised per clip, flattened: `mmkeras.data.log_mel_targets`).
With `autoencoder_subsets` (the default) the model is trained through
`mmkeras.models.shared_autoencoder.subset_training_model`: every step, the codes of both
modalities, of the image alone and of the audio alone each reconstruct both targets, plus the
optional label-free `autoencoder_alignment` term between the image-only and audio-only codes;
otherwise the autoencoder itself is trained with random modality dropout. No labels are used
in training. The validation split is scored with the same objective (`val_loss`, the
monitor); `model.keras` is the autoencoder (inputs and presence flags -> reconstructions) at
the best `val_loss`, `checkpoints/best.keras` the model that was fit.

`report.json` gives on the test split, for each input condition (`both`, `image_only`,
`audio_only`: which modalities feed the code):

- `reconstruction_mse` of every modality, beside two baselines: `mean` (predict the training
  mean target) and `class_mean` (predict the training mean target of the example's true
  digit: the best any model can do for a modality it does not see, since AV-MNIST pairs
  share nothing but the digit);
- `probe_accuracy`: a closed-form linear probe of the digit trained on training codes of the
  same condition (chance 0.1), and `probe_transfer`: a probe trained on image-only codes and
  tested on audio-only codes, and the reverse (a shared code makes them transfer).
"""

import itertools
import pathlib

import keras
import numpy as np
import tensorflow as tf

from mmkeras import features
from mmkeras import model_dir as model_dir_lib
from mmkeras.configs import ConfigError
from mmkeras.data.log_mel_targets import log_mel_layer
from mmkeras.data.log_mel_targets import log_mel_size
from mmkeras.data.log_mel_targets import standardized_log_mel
from mmkeras.metrics import ridge_probe
from mmkeras.models import build_encoder
from mmkeras.models import build_shared_autoencoder
from mmkeras.models.shared_autoencoder import ALIGNMENT
from mmkeras.models.shared_autoencoder import alignment_loss
from mmkeras.models.shared_autoencoder import code_model
from mmkeras.models.shared_autoencoder import reconstruction_key
from mmkeras.models.shared_autoencoder import subset_reconstruction_key
from mmkeras.models.shared_autoencoder import subset_training_model
from training import runtime
from training.tasks.base import Task
from training.tasks.registry import register

MODALITIES = ["audio", "image"]
CONDITIONS = {"both": ("image", "audio"), "image_only": ("image",), "audio_only": ("audio",)}
ALIGNMENTS = (None, "l2", "infonce")


def subsets(modalities):
    """Every non-empty subset of `modalities` (sorted tuples)."""
    return [s for k in range(1, len(modalities) + 1)
            for s in itertools.combinations(sorted(modalities), k)]


def with_targets(dataset, mel_layer, keep_labels=False):
    """`(x, label)` -> `(x, {<m>_reconstruction: target})` (with `label` third if asked)."""
    def fn(x, label):
        y = {reconstruction_key("image"): x["image"],
             reconstruction_key("audio"): standardized_log_mel(mel_layer, x["audio"])}
        return (x, y, label) if keep_labels else (x, y)
    return dataset.map(fn)


def subset_targets(alignment):
    """A map from `(x, {<m>_reconstruction})` to the subset training model's inputs and
    targets: every subset's reconstruction of `m` has `m`'s target; the alignment output
    none (zeros)."""
    def fn(x, y):
        targets = {subset_reconstruction_key(m, s): y[reconstruction_key(m)]
                   for m in MODALITIES for s in subsets(MODALITIES)}
        if alignment:
            first = subset_reconstruction_key(MODALITIES[0], subsets(MODALITIES)[0])
            targets[ALIGNMENT] = tf.zeros_like(targets[first][:, 0])
        return {m: x[m] for m in MODALITIES}, targets
    return fn


def loss_scales(train_ds, batches):
    """`{m: 1 / variance}`: the inverse MSE of predicting the mean target, estimated on the
    first `batches` training batches (so each modality counts the same)."""
    sample = {m: [] for m in MODALITIES}
    for _, y in train_ds.take(batches):
        for m in MODALITIES:
            target = np.asarray(y[reconstruction_key(m)])
            sample[m].append(target.reshape(len(target), -1))
    return {m: 1.0 / float(np.concatenate(v).var(axis=0).mean()) for m, v in sample.items()}


def collect(model, coder, dataset, condition):
    """Reconstructions, codes, targets and labels over a `(x, y, label)` dataset, with only
    the `condition`'s modalities present."""
    keep = CONDITIONS[condition]
    recon, codes, targets, labels = {}, [], {}, []
    for x, y, label in dataset:
        x = dict(x)
        for m in MODALITIES:
            if m not in keep:
                x[features.presence_key(m)] = x[features.presence_key(m)] * 0.0
        out = model(x, training=False)
        for k, v in out.items():
            recon.setdefault(k, []).append(np.asarray(v).reshape(len(v), -1))
        for k, v in y.items():
            targets.setdefault(k, []).append(np.asarray(v).reshape(len(v), -1))
        codes.append(np.asarray(coder(x, training=False)))
        labels.append(np.asarray(label))

    def cat(d):
        return {k: np.concatenate(v) for k, v in d.items()}

    return cat(recon), np.concatenate(codes), cat(targets), np.concatenate(labels)


@register
class SharedAutoencoderTask(Task):
    """The shared-representation autoencoder (`build_shared_autoencoder`), trained on
    reconstruction only."""

    name = "shared_autoencoder"

    def __init__(self):
        self.autoencoder = None  # the autoencoder behind the model that is fit

    def load_data(self, config, model_dir, evaluate_only=False):
        modalities = sorted(config.model.modalities)
        if modalities != MODALITIES:
            raise ConfigError(
                f"task shared_autoencoder takes model.modalities [image, audio], got {modalities}.")
        if config.cross_modal.autoencoder_alignment not in ALIGNMENTS:
            raise ConfigError(
                "cross_modal.autoencoder_alignment must be null, l2 or infonce, got "
                f"{config.cross_modal.autoencoder_alignment!r}.")
        return super().load_data(config, model_dir, evaluate_only)

    def _mel(self, config):
        return log_mel_layer(config.model.audio_encoder)

    def fit_datasets(self, config, data):
        cm = config.cross_modal
        mel = self._mel(config)
        train_ds = with_targets(data.dataset("train", config.data, training=True), mel)
        val_ds = with_targets(data.dataset("validation", config.data), mel)
        self.scale = {m: 1.0 for m in MODALITIES}
        if cm.autoencoder_normalize_losses:
            self.scale = loss_scales(train_ds, cm.autoencoder_normalize_batches)
        if cm.autoencoder_subsets:
            to_subsets = subset_targets(cm.autoencoder_alignment)
            train_ds, val_ds = train_ds.map(to_subsets), val_ds.map(to_subsets)
        return train_ds, val_ds

    def build_model(self, config, data, strategy):
        cm = config.cross_modal
        audio_size = log_mel_size(self._mel(config), config.data.audio_samples)
        encoders = {m: build_encoder(m, config.model, config.data) for m in MODALITIES}
        model = build_shared_autoencoder(
            encoders, {"image": tuple(config.data.image_shape), "audio": (audio_size,)},
            code_dim=cm.code_dim, modality_dropout=cm.modality_dropout, name=config.model.name,
        )
        scale = getattr(self, "scale", {m: 1.0 for m in MODALITIES})
        if cm.autoencoder_subsets:
            trainee = subset_training_model(
                model, alignment=cm.autoencoder_alignment,
                temperature=cm.autoencoder_alignment_temperature)
            loss = {subset_reconstruction_key(m, s): "mse"
                    for m in MODALITIES for s in subsets(MODALITIES)}
            weights = {subset_reconstruction_key(m, s):
                       scale[m] * (1.0 if m in s else cm.autoencoder_cross_weight)
                       for m in MODALITIES for s in subsets(MODALITIES)}
            if cm.autoencoder_alignment:
                loss[ALIGNMENT] = alignment_loss
                weights[ALIGNMENT] = cm.autoencoder_alignment_weight
        else:
            trainee = model
            loss = {reconstruction_key(m): "mse" for m in MODALITIES}
            weights = {reconstruction_key(m): scale[m] for m in MODALITIES}
        trainee.compile(
            optimizer=self.optimizer(config, data, strategy, trainee),
            loss=loss, loss_weights=weights,
            jit_compile=runtime.resolve_jit_compile(config.runtime, strategy),
        )
        self.autoencoder = model
        return trainee

    def monitor(self, config):
        """The validation loss: the training objective on the validation pairs (the label-free
        reconstruction, plus the alignment term), which has no game in it; `trainer.monitor`
        (`val_accuracy`) does not exist here."""
        return "val_loss", "min"

    def hparams(self, config):
        cm = config.cross_modal
        return {
            **super().hparams(config),
            "cross_modal.code_dim": cm.code_dim,
            "cross_modal.autoencoder_subsets": cm.autoencoder_subsets,
            "cross_modal.autoencoder_alignment": cm.autoencoder_alignment or "none",
            "cross_modal.autoencoder_normalize_losses": cm.autoencoder_normalize_losses,
        }

    def save_model_of_record(self, model_dir, model):
        """Loads the best checkpoint's weights into the model that was fit (sharing its
        weights with the autoencoder), and writes the autoencoder to `model.keras`."""
        model_dir = pathlib.Path(model_dir)
        checkpoint = model_dir / model_dir_lib.BEST_CHECKPOINT
        if checkpoint.is_file():
            model.set_weights(keras.saving.load_model(checkpoint).get_weights())
        with model_dir_lib.atomic_file(model_dir / model_dir_lib.MODEL_FILE) as tmp:
            self.autoencoder.save(tmp)
        return self.autoencoder

    def evaluate(self, config, model_dir, model, data, strategy):
        mel = self._mel(config)
        coder = code_model(model)
        train_eval = with_targets(data.dataset("train", config.data), mel, keep_labels=True)
        test_eval = with_targets(data.dataset("test", config.data), mel, keep_labels=True)
        num_classes = config.model.num_classes
        results, codes = {}, {}
        for condition in CONDITIONS:
            _, train_codes, train_targets, train_labels = collect(model, coder, train_eval,
                                                                  condition)
            recon, test_codes, test_targets, test_labels = collect(model, coder, test_eval,
                                                                   condition)
            codes[condition] = (train_codes, train_labels, test_codes, test_labels)
            mse = {}
            for m in MODALITIES:
                key = reconstruction_key(m)
                target, train_target = test_targets[key], train_targets[key]
                class_means = np.stack([train_target[train_labels == c].mean(0)
                                        for c in range(num_classes)])
                mse[m] = {
                    "ours": float(np.mean((recon[key] - target) ** 2)),
                    "mean": float(np.mean((train_target.mean(0) - target) ** 2)),
                    "class_mean": float(np.mean((class_means[test_labels] - target) ** 2)),
                }
            results[condition] = {
                "reconstruction_mse": mse,
                "probe_accuracy": ridge_probe(train_codes, train_labels, test_codes,
                                              test_labels)["accuracy"],
            }
        transfer = {}
        for source, target in (("image_only", "audio_only"), ("audio_only", "image_only")):
            tr_codes, tr_labels, _, _ = codes[source]
            _, _, te_codes, te_labels = codes[target]
            transfer[f"{source}_to_{target}"] = ridge_probe(
                tr_codes, tr_labels, te_codes, te_labels)["accuracy"]
        return {
            "conditions": results,
            "probe_transfer": transfer,
            "chance": 1.0 / num_classes,
            "train_examples": data.size("train"),
            "test_examples": data.size("test"),
        }

    def summary_lines(self, report):
        lines = []
        for condition, r in report["conditions"].items():
            cells = "  ".join(
                f"{m} MSE {v['ours']:.4f} (mean {v['mean']:.4f}, "
                f"class-mean {v['class_mean']:.4f})"
                for m, v in r["reconstruction_mse"].items()
            )
            lines.append(f"{condition:10s} {cells}  probe acc {r['probe_accuracy']:.3f}")
        lines.append(f"probe transfer: {report['probe_transfer']} "
                     f"(chance {report['chance']:.2f})")
        return lines
