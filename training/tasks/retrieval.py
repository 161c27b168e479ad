"""Retrieval: a dual encoder aligning two modalities (CLIP, SigLIP or deep CCA), judged by
cross-modal retrieval, held-out canonical correlations and k-means of its embeddings.

The pair loss (`cross_modal.loss`) is computed in the model's `train_step` on the embeddings
of the whole global batch: under `MirroredStrategy` each replica all-gathers the other
replicas' embeddings, so every replica sees all the negatives. The best checkpoint and early
stopping watch the validation pair loss. Test figures (`report.json`):
- retrieval both ways (`<a>_to_<b>`, `<b>_to_<a>`), Recall@1/5/10 and median rank at the
  instance level (the paired item is the only correct one) and the class level, each beside
  the exact random baseline; by default on the test pairs whose items are all distinct
  (`cross_modal.eval_distinct_clips`);
- canonical correlations: a linear CCA fitted on training embeddings, scored on the test
  embeddings, beside the same with the test pairs shuffled;
- k-means (k = classes) on each modality's and the fused embeddings: NMI and ARI.
See `mmkeras.metrics.paired_embeddings` for the spaces they are computed in.
"""

import time

import numpy as np
import tensorflow as tf

from mmkeras.configs import ConfigError
from mmkeras.data import make_dataset
from mmkeras.losses.distributed import cross_replica_concat
from mmkeras.losses.pair_loss import SIGLIP_INITIAL_BIAS
from mmkeras.losses.pair_loss import make_pair_loss
from mmkeras.metrics.paired_embeddings import evaluate_embeddings
from mmkeras.models import build_encoder
from mmkeras.models.dual_encoder import DualEncoder
from training import runtime
from training.tasks.base import Task
from training.tasks.registry import register


def distinct_clip_rows(columns, modality):
    """Indices of the first pair of every distinct file of `modality` (in manifest order)."""
    _, first = np.unique(np.asarray(columns[modality]), return_index=True)
    return np.sort(first)


def distinct_item_rows(columns, modalities):
    """Indices of the pairs whose item of every modality (file path or text) occurs first:
    a pair whose clip or text repeats an earlier pair's is left out, so every pair of the
    result is the only one holding each of its items."""
    keep = np.ones(len(columns["label"]), bool)
    for m in modalities:
        first = np.zeros_like(keep)
        first[distinct_clip_rows(columns, m)] = True
        keep &= first
    return np.flatnonzero(keep)


def subset(columns, rows):
    return {key: value[rows] for key, value in columns.items()}


def embed(model, dataset):
    """`({embedding_key: (n, d)}, labels (n,))` over a `(features, label)` dataset."""
    outputs, labels = {}, []
    for x, y in dataset:
        for key, value in model(x, training=False).items():
            outputs.setdefault(key, []).append(np.asarray(value))
        labels.append(np.asarray(y))
    return {k: np.concatenate(v) for k, v in outputs.items()}, np.concatenate(labels)


