"""TensorBoard monitoring of a multimodal model during training (`trainer.monitor_every: N`).

Every N epochs `MultimodalMonitor` evaluates a fixed validation sample and writes, under
`DIR/logs/monitor/` (one TensorBoard run):

    robustness/missing_<m>/rate_<pct>   scalar: accuracy with modality m missing in pct% of
                                        the sample (pct in 000, 025, 050, 075, 100)
    robustness/curve                    image: those curves
    robustness/noise_<m>_<kind>/severity_<pct>
                                        scalar: accuracy with modality m corrupted by `kind`
                                        (`mmkeras.data.noise.CORRUPTIONS`) at severity pct%
                                        (every kind of `noise_kinds`, default
                                        `mmkeras.explain.robustness.DEFAULT_NOISE`)
    robustness/noise_curve              image: those curves
    contribution/<m>                    scalar: accuracy drop when m is removed from every example
    contribution/all_present            scalar: accuracy with every modality present
    fusion/weights                      image, when the fusion layer exposes modality weights:
                                        per-example attention weights (`AttentionFusion`, ...) or
                                        the learned weights (`WeightedSumFusion`)
    fusion/mean_weight_<m>              scalar: the mean weight of modality m (same condition)

and, for the Projector, the fused (shared) embedding of the sample: `fused_epoch_<e>.tsv`
(one embedding per logged epoch), `metadata.tsv` (label, prediction, presence flags),
`sprite.png` (the image modality) and `projector_config.pbtxt`. Fusion layers that expose no
weights are skipped with one message.
"""

import os
import pathlib

from PIL import Image
import keras
import numpy as np
from tensorboard.plugins import projector
import tensorflow as tf

from mmkeras import features
from mmkeras.explain import robustness as rob
from mmkeras.explain.fusion import fusion_outputs
from training.evaluate import curve_figure
from training.evaluate import figure_png

MONITOR_RUN = "monitor"


def tag_missing(modality, rate):
    return f"robustness/missing_{modality}/rate_{int(round(100 * rate)):03d}"


def tag_noise(modality, kind, severity):
    return f"robustness/noise_{modality}_{kind}/severity_{int(round(100 * severity)):03d}"


def _png_summary(name, png, step):
    image = tf.io.decode_png(png, channels=4)[None]
    tf.summary.image(name, image, step=step)


def _weights_figure(weights, modalities, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3.4))
    if weights.ndim == 1:
        ax.bar(modalities, weights)
        ax.set_ylabel("weight")
    else:
        image = ax.imshow(weights.T, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0,
                          interpolation="nearest")
        ax.set_yticks(range(len(modalities)))
        ax.set_yticklabels(modalities)
        ax.set_xlabel("validation example")
        fig.colorbar(image, ax=ax)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def sprite_image(images):
    """A square grid of `(n, h, w[, 1 or 3])` images in [0, 1] as uint8 `(rows*h, cols*w[, 3])`."""
    images = np.asarray(images, dtype="float32")
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    n, h, w = images.shape[:3]
    side = int(np.ceil(np.sqrt(n)))
    grid = np.zeros((side * h, side * w, *images.shape[3:]), dtype="float32")
    for i, image in enumerate(images):
        r, c = divmod(i, side)
        grid[r * h : (r + 1) * h, c * w : (c + 1) * w] = image
    return (np.clip(grid, 0.0, 1.0) * 255).astype("uint8")


