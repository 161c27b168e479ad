"""Train a dual encoder that aligns two modalities; evaluate cross-modal retrieval, CCA and
clustering of the learned embeddings.

    python -m training.train_retrieval --config training/configs/avmnist/dual_encoder.yaml \
        --model-dir runs/avmnist/dual_encoder [--set trainer.epochs=3 --set runtime.cpu_replicas=2]
    python -m training.train_retrieval --config training/configs/openmoji/dual_encoder.yaml \
        --model-dir runs/openmoji/dual_encoder        # image <-> text

The pair loss (`cross_modal.loss`: CLIP, SigLIP or deep CCA) is computed in the model's custom
`train_step` on the embeddings of the whole global batch: under `MirroredStrategy`
(`runtime.cpu_replicas` logical CPUs, or the GPUs) each replica all-gathers the other
replicas' embeddings, so every replica sees all the negatives.

A text modality is vectorised in tf.data by a `TextVectorization` adapted on the training
split (`mmkeras.data.preprocessing.Preprocessing`, as `training.train` does); its vocabulary
is saved as `DIR/vocab.txt` and reloaded by `--evaluate-only`.

The model directory receives:

    DIR/config.yaml    the resolved config          DIR/model.keras   the trained dual encoder
    DIR/history.csv    per-epoch loss/temperature    DIR/report.json   the figures below
    DIR/vocab.txt      the text vocabulary (text modality only)

`report.json` holds, on the test split (by default the pairs whose items - clips, texts - are
all distinct):
- retrieval both ways (`<a>_to_<b>`, `<b>_to_<a>` for the sorted modalities, e.g.
  `audio_to_image`, `image_to_text`), Recall@1/5/10 and median rank at the **instance** level
  (the paired item is the only correct one) and the **class** level (any item of the query's
  class is correct), each beside the exact random baseline. AV-MNIST pairs share nothing but
  the digit, so there `instance.class_perfect_ceiling` gives the best instance-level recall
  any model can expect; OpenMoji pairs (an emoji and its own annotation) are unique, so the
  instance level is the real task;
- canonical correlations of the two embeddings: a linear CCA fitted on training embeddings
  and scored on the test embeddings, beside the same with the test pairs shuffled;
- k-means (k = classes) on each modality's and the fused (concatenated) test embeddings: NMI
  and ARI against the labels, beside a random assignment with the same cluster sizes.

Retrieval and clustering use the space of `cross_modal.eval_space`: cosine of the embeddings
for the contrastive losses; for deep CCA the canonical space of that training-fitted linear
CCA (whitened variates scaled by their correlations), because deep CCA's outputs have an
arbitrary scale and rotation that cosine similarity would read as signal.
"""

import pathlib
import sys
import time

from mmkeras import errors
from mmkeras.configs import ConfigError


def parse_args(argv=None):
    from training.cli import experiment_parser

    parser = experiment_parser(__doc__)
    parser.add_argument("--evaluate-only", action="store_true",
                        help="skip training: evaluate MODEL_DIR/model.keras and rewrite the report")
    return parser.parse_args(argv)


def make_pair_loss(cross_modal, modalities):
    """The configured pair loss, reading the dual encoder's embedding keys."""
    from mmkeras import losses
    from mmkeras.models.dual_encoder import embedding_key

    keys = [embedding_key(m) for m in modalities]
    if cross_modal.loss == "clip":
        return losses.CLIPLoss(
            temperature=cross_modal.temperature, positives=cross_modal.positives,
            embedding_keys=keys,
        )
    if cross_modal.loss == "siglip":
        return losses.SigLIPLoss(
            temperature=cross_modal.temperature,
            bias=cross_modal.logit_bias if cross_modal.logit_bias is not None else -10.0,
            positives=cross_modal.positives, embedding_keys=keys,
        )
    if cross_modal.loss == "cca":
        return losses.CCALoss(
            num_components=cross_modal.cca_components,
            regularization=cross_modal.cca_regularization, embedding_keys=keys,
        )
    raise ConfigError(f"Unknown cross_modal.loss '{cross_modal.loss}'. Known: clip, siglip, cca.")


EVAL_SPACES = ("embedding", "canonical")


def distinct_clip_rows(columns, modality):
    """Indices of the first pair of every distinct file of `modality` (in manifest order)."""
    import numpy as np

    _, first = np.unique(np.asarray(columns[modality]), return_index=True)
    return np.sort(first)