@register
class RetrievalTask(Task):
    """A dual encoder over the two `model.modalities`, trained with `cross_modal.loss`."""

    name = "retrieval"
    # The pair loss all-gathers the embeddings of every replica (`cross_replica_concat`), so
    # under the custom loop's MultiWorkerMirroredStrategy the negatives come from every worker.
    supports_multi_worker = True

    def load_data(self, config, model_dir, evaluate_only=False):
        if len(config.model.modalities) != 2:
            raise ConfigError(
                f"A dual encoder takes two modalities, got model.modalities="
                f"{sorted(config.model.modalities)}."
            )
        return super().load_data(config, model_dir, evaluate_only)

    def build_model(self, config, data, strategy):
        cross_modal = config.cross_modal
        modalities = sorted(config.model.modalities)
        logit_bias = cross_modal.logit_bias
        if cross_modal.loss == "siglip" and logit_bias is None:
            logit_bias = SIGLIP_INITIAL_BIAS
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
            scatter_alignment=cross_modal.scatter_alignment,
            name=config.model.name,
        )
        model.compile(
            optimizer=self.optimizer(config, data, strategy, model),
            loss=make_pair_loss(cross_modal, modalities),
            jit_compile=runtime.resolve_jit_compile(config.runtime, strategy),
        )
        return model

    def replica_step(self, model, x, y, global_batch, training):
        embeddings = model(x, training=training)
        # `compute_loss`: the pair loss of this replica's rows against the gathered batch,
        # divided by the replicas (what the summed gradients need).
        loss = model.compute_loss(x=x, y=y, y_pred=embeddings, training=training)
        examples = tf.cast(tf.shape(y)[0], tf.float32)
        replicas = tf.distribute.get_replica_context().num_replicas_in_sync
        # How many rows each query was compared with: the global batch when the gather
        # reaches every worker (logged as `pair_batch`).
        gathered, _ = cross_replica_concat(embeddings[sorted(embeddings)[0]])
        pair_batch = tf.cast(tf.shape(gathered)[0], tf.float32)
        return loss, {"loss": loss * replicas * examples, "pair_batch": pair_batch * examples,
                      "examples": examples}

    def monitor(self, config):
        # A dual encoder logs no accuracy: keep the epoch of the lowest validation pair loss
        # (the test split plays no part in the choice).
        return "val_loss", "min"

    def hparams(self, config):
        c = config.cross_modal
        return {
            **super().hparams(config),
            "cross_modal.loss": c.loss,
            "cross_modal.positives": c.positives,
            "cross_modal.embedding_dim": c.embedding_dim,
            "cross_modal.temperature": c.temperature,
            "cross_modal.scatter_alignment": c.scatter_alignment,
        }

    def evaluate(self, config, model_dir, model, data, strategy):
        cross_modal = config.cross_modal
        modalities = sorted(config.model.modalities)
        start = time.time()
        test_columns = data.columns("test")
        if cross_modal.eval_distinct_clips:
            test_rows = distinct_item_rows(test_columns, modalities)
        else:
            test_rows = np.arange(len(test_columns["label"]))

        def embeddings(columns):
            return embed(model, make_dataset(columns, config.data, modalities,
                                             preprocessing=data.preprocessing))

        test_embeddings, test_labels = embeddings(subset(test_columns, test_rows))
        train_columns = data.columns("train")
        train_rows = np.arange(min(cross_modal.eval_cca_train_examples, len(train_columns["label"])))
        train_embeddings, _ = embeddings(subset(train_columns, train_rows))
        figures = evaluate_embeddings(
            test_embeddings, test_labels, train_embeddings, modalities, cross_modal,
            seed=config.trainer.seed,
        )
        return {
            "loss": cross_modal.loss,
            "positives": cross_modal.positives,
            "test_pairs": int(len(test_rows)),
            "test_pairs_note": (
                "test pairs whose items are all distinct (first pair of each clip / text)"
                if cross_modal.eval_distinct_clips else "all test pairs"
            ),
            "eval_space": figures["retrieval"]["space"],
            **figures,
            "learned_temperature": (
                None if cross_modal.loss in ("cca", "kernel_alignment")
                else float(1.0 / np.asarray(model.logit_scale.scale()))
            ),
            "eval_seconds": round(time.time() - start, 1),
        }

    def summary_lines(self, report):
        """A few human-readable lines of a report."""
        retrieval = report["retrieval"]
        lines = [
            f"{retrieval['gallery_size']} test pairs, {retrieval['classes']} classes; retrieval "
            f"and k-means in the {retrieval.get('space', 'embedding')} space"
        ]
        for direction in [k for k in retrieval if "_to_" in k]:
            for level in ("instance", "class"):
                ours = retrieval[direction][level]["ours"]
                rand = retrieval[direction][level]["random"]
                cells = "  ".join(f"R@{k} {ours[f'R@{k}']:.3f} (random {rand[f'R@{k}']:.3f})"
                                  for k in retrieval["ks"])
                lines.append(
                    f"{direction:14s} {level:8s} {cells}  median rank {ours['median_rank']:.0f} "
                    f"(random {rand['median_rank']:.0f})"
                )
        cca = report["canonical_correlations"]
        lines.append(
            f"held-out CCA: top-1 {cca['ours']['top1']:.3f}, mean of top-10 "
            f"{cca['ours']['top10_mean']:.3f} (shuffled pairs: "
            f"{cca['random_shuffled_pairs']['top1']:.3f}, "
            f"{cca['random_shuffled_pairs']['top10_mean']:.3f})"
        )
        for name, c in report["clustering"].items():
            lines.append(
                f"k-means ({name}): NMI {c['ours']['nmi']:.3f} ARI {c['ours']['ari']:.3f} "
                f"(random NMI {c['random']['nmi']:.3f} ARI {c['random']['ari']:.3f})"
            )
        return lines
