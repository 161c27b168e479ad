"""Adversarial modality invariance: a shared embedding that a modality discriminator cannot
read (DANN applied to modalities), and the post-hoc probe that checks it honestly.

Each modality's encoder is projected into one shared embedding space. A shared task head
classifies every modality's embedding; a shared `AdversarialDiscriminator` learns which
modality an embedding came from (on the true modality labels, never a reversed gradient),
while its adversarial gradient pushes the encoders towards embeddings it cannot tell apart:
either reversed (`reversal`, DANN) or towards a uniform prediction (`confusion`, Tzeng et al.).

The in-training discriminator is a biased judge of invariance: it is the one adversary the
encoders were trained against, and under `reversal` the encoders can beat it by swapping the
modalities (accuracy near 0, as informative as near 1). `modality_probe_accuracy` fits a
fresh discriminator on frozen training embeddings and tests it on held-out ones: that is the
invariance metric (chance: 1 / modalities).
"""

import keras
import numpy as np

from mmkeras.layers.gradient_reversal import AdversarialDiscriminator


EMBEDDING_NORMS = ("layer", "shared_layer", "batch", "l2", "none")


def class_key(modality):
    return f"{modality}_class"


def modality_key(modality):
    return f"{modality}_modality"


def confusion_key(modality):
    return f"{modality}_confusion"


def embedding_key(modality):
    return f"{modality}_embedding"


def build_modality_invariant_classifier(
    encoders,
    num_classes,
    embedding_dim=64,
    discriminator_units=(64,),
    reversal_scale=1.0,
    adversary="reversal",
    embedding_norm="layer",
    shared_projection=False,
    name="modality_invariant_classifier",
):
    """Builds the model; outputs per modality `m`:

    - `<m>_class`: class probabilities from the shared task head;
    - `<m>_modality`: the discriminator's probabilities over the modalities (sorted names),
      trained on the true modality (`targets`); under `reversal` the encoders get its
      gradient times `-reversal_scale`;
    - `<m>_confusion` (`adversary="confusion"` or `"inverted"`): the discriminator, weights held
      constant, on the embedding; train it with `domain_confusion_loss` (weight 1: the
      layer already scales its gradient by `reversal_scale`).

    The discriminator layer is named `modality_discriminator`; `GradientReversalSchedule`
    anneals its `scale`. The shared embeddings (layers named `<m>_embedding`) are read with
    `embedding_model`.

    Args:
        encoders: a dict of modality name to encoder model (`keras.Input(name=<m>)` ->
            `(batch, d_m)`).
        num_classes: classes of the task head.
        embedding_dim: size of the shared embedding.
        discriminator_units: hidden units of the discriminator MLP.
        reversal_scale: final lambda, the weight of the adversarial gradient (0: no
            adversarial signal, the baseline; the discriminator still learns).
        adversary: `reversal`, `confusion` or `inverted` (see `AdversarialDiscriminator`;
            `inverted` is trained by `AdversarialInvarianceTrainer`).
        embedding_norm: how the shared embedding is normalised, which is what the task
            head, the discriminator and the post-hoc probe all read:
            - `layer`: a LayerNormalization per modality, each with its own learned gain
              and bias (a per-modality offset the adversary has to undo);
            - `shared_layer`: one LayerNormalization (shared gain and bias) for all;
            - `batch`: a BatchNormalization per modality without gain or bias (modality-
              specific batch normalisation, as in AdaBN / DSBN for domain adaptation):
              every dimension of every modality's embedding is standardised over that
              modality's examples (batch statistics in training, moving ones at test), so
              per-dimension means and variances agree across modalities by construction
              and the adversary only has to remove what remains (covariances, higher
              moments). A structural, non-adversarial alignment of the first two moments;
            - `l2`: unit L2 norm (no learned parameters);
            - `none`: the projection itself.
        shared_projection: project every encoder's output with one shared Dense layer
            (the encoders' outputs must have the same size) instead of one per modality.
        name: the model's name.

    Train with `targets(labels, modalities, confusion=adversary == "confusion")` as `y`.
    """
    modalities = sorted(encoders)
    if len(modalities) < 2:
        raise ValueError(f"Modality invariance needs two or more modalities, got {modalities}.")
    if embedding_norm not in EMBEDDING_NORMS:
        raise ValueError(f"embedding_norm must be one of {EMBEDDING_NORMS}, got "
                         f"'{embedding_norm}'.")
    inputs, outputs = {}, {}
    task_head = keras.layers.Dense(num_classes, activation="softmax", name="task_head")
    discriminator = AdversarialDiscriminator(
        len(modalities), units=discriminator_units, adversary=adversary,
        scale=reversal_scale, name="modality_discriminator",
    )
    projection = (keras.layers.Dense(embedding_dim, name="shared_projection")
                  if shared_projection else None)
    shared_norm = (keras.layers.LayerNormalization(name="shared_layer_norm")
                   if embedding_norm == "shared_layer" else None)
    for m in modalities:
        encoder = encoders[m]
        x = keras.Input(shape=encoder.input_shape[1:], name=m)
        inputs[m] = x
        project = projection or keras.layers.Dense(embedding_dim, name=f"{m}_projection")
        z = project(encoder(x))
        if embedding_norm == "layer":  # the original layout (saved models keep loading)
            z = keras.layers.LayerNormalization(name=embedding_key(m))(z)
        else:
            if shared_norm is not None:
                z = shared_norm(z)
            elif embedding_norm == "batch":
                z = keras.layers.BatchNormalization(center=False, scale=False,
                                                    name=f"{m}_batch_norm")(z)
            elif embedding_norm == "l2":
                z = keras.layers.UnitNormalization(name=f"{m}_l2_norm")(z)
            z = keras.layers.Identity(name=embedding_key(m))(z)
        outputs[class_key(m)] = keras.layers.Identity(name=class_key(m))(task_head(z))
        judged = discriminator(z)
        if adversary != "reversal":  # confusion, inverted: (probabilities, confusion)
            judged, confused = judged
            outputs[confusion_key(m)] = keras.layers.Identity(name=confusion_key(m))(confused)
        outputs[modality_key(m)] = keras.layers.Identity(name=modality_key(m))(judged)
    return keras.Model(inputs, outputs, name=name)