def distinct_item_rows(columns, modalities):
    """Indices of the pairs whose item of every modality (file path or text) occurs first:
    a pair whose clip or text repeats an earlier pair's is left out, so every pair of the
    result is the only one holding each of its items."""
    import numpy as np

    keep = np.ones(len(columns["label"]), bool)
    for m in modalities:
        first = np.zeros_like(keep)
        first[distinct_clip_rows(columns, m)] = True
        keep &= first
    return np.flatnonzero(keep)


def resolve_eval_space(cross_modal):
    space = cross_modal.eval_space or ("canonical" if cross_modal.loss == "cca" else "embedding")
    if space not in EVAL_SPACES:
        raise ConfigError(f"cross_modal.eval_space must be one of {EVAL_SPACES} or null, got {space!r}.")
    return space


def subset(columns, rows):
    return {key: value[rows] for key, value in columns.items()}


def embed(model, dataset):
    """`({embedding_key: (n, d)}, labels (n,))` over a `(features, label)` dataset."""
    import numpy as np

    outputs, labels = {}, []
    for x, y in dataset:
        for key, value in model(x, training=False).items():
            outputs.setdefault(key, []).append(np.asarray(value))
        labels.append(np.asarray(y))
    return {k: np.concatenate(v) for k, v in outputs.items()}, np.concatenate(labels)


def evaluate_embeddings(test_embeddings, test_labels, train_embeddings, modalities, cross_modal, seed=0):
    """Retrieval, held-out CCA and clustering figures of paired embeddings (numpy)."""
    import numpy as np

    from mmkeras.metrics import LinearCCA
    from mmkeras.metrics import clustering_report
    from mmkeras.metrics import retrieval_report
    from mmkeras.models.dual_encoder import embedding_key

    a_key, b_key = (embedding_key(m) for m in modalities)
    a, b = test_embeddings[a_key], test_embeddings[b_key]
    cca = LinearCCA(regularization=1e-3).fit(train_embeddings[a_key], train_embeddings[b_key])
    space = resolve_eval_space(cross_modal)
    if space == "canonical":
        # Deep CCA's objective is blind to offsets and to any invertible linear map of either
        # view, so its raw outputs have an arbitrary mean, scale and rotation; compare the
        # pairs in the canonical space of the training-fitted CCA instead.
        a_space, b_space = cca.canonical_embeddings(a, b)
    elif cross_modal.loss == "cca":
        # Raw deep CCA outputs: at least remove the arbitrary mean (the training mean).
        a_space = a - train_embeddings[a_key].mean(0)
        b_space = b - train_embeddings[b_key].mean(0)
    else:
        a_space, b_space = a, b
    retrieval = retrieval_report(a_space, b_space, test_labels, names=modalities)
    retrieval["space"] = space

    held_out = cca.score(a, b)
    shuffled = cca.score(a, b[np.random.default_rng(seed).permutation(len(b))])
    correlations = {
        "fitted_on_train_examples": int(len(train_embeddings[a_key])),
        "test_examples": int(len(a)),
        "ours": {
            "top1": float(held_out[0]),
            "top10_mean": float(np.mean(held_out[:10])),
            "mean": float(np.mean(held_out)),
            "all": [round(float(c), 4) for c in held_out],
        },
        "random_shuffled_pairs": {
            "top1": float(shuffled[0]),
            "top10_mean": float(np.mean(shuffled[:10])),
            "mean": float(np.mean(shuffled)),
        },
        "train_in_sample_top10_mean": float(np.mean(cca.train_correlations_[:10])),
    }

    clustering = {}
    fused = np.concatenate([a_space, b_space], axis=1)
    for name, x in ((modalities[0], a_space), (modalities[1], b_space), ("fused", fused)):
        clustering[name] = clustering_report(x, test_labels, k=cross_modal.clustering_k, seed=seed)
    return {"retrieval": retrieval, "canonical_correlations": correlations, "clustering": clustering}


