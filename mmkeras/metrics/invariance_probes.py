"""How modality-invariant a trained `build_modality_invariant_classifier` network is.

`invariance_report` measures, on the test split: the task head's accuracy from each modality
alone, the network's own discriminator, fresh modality probes fitted after training on frozen
training embeddings (`linear`: closed-form ridge; `mlp`), the same MLP probe on the head's class
probabilities alone (what the modalities' unequal accuracy gives away), a digit probe on the
pooled embeddings and its transfer from one modality to another, and embedding statistics.
"""

import numpy as np

from mmkeras.metrics.linear_probe import ridge_probe
from mmkeras.models.modality_invariant_classifier import class_key
from mmkeras.models.modality_invariant_classifier import embedding_key
from mmkeras.models.modality_invariant_classifier import embedding_model
from mmkeras.models.modality_invariant_classifier import embedding_statistics
from mmkeras.models.modality_invariant_classifier import modality_key
from mmkeras.models.modality_invariant_classifier import modality_probe_accuracy


def collect_outputs(network, dataset, modalities):
    """`({output key: array}, labels)`: the class, modality and embedding outputs of every
    modality over a `(features, label)` dataset."""
    embedder = embedding_model(network)
    out = {k: [] for m in modalities for k in (class_key(m), modality_key(m), embedding_key(m))}
    labels = []
    for x, y in dataset:
        inputs = {m: x[m] for m in modalities}
        pred = {**network(inputs, training=False), **embedder(inputs, training=False)}
        for k in out:
            out[k].append(np.asarray(pred[k]))
        labels.append(np.asarray(y))
    return {k: np.concatenate(v) for k, v in out.items()}, np.concatenate(labels)


def invariance_report(network, train_ds, test_ds, modalities, num_classes, probe_mlp_epochs=30):
    """Task, discriminator and probe accuracies of `network` (probes fitted on `train_ds`,
    everything scored on `test_ds`); chance is `1 / len(modalities)` for the modality."""
    modalities = sorted(modalities)
    train, train_labels = collect_outputs(network, train_ds, modalities)
    test, test_labels = collect_outputs(network, test_ds, modalities)
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