def embedding_model(model):
    """A model sharing `model`'s weights that outputs `{"<m>_embedding": ...}` per modality."""
    names = [layer.name for layer in model.layers if layer.name.endswith("_embedding")]
    return keras.Model(
        model.inputs, {name: model.get_layer(name).output for name in names},
        name=f"{model.name}_embeddings",
    )


def targets(labels, modalities, confusion=False):
    """The `y` dict of a batch: class labels and modality indices for every output, and
    (with `confusion`) placeholder zeros for the `<m>_confusion` outputs, whose loss ignores
    them (works on numpy arrays and, inside `tf.data`, on tensors)."""
    from keras import ops

    y = {}
    for index, m in enumerate(sorted(modalities)):
        y[class_key(m)] = labels
        y[modality_key(m)] = ops.full_like(labels, index, dtype="int32")
        if confusion:
            y[confusion_key(m)] = ops.zeros_like(labels, dtype="int32")
    return y


def _pooled(embeddings):
    modalities = sorted(embeddings)
    x = np.concatenate([np.asarray(embeddings[m], np.float32) for m in modalities])
    which = np.concatenate([np.full(len(embeddings[m]), i) for i, m in enumerate(modalities)])
    return x, which


def modality_probe_accuracy(train_embeddings, test_embeddings, probe="linear",
                            hidden_units=(64,), epochs=30, batch_size=128, seed=0):
    """Post-hoc invariance metric: a fresh modality discriminator fitted on frozen embeddings.

    The probe learns which modality each training embedding came from and is scored on the
    test embeddings. Chance is `1 / modalities` (with balanced modalities, as in paired
    data); an accuracy far below chance is as separable as one far above it.

    Args:
        train_embeddings: `{modality: (n_m, d)}` embeddings to fit the probe on.
        test_embeddings: `{modality: (k_m, d)}` held-out embeddings to score it on.
        probe: `linear` (closed-form ridge classifier, `mmkeras.metrics.ridge_probe`) or
            `mlp` (a ReLU MLP trained with Adam on standardised features: catches
            non-linear separability too).
        hidden_units, epochs, batch_size, seed: the `mlp` probe's settings.

    Returns:
        The probe's test accuracy.
    """
    if sorted(train_embeddings) != sorted(test_embeddings):
        raise ValueError("train and test embeddings must have the same modalities, got "
                         f"{sorted(train_embeddings)} and {sorted(test_embeddings)}.")
    train_x, train_y = _pooled(train_embeddings)
    test_x, test_y = _pooled(test_embeddings)
    classes = len(train_embeddings)
    if probe == "linear":
        from mmkeras.metrics import ridge_probe

        return ridge_probe(train_x, train_y, test_x, test_y, num_classes=classes)["accuracy"]
    if probe != "mlp":
        raise ValueError(f"probe must be 'linear' or 'mlp', got '{probe}'.")
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    layers = [
        keras.layers.Dense(u, activation="relu",
                           kernel_initializer=keras.initializers.GlorotUniform(seed + i))
        for i, u in enumerate(hidden_units)
    ]
    layers.append(keras.layers.Dense(
        classes, kernel_initializer=keras.initializers.GlorotUniform(seed + len(layers))))
    mlp = keras.Sequential([keras.Input((train_x.shape[1],))] + layers, name="modality_probe")
    mlp.compile(optimizer=keras.optimizers.Adam(1e-3),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    order = np.random.default_rng(seed).permutation(len(train_x))
    mlp.fit((train_x[order] - mean) / std, train_y[order], epochs=epochs,
            batch_size=batch_size, shuffle=True, verbose=0)
    logits = mlp.predict((test_x - mean) / std, batch_size=1024, verbose=0)
    return float(np.mean(logits.argmax(1) == test_y))


def embedding_statistics(embeddings):
    """Per-modality statistics of `{modality: (n, d)}` embeddings, to see *what* a modality
    probe can read: the mean L2 norm, the fraction of (near-)zero coordinates (a ReLU
    embedding), the mean per-dimension standard deviation, and, for the first two modalities
    (sorted), the per-dimension mean difference in pooled standard deviations
    (`|d'|`: its mean and max over dimensions) and the ratio of their per-dimension standard
    deviations (mean over dimensions)."""
    modalities = sorted(embeddings)
    stats = {}
    for m in modalities:
        z = np.asarray(embeddings[m], np.float64)
        stats[m] = {
            "mean_norm": float(np.linalg.norm(z, axis=1).mean()),
            "zero_fraction": float(np.mean(np.abs(z) < 1e-6)),
            "mean_std": float(z.std(0).mean()),
        }
    a, b = (np.asarray(embeddings[m], np.float64) for m in modalities[:2])
    pooled = np.sqrt((a.var(0) + b.var(0)) / 2.0) + 1e-12
    d = np.abs(a.mean(0) - b.mean(0)) / pooled
    stats["mean_shift_dprime"] = {"mean": float(d.mean()), "max": float(d.max())}
    stats["std_ratio"] = float(np.mean((a.std(0) + 1e-12) / (b.std(0) + 1e-12)))
    return stats