def train(config, model_dir, fresh=False, evaluate_only=False):
    """Trains `config` (a `CrossModalExperimentConfig`) into `model_dir`; returns the report.

    With `evaluate_only`, loads `model_dir/model.keras` instead of training (the timings and
    final-epoch figures of the previous report are kept).
    """
    from training.trainer import prepare_model_dir

    model_dir = prepare_model_dir(model_dir, fresh=fresh and not evaluate_only)

    from training import runtime

    strategy = runtime.setup(config)  # before TensorFlow runs anything
    import keras
    import numpy as np

    from mmkeras.configs import save_config
    from mmkeras.data import load_split
    from mmkeras.data import make_dataset
    from mmkeras.data.preprocessing import Preprocessing
    from mmkeras.data.sources import dataset_dir_for
    from mmkeras.data.sources import dataset_info
    from mmkeras.models import build_encoder
    from mmkeras.models.dual_encoder import DualEncoder
    from training.optimizers import make_optimizer

    replicas = strategy.num_replicas_in_sync
    save_config(config, model_dir / "config.yaml")
    cross_modal = config.cross_modal
    modalities = sorted(config.model.modalities)
    if len(modalities) != 2:
        raise ConfigError(f"A dual encoder takes two modalities, got model.modalities={modalities}.")

    dataset_dir = dataset_dir_for(config.data)
    info = dataset_info(dataset_dir)
    columns = {
        split: load_split(dataset_dir, split, config.data, modalities, config.model.num_classes)[0]
        for split in ("train", "validation", "test")
    }
    for split, split_columns in columns.items():
        if len(split_columns["label"]) == 0:
            from mmkeras.data import DataError

            raise DataError(f"The {split} split of {dataset_dir} has no usable rows.")
    # Text -> token ids in tf.data, with a vocabulary adapted on the training split only
    # (saved as DIR/vocab.txt), or a keras_hub encoder's preset tokenizer (saved in
    # DIR/text_preprocessor/); --evaluate-only reloads it instead of fitting again.
    preprocessing = None
    if {"text", "tabular"} & set(modalities):
        text_encoder = config.model.text_encoder  # keras_hub: the preset's tokenizer
        if evaluate_only:
            preprocessing = Preprocessing.load(model_dir, config.data, modalities,
                                               text_encoder=text_encoder)
        else:
            preprocessing = Preprocessing.fit(columns["train"], config.data, modalities,
                                              text_encoder=text_encoder)
            preprocessing.save(model_dir)
    train_ds = make_dataset(
        columns["train"], config.data, modalities, training=True, preprocessing=preprocessing
    )
    val_ds = make_dataset(columns["validation"], config.data, modalities, preprocessing=preprocessing)

    logit_bias = cross_modal.logit_bias
    if cross_modal.loss == "siglip" and logit_bias is None:
        logit_bias = -10.0  # SigLIP's initial bias
    if evaluate_only:
        import json

        previous = json.loads((model_dir / "report.json").read_text())
        model = keras.saving.load_model(model_dir / "model.keras")
        return _evaluate_and_report(
            config, model_dir, model, columns, cross_modal, modalities, strategy, info,
            dataset_dir, previous["fit_seconds"], previous["final_epoch"], previous["epochs"],
            preprocessing,
        )
    with strategy.scope():
        encoders = {m: build_encoder(m, config.model, config.data) for m in modalities}
        model = DualEncoder(
            encoders,
            embedding_dim=cross_modal.embedding_dim,
            projection_units=cross_modal.projection_units,
            temperature=cross_modal.temperature,
            learn_temperature=cross_modal.learn_temperature,
            max_logit_scale=cross_modal.max_logit_scale,
            logit_bias=logit_bias,
            normalize=cross_modal.loss != "cca",
            projection_norm=cross_modal.projection_norm,
            name=config.model.name,
        )
        model.compile(
            optimizer=make_optimizer(config.trainer, replicas),
            loss=make_pair_loss(cross_modal, modalities),
            jit_compile=config.runtime.jit_compile,
        )

    print(f"[train_retrieval] {config.name}: {cross_modal.loss} loss, positives="
          f"{cross_modal.positives}; {len(columns['train']['label'])} train / "
          f"{len(columns['validation']['label'])} validation pairs; {replicas} replica(s) "
          f"({strategy.__class__.__name__}), global batch {config.data.batch_size}", flush=True)
    callbacks = [keras.callbacks.CSVLogger(str(model_dir / "history.csv"))]
    if config.trainer.early_stopping_patience:
        # A dual encoder logs no accuracy: stop on the validation pair loss and keep the
        # weights of its best epoch (the test split plays no part in the choice).
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss", mode="min", patience=config.trainer.early_stopping_patience,
                restore_best_weights=True, verbose=1 if config.trainer.verbose else 0,
            )
        )
    start = time.time()
    history = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=config.trainer.epochs,
        steps_per_epoch=config.trainer.steps_per_epoch,
        callbacks=callbacks,
        verbose=config.trainer.verbose,
    )
    fit_seconds = time.time() - start
    model.save(model_dir / "model.keras")
    last = {k: float(v[-1]) for k, v in history.history.items() if v}
    if config.trainer.early_stopping_patience and history.history.get("val_loss"):
        best = int(np.argmin(history.history["val_loss"]))
        last["restored_best_epoch"] = best + 1
        last["restored_best_val_loss"] = float(history.history["val_loss"][best])
    return _evaluate_and_report(
        config, model_dir, model, columns, cross_modal, modalities, strategy, info, dataset_dir,
        fit_seconds, last, len(history.history.get("loss", [])), preprocessing,
    )


