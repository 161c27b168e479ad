"""Train a shared-representation autoencoder on two modalities; measure within- and
cross-modal reconstruction and linear probes of the shared code.

    python -m training.train_shared_autoencoder \
        --config training/configs/avmnist/shared_autoencoder.yaml --model-dir runs/avmnist/shared_ae

Targets: the image pixels and the audio's log-mel spectrogram (computed in tf.data with the
audio encoder's settings, standardised per clip, flattened). With `autoencoder_subsets` (the
default) the model is trained through `subset_training_model`: every step, the codes of both
modalities, of the image alone and of the audio alone each reconstruct both targets, plus the
optional label-free `autoencoder_alignment` term between the image-only and audio-only codes;
otherwise the model itself is trained with random modality dropout. `report.json` gives on the test
split, for each input condition (`both`, `image_only`, `audio_only`: which modalities feed
the code):

- `reconstruction_mse` of every modality, beside two baselines: `mean` (predict the training
  mean target) and `class_mean` (predict the training mean target of the example's true
  digit: the best any model can do for a modality it does not see, since AV-MNIST pairs
  share nothing but the digit);
- `probe_accuracy`: a closed-form linear probe of the digit trained on training codes of the
  same condition (chance 0.1), and `probe_transfer`: a probe trained on image-only codes and
  tested on audio-only codes, and the reverse (a shared code makes them transfer).
"""

import itertools
import sys
import time

from mmkeras import errors
from mmkeras.configs import ConfigError

CONDITIONS = {"both": ("image", "audio"), "image_only": ("image",), "audio_only": ("audio",)}


def parse_args(argv=None):
    from training.cli import experiment_parser

    parser = experiment_parser(__doc__)
    return parser.parse_args(argv)


def audio_target_layer(audio_config):
    import keras

    return keras.layers.MelSpectrogram(
        fft_length=audio_config.fft_length, sequence_stride=audio_config.sequence_stride,
        sampling_rate=audio_config.sample_rate, num_mel_bins=audio_config.num_mel_bins,
        max_freq=audio_config.sample_rate / 2, power_to_db=True,
    )


def standardized_log_mel(mel_layer, audio):
    """`(batch, samples)` -> flattened log-mel, standardised per clip."""
    import tensorflow as tf

    mel = mel_layer(audio)
    mel = tf.reshape(mel, [tf.shape(mel)[0], -1])
    mean = tf.reduce_mean(mel, axis=1, keepdims=True)
    std = tf.math.reduce_std(mel, axis=1, keepdims=True) + 1e-6
    return (mel - mean) / std


def _collect(model, coder, dataset, condition):
    import numpy as np

    keep = CONDITIONS[condition]
    recon, codes, targets, labels = {}, [], {}, []
    for x, y, label in dataset:
        x = dict(x)
        for m in ("image", "audio"):
            if m not in keep:
                x[f"{m}_present"] = x[f"{m}_present"] * 0.0
        out = model(x, training=False)
        for k, v in out.items():
            recon.setdefault(k, []).append(np.asarray(v).reshape(len(v), -1))
        for k, v in y.items():
            targets.setdefault(k, []).append(np.asarray(v).reshape(len(v), -1))
        codes.append(np.asarray(coder(x, training=False)))
        labels.append(np.asarray(label))
    cat = lambda d: {k: np.concatenate(v) for k, v in d.items()}  # noqa: E731
    return cat(recon), np.concatenate(codes), cat(targets), np.concatenate(labels)