class MultimodalMonitor(keras.callbacks.Callback):
    """Logs robustness, modality contributions, fusion weights and the fused embedding.

    Args:
        log_dir: the TensorBoard log directory of the run (`DIR/logs`); this callback writes
            into `log_dir/monitor`.
        x: a feature dict of numpy arrays (the validation sample), `y` its labels.
        every: log every `every` epochs (and after the first).
        levels: missing fractions of the robustness curve (must contain 0 and 1).
        fusion_layer: the name of the fusion layer.
        sprite_modality: the image feature drawn in the Projector sprite (None: no sprite).
        seed: seed of the random choice of missing examples and of the noise.
        noise_kinds: `{modality: [kind, ...]}` of the noise curves; None = `DEFAULT_NOISE`
            for the sample's modalities; `{}` logs none.
    """

    def __init__(self, log_dir, x, y, every=1, levels=rob.DEFAULT_LEVELS, fusion_layer="fusion",
                 sprite_modality=features.IMAGE, seed=0, noise_kinds=None):
        super().__init__()
        levels = [float(level) for level in levels]
        if levels[0] != 0.0 or levels[-1] != 1.0:
            raise ValueError(f"Monitor levels must run from 0 to 1, got {levels}.")
        if every < 1:
            raise ValueError(f"`every` must be >= 1, got {every}.")
        self.log_dir = pathlib.Path(log_dir) / MONITOR_RUN
        self.x = x
        self.y = np.asarray(y)
        self.every = every
        self.levels = levels
        self.fusion_layer = fusion_layer
        self.sprite_modality = sprite_modality
        self.seed = seed
        modalities = rob.modalities_of(x)
        if noise_kinds is None:
            noise_kinds = {m: rob.DEFAULT_NOISE[m] for m in modalities if m in rob.DEFAULT_NOISE}
        unknown = sorted(set(noise_kinds) - set(modalities))
        if unknown:
            raise ValueError(f"noise_kinds names modalities {unknown} that the sample lacks.")
        self.noise_kinds = {m: tuple(kinds) for m, kinds in noise_kinds.items()}
        self._writer = None
        self._said_no_weights = False

    @property
    def writer(self):
        if self._writer is None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            self._writer = tf.summary.create_file_writer(str(self.log_dir))
        return self._writer

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0 or (epoch + 1) % self.every == 0:
            self.log(epoch)

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.flush()

    def log(self, epoch):
        """Computes and writes everything for `epoch` (also callable outside `fit`)."""
        model = self.model
        modalities = rob.modalities_of(self.x)
        clean = rob.accuracy(model, self.x, self.y)
        curves = {
            m: [clean] + rob.missing_curve(model, self.x, self.y, m, self.levels[1:], self.seed)
            for m in modalities
        }
        noise_curves = {
            f"{m}/{kind}": [clean] + rob.noise_curve(
                model, self.x, self.y, m, kind, self.levels[1:], self.seed)
            for m, kinds in self.noise_kinds.items() for kind in kinds
        }
        captured = fusion_outputs(model, self.x, self.fusion_layer)
        with self.writer.as_default():
            for m, accuracies in curves.items():
                for rate, acc in zip(self.levels, accuracies):
                    tf.summary.scalar(tag_missing(m, rate), acc, step=epoch)
                tf.summary.scalar(f"contribution/{m}", clean - accuracies[-1], step=epoch)
            tf.summary.scalar("contribution/all_present", clean, step=epoch)
            _png_summary("robustness/curve", figure_png(curve_figure(
                curves, self.levels, f"epoch {epoch + 1}: modality missing",
                "fraction of examples missing")), epoch)
            for name, accuracies in noise_curves.items():
                m, kind = name.split("/")
                for severity, acc in zip(self.levels, accuracies):
                    tf.summary.scalar(tag_noise(m, kind, severity), acc, step=epoch)
            if noise_curves:
                _png_summary("robustness/noise_curve", figure_png(curve_figure(
                    noise_curves, self.levels, f"epoch {epoch + 1}: modality corrupted",
                    "corruption severity")), epoch)
            self._log_fusion_weights(captured, epoch)
        self.writer.flush()
        if captured["embedding"] is not None:
            self._write_projector(captured, epoch)

    def _log_fusion_weights(self, captured, epoch):
        names = captured["modalities"]
        if captured["weights"] is not None:
            weights = captured["weights"]
            mean = weights.mean(axis=0)
            title = f"epoch {epoch + 1}: per-example fusion weights"
            shown = weights[:128]
        elif captured["static_weights"] is not None:
            mean = np.asarray([captured["static_weights"][m] for m in names])
            title = f"epoch {epoch + 1}: learned fusion weights"
            shown = mean
        else:
            if not self._said_no_weights:
                print(f"[monitor] fusion layer '{self.fusion_layer}' exposes no modality "
                      "weights: fusion/weights is not logged")
                self._said_no_weights = True
            return
        for m, w in zip(names, mean):
            tf.summary.scalar(f"fusion/mean_weight_{m}", float(w), step=epoch)
        _png_summary("fusion/weights", figure_png(_weights_figure(shown, names, title)), epoch)

    def _write_projector(self, captured, epoch):
        out = self.log_dir
        embedding = np.asarray(captured["embedding"], dtype="float32")
        embedding = embedding.reshape(len(embedding), -1)
        tensor_file = f"fused_epoch_{epoch + 1:03d}.tsv"
        np.savetxt(out / tensor_file, embedding, delimiter="\t", fmt="%.6g")
        predicted = captured["probabilities"].argmax(-1)
        modalities = rob.modalities_of(self.x)
        flags = [features.presence_key(m) for m in modalities]
        rows = ["\t".join(["label", "predicted", *flags])]
        for i in range(len(embedding)):
            rows.append("\t".join([str(int(self.y[i])), str(int(predicted[i])),
                                   *(str(int(self.x[f][i] > 0)) for f in flags)]))
        (out / "metadata.tsv").write_text("\n".join(rows) + "\n")
        sprite = None
        if self.sprite_modality in self.x:
            images = np.asarray(self.x[self.sprite_modality])
            Image.fromarray(sprite_image(images)).save(out / "sprite.png")
            sprite = images.shape[1:3]
        config = projector.ProjectorConfig()
        for tsv in sorted(out.glob("fused_epoch_*.tsv")):
            entry = config.embeddings.add()
            entry.tensor_name = tsv.stem
            entry.tensor_path = tsv.name
            entry.metadata_path = "metadata.tsv"
            if sprite is not None:
                entry.sprite.image_path = "sprite.png"
                entry.sprite.single_image_dim.extend([int(sprite[1]), int(sprite[0])])
        projector.visualize_embeddings(str(out), config)


def monitor_sample(dataset, max_examples):
    """The first `max_examples` examples of a `(features, label)` dataset as numpy arrays."""
    xs, ys, count = [], [], 0
    for x, y in dataset:
        xs.append({k: np.asarray(v) for k, v in x.items()})
        ys.append(np.asarray(y))
        count += len(ys[-1])
        if count >= max_examples:
            break
    x = {k: np.concatenate([b[k] for b in xs])[:max_examples] for k in xs[0]}
    return x, np.concatenate(ys)[:max_examples]


def make_monitor(config, model_dir, val_dataset):
    """The trainer's monitor from `trainer.monitor_every` / `monitor_examples` (None if off)."""
    every = config.trainer.monitor_every
    if not every:
        return None
    x, y = monitor_sample(val_dataset, config.trainer.monitor_examples)
    # The sprite draws the first image feature, whatever its name (own data: the column's).
    images = features.of_type(config.model.modalities, features.IMAGE, config.data.modality_types)
    return MultimodalMonitor(os.path.join(str(model_dir), "logs"), x, y, every=every,
                             sprite_modality=images[0] if images else None,
                             seed=config.trainer.seed)