def _evaluate_and_report(
    config, model_dir, model, columns, cross_modal, modalities, strategy, info, dataset_dir,
    fit_seconds, last, epochs, preprocessing=None,
):
    import numpy as np

    from mmkeras.configs import to_dict
    from mmkeras.data import make_dataset
    from training import report as report_lib

    start = time.time()
    if cross_modal.eval_distinct_clips:
        test_rows = distinct_item_rows(columns["test"], modalities)
    else:
        test_rows = np.arange(len(columns["test"]["label"]))
    test_columns = subset(columns["test"], test_rows)
    test_embeddings, test_labels = embed(
        model, make_dataset(test_columns, config.data, modalities, preprocessing=preprocessing)
    )
    train_rows = np.arange(min(cross_modal.eval_cca_train_examples, len(columns["train"]["label"])))
    train_embeddings, _ = embed(
        model,
        make_dataset(
            subset(columns["train"], train_rows), config.data, modalities,
            preprocessing=preprocessing,
        ),
    )
    figures = evaluate_embeddings(
        test_embeddings, test_labels, train_embeddings, modalities, cross_modal,
        seed=config.trainer.seed,
    )
    eval_seconds = time.time() - start
    report = {
        "experiment": config.name,
        "loss": cross_modal.loss,
        "positives": cross_modal.positives,
        "test_pairs": int(len(test_rows)),
        "test_pairs_note": (
            "test pairs whose items are all distinct (first pair of each clip / text)"
            if cross_modal.eval_distinct_clips else "all test pairs"
        ),
        "eval_space": figures["retrieval"]["space"],
        **figures,
        "final_epoch": last,
        "learned_temperature": (
            None if cross_modal.loss == "cca" else float(1.0 / np.asarray(model.logit_scale.scale()))
        ),
        "epochs": epochs,
        "fit_seconds": round(fit_seconds, 1),
        "eval_seconds": round(eval_seconds, 1),
        "replicas": strategy.num_replicas_in_sync,
        "strategy": strategy.__class__.__name__,
        "parameters": int(model.count_params()),
        "seed": config.trainer.seed,
        "dataset": {
            "dir": str(dataset_dir),
            "name": info.get("name"),
            "variant": info.get("variant"),
            "recipe_version": info.get("recipe_version"),
            "checksum": info.get("checksum"),
        },
        "config": to_dict(config),
    }
    report_lib.write_json(model_dir / "report.json", report)
    return report


def summary_lines(report):
    """A few human-readable lines of a report."""
    retrieval = report["retrieval"]
    lines = [
        f"{retrieval['gallery_size']} test pairs, {retrieval['classes']} classes; retrieval and "
        f"k-means in the {retrieval.get('space', 'embedding')} space"
    ]
    for direction in [k for k in retrieval if "_to_" in k]:
        for level in ("instance", "class"):
            ours = retrieval[direction][level]["ours"]
            rand = retrieval[direction][level]["random"]
            ks = retrieval["ks"]
            cells = "  ".join(f"R@{k} {ours[f'R@{k}']:.3f} (random {rand[f'R@{k}']:.3f})" for k in ks)
            lines.append(
                f"{direction:14s} {level:8s} {cells}  median rank {ours['median_rank']:.0f} "
                f"(random {rand['median_rank']:.0f})"
            )
    cca = report["canonical_correlations"]
    lines.append(
        f"held-out CCA: top-1 {cca['ours']['top1']:.3f}, mean of top-10 {cca['ours']['top10_mean']:.3f} "
        f"(shuffled pairs: {cca['random_shuffled_pairs']['top1']:.3f}, "
        f"{cca['random_shuffled_pairs']['top10_mean']:.3f})"
    )
    for name, c in report["clustering"].items():
        lines.append(
            f"k-means ({name}): NMI {c['ours']['nmi']:.3f} ARI {c['ours']['ari']:.3f} "
            f"(random NMI {c['random']['nmi']:.3f} ARI {c['random']['ari']:.3f})"
        )
    return lines


@errors.command_line
def main(argv=None):
    args = parse_args(argv)
    from training.cli import run_experiment
    from mmkeras.configs.cross_modal_config import load_cross_modal_config

    return run_experiment(
        args, load_cross_modal_config,
        lambda config: train(config, args.model_dir, fresh=args.fresh,
                             evaluate_only=args.evaluate_only),
        lambda report: [*summary_lines(report),
                        f"report: {pathlib.Path(args.model_dir) / 'report.json'}"])


if __name__ == "__main__":
    sys.exit(main())