def train(config, model_dir, fresh=False):
    from training.trainer import prepare_model_dir

    model_dir = prepare_model_dir(model_dir, fresh=fresh)
    from training import runtime

    strategy = runtime.setup(config)  # before TensorFlow runs anything
    import keras
    import numpy as np
    import tensorflow as tf

    from mmkeras.configs import save_config
    from mmkeras.configs import to_dict
    from mmkeras.data import load_split
    from mmkeras.data import make_dataset
    from mmkeras.data.sources import dataset_dir_for
    from mmkeras.data.sources import dataset_info
    from mmkeras.metrics import ridge_probe
    from mmkeras.models import build_encoder
    from mmkeras.models.shared_autoencoder import ALIGNMENT
    from mmkeras.models.shared_autoencoder import alignment_loss
    from mmkeras.models.shared_autoencoder import build_shared_autoencoder
    from mmkeras.models.shared_autoencoder import subset_reconstruction_key
    from mmkeras.models.shared_autoencoder import subset_training_model
    from mmkeras.models.shared_autoencoder import code_model
    from mmkeras.models.shared_autoencoder import reconstruction_key
    from training import report as report_lib
    from training.optimizers import make_optimizer

    save_config(config, model_dir / "config.yaml")
    modalities = sorted(config.model.modalities)
    if modalities != ["audio", "image"]:
        raise ConfigError(f"train_shared_autoencoder takes image and audio, got {modalities}.")
    dataset_dir = dataset_dir_for(config.data)
    columns = {
        s: load_split(dataset_dir, s, config.data, modalities, config.model.num_classes)[0]
        for s in ("train", "validation", "test")
    }
    mel = audio_target_layer(config.model.audio_encoder)
    audio_size = int(np.prod(mel.compute_output_shape((1, config.data.audio_samples))[1:]))

    def with_targets(ds, keep_labels=False):
        def fn(x, label):
            y = {reconstruction_key("image"): x["image"],
                 reconstruction_key("audio"): standardized_log_mel(mel, x["audio"])}
            return (x, y, label) if keep_labels else (x, y)
        return ds.map(fn)

    cm = config.cross_modal
    if cm.autoencoder_alignment not in (None, "l2", "infonce"):
        raise ConfigError(f"cross_modal.autoencoder_alignment must be null, l2 or infonce, got {cm.autoencoder_alignment!r}.")
    train_ds = with_targets(make_dataset(columns["train"], config.data, modalities, training=True))
    subsets = [s for k in range(1, len(modalities) + 1) for s in itertools.combinations(modalities, k)]
    scale = {m: 1.0 for m in modalities}
    if cm.autoencoder_normalize_losses:
        # The MSE of predicting the mean target, estimated on the first training batches.
        sample = {m: [] for m in modalities}
        for _, y in train_ds.take(cm.autoencoder_normalize_batches):
            for m in modalities:
                sample[m].append(np.asarray(y[reconstruction_key(m)]).reshape(len(y[reconstruction_key(m)]), -1))
        scale = {m: 1.0 / float(np.concatenate(v).var(axis=0).mean()) for m, v in sample.items()}
    if cm.autoencoder_subsets:
        def subset_targets(x, y):
            # Every subset's reconstruction of m has m's target; the alignment output none.
            y = {subset_reconstruction_key(m, s): y[reconstruction_key(m)] for m in modalities for s in subsets}
            if cm.autoencoder_alignment:
                y[ALIGNMENT] = tf.zeros_like(y[subset_reconstruction_key(modalities[0], subsets[0])][:, 0])
            return {m: x[m] for m in modalities}, y

        train_ds = train_ds.map(subset_targets)
    with strategy.scope():
        encoders = {m: build_encoder(m, config.model, config.data) for m in modalities}
        model = build_shared_autoencoder(
            encoders, {"image": tuple(config.data.image_shape), "audio": (audio_size,)},
            code_dim=config.cross_modal.code_dim, modality_dropout=config.cross_modal.modality_dropout,
            name=config.model.name,
        )
        if cm.autoencoder_subsets:
            trainee = subset_training_model(
                model, alignment=cm.autoencoder_alignment, temperature=cm.autoencoder_alignment_temperature
            )
            loss = {subset_reconstruction_key(m, s): "mse" for m in modalities for s in subsets}
            weights = {subset_reconstruction_key(m, s): scale[m] * (1.0 if m in s else cm.autoencoder_cross_weight)
                       for m in modalities for s in subsets}
            if cm.autoencoder_alignment:
                loss[ALIGNMENT], weights[ALIGNMENT] = alignment_loss, cm.autoencoder_alignment_weight
        else:
            trainee = model
            loss = {reconstruction_key(m): "mse" for m in modalities}
            weights = {reconstruction_key(m): scale[m] for m in modalities}
        trainee.compile(
            optimizer=make_optimizer(config.trainer, strategy.num_replicas_in_sync),
            loss=loss, loss_weights=weights,
        )
    start = time.time()
    trainee.fit(train_ds, epochs=config.trainer.epochs, verbose=config.trainer.verbose,
              callbacks=[keras.callbacks.CSVLogger(str(model_dir / "history.csv"))])
    fit_seconds = time.time() - start
    model.save(model_dir / "model.keras")
    coder = code_model(model)

    train_eval = with_targets(make_dataset(columns["train"], config.data, modalities), keep_labels=True)
    test_eval = with_targets(make_dataset(columns["test"], config.data, modalities), keep_labels=True)
    results, codes = {}, {}
    for condition in CONDITIONS:
        _, train_codes, train_targets, train_labels = _collect(model, coder, train_eval, condition)
        recon, test_codes, test_targets, test_labels = _collect(model, coder, test_eval, condition)
        codes[condition] = (train_codes, train_labels, test_codes, test_labels)
        mse = {}
        for m in modalities:
            key = reconstruction_key(m)
            target, train_target = test_targets[key], train_targets[key]
            class_means = np.stack([train_target[train_labels == c].mean(0) for c in range(config.model.num_classes)])
            mse[m] = {
                "ours": float(np.mean((recon[key] - target) ** 2)),
                "mean": float(np.mean((train_target.mean(0) - target) ** 2)),
                "class_mean": float(np.mean((class_means[test_labels] - target) ** 2)),
            }
        results[condition] = {
            "reconstruction_mse": mse,
            "probe_accuracy": ridge_probe(train_codes, train_labels, test_codes, test_labels)["accuracy"],
        }
    transfer = {}
    for source, target in (("image_only", "audio_only"), ("audio_only", "image_only")):
        tr_codes, tr_labels, _, _ = codes[source]
        _, _, te_codes, te_labels = codes[target]
        transfer[f"{source}_to_{target}"] = ridge_probe(tr_codes, tr_labels, te_codes, te_labels)["accuracy"]

    info = dataset_info(dataset_dir)
    report = {
        "experiment": config.name,
        "conditions": results,
        "probe_transfer": transfer,
        "chance": 1.0 / config.model.num_classes,
        "fit_seconds": round(fit_seconds, 1),
        "train_examples": int(len(columns["train"]["label"])),
        "test_examples": int(len(columns["test"]["label"])),
        "dataset": {"dir": str(dataset_dir), "variant": info.get("variant"), "checksum": info.get("checksum")},
        "config": to_dict(config),
    }
    report_lib.write_json(model_dir / "report.json", report)
    return report


def summary_lines(report):
    """The report's figures as printed lines."""
    lines = []
    for condition, r in report["conditions"].items():
        cells = "  ".join(
            f"{m} MSE {v['ours']:.4f} (mean {v['mean']:.4f}, class-mean {v['class_mean']:.4f})"
            for m, v in r["reconstruction_mse"].items()
        )
        lines.append(f"{condition:10s} {cells}  probe acc {r['probe_accuracy']:.3f}")
    lines.append(f"probe transfer: {report['probe_transfer']} (chance {report['chance']:.2f})")
    return lines


@errors.command_line
def main(argv=None):
    args = parse_args(argv)
    from training.cli import run_experiment
    from mmkeras.configs.cross_modal_config import load_cross_modal_config

    return run_experiment(
        args, load_cross_modal_config,
        lambda config: train(config, args.model_dir, fresh=args.fresh), summary_lines)


if __name__ == "__main__":
    sys.exit(main())
