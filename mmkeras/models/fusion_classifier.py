"""Functional-API builders for multi-input classifiers (early, model-level and late fusion).

Every built model takes a dict of named inputs: one per modality (`image`, `audio`, ...) and one
presence flag per modality (`image_present`, ...: float32 `(batch,)`, 1 = present). Several
features may share a type (`data.modality_types`: `title` and `description` both text): each
has its own encoder, `<feature>_encoder`, built from `model.<type>_encoder`. Its output
is named `probabilities` (with `model.tasks`, a dict of that and one output per task head:
`mmkeras.models.multitask`). `model.init_from` loads encoders from trained model directories
(`mmkeras.models.transfer`).
"""

import keras

from mmkeras import features
from mmkeras.encoders import encoder_from_config
from mmkeras.layers.fusion import DECISION_FUSION_LAYERS
from mmkeras.layers.fusion import FUSION_LAYERS
from mmkeras.layers.modality_dropout import ModalityDropout
from mmkeras.layers.modality_imputation import ModalityImputation
from mmkeras.models import heads
from mmkeras.models import multitask
from mmkeras.models import transfer


def build_encoder(modality, model_config, data_config=None):
    """Builds the configured encoder of one modality (see `encoder_from_config`): image
    (`cnn`, `resnet`, `application`), audio, text, video, tabular, timeseries."""
    return encoder_from_config(modality, model_config, data_config)


# What a fusion layer that accepts sequences (`accepts_sequences`: cross-modal attention,
# transformer) reads, chosen by the builder-level key `token_source` in `model.fusion.args`:
# - "embedding" (default): each encoder's pooled embedding `(batch, embedding_dim)`, a
#   length-1 (or `vector_tokens`-long) sequence inside the layer;
# - "sequence": the encoders' own token sequences (`return_sequence=True`: audio = one
#   token per time step of the last CNN feature map, image = one token per feature-map cell,
#   text = one per word), each projected to `embedding_dim` by the encoder;
# - "feature_map": the last pooling layer's feature map reshaped to tokens, one per cell
#   (audio: frequency x time cells), the earlier behaviour.
TOKEN_SOURCES = ("embedding", "sequence", "feature_map")


def _token_source(fusion_config):
    source = fusion_config.args.get("token_source", "embedding")
    if source not in TOKEN_SOURCES:
        raise ValueError(
            f"model.fusion.args.token_source must be one of {TOKEN_SOURCES}, got {source!r}."
        )
    layer = FUSION_LAYERS.get(fusion_config.type)
    if "token_source" in fusion_config.args and not getattr(layer, "accepts_sequences", False):
        takers = sorted(k for k, v in FUSION_LAYERS.items() if getattr(v, "accepts_sequences", 0))
        raise ValueError(
            f"model.fusion.args.token_source applies to fusions that accept sequences "
            f"({takers}), not '{fusion_config.type}'."
        )
    return source


def _tokens(encoder, x, modality):
    """The encoder's last feature map as a token sequence `(batch, steps, channels)`.

    Used with `token_source: feature_map`: the tokens share the encoder's weights, so the
    embedding path and the token path train the same convolutions (but the encoder's
    embedding layer is then unused).
    """
    pools = [layer for layer in encoder.layers if layer.name.startswith("pool")]
    if not pools:
        raise ValueError(f"The {modality} encoder exposes no feature map for token fusion.")
    feature_map = keras.Model(encoder.input, pools[-1].output, name=f"{modality}_feature_map")
    features_ = feature_map(x)
    channels = features_.shape[-1]
    return keras.layers.Reshape((-1, channels), name=f"{modality}_tokens")(features_)


def _missing_modalities(model_config, embeddings, presence):
    """Applies `model.missing`: modality dropout on the flags, then optional imputation.

    Returns the embeddings and the presence flags the fusion layer should see (None after
    imputation: the imputed embeddings then count as present).
    """
    missing_config = model_config.missing
    unknown = sorted(set(missing_config.dropout) - set(presence))
    if unknown:
        raise ValueError(
            f"model.missing.dropout names {unknown}, which are not among model.modalities "
            f"{sorted(presence)}."
        )
    if any(rate for rate in missing_config.dropout.values()):
        presence = ModalityDropout(
            missing_config.dropout, allow_all_missing=missing_config.allow_all_missing,
            name="modality_dropout",
        )(presence)
    if missing_config.imputation == "none":
        return embeddings, presence
    if missing_config.imputation not in ModalityImputation.methods:
        raise ValueError(
            f"Unknown model.missing.imputation '{missing_config.imputation}'. Known: "
            f"{['none', *ModalityImputation.methods]}."
        )
    fusion = FUSION_LAYERS.get(model_config.fusion.type)
    takes_tokens = fusion is not None and (
        fusion.input_kind == "sequence"
        or (getattr(fusion, "accepts_sequences", False)
            and _token_source(model_config.fusion) != "embedding")
    )
    if len(presence) > 1 and takes_tokens:
        raise ValueError(
            f"model.missing.imputation imputes embeddings; the sequence fusion "
            f"'{model_config.fusion.type}' takes token sequences and masks missing modalities "
            "itself: use model.missing.imputation=none with it."
        )
    imputed = ModalityImputation(
        missing_config.imputation, momentum=missing_config.mean_momentum,
        name="modality_imputation",
    )(embeddings, presence=presence)
    return imputed, None


def _head(x, model_config, prefix=""):
    for i, units in enumerate(model_config.head_units):
        x = keras.layers.Dense(units, activation="relu", name=f"{prefix}head_dense{i}")(x)
    x = keras.layers.Dropout(model_config.head_dropout, name=f"{prefix}head_dropout")(x)
    return heads.output_layer(model_config, name=f"{prefix}{heads.OUTPUT_DENSE}")(x)


def build_classifier(model_config, data_config=None, target_stats=None):
    """Builds the classifier described by `model_config` (an `mmkeras.configs.ModelConfig`).

    - one modality: a unimodal baseline (encoder + head);
    - `fusion.type` in `FUSION_LAYERS`: encoders -> fusion layer -> head;
    - `fusion.type == "late"`: encoder + head per modality, predictions combined by
      `LateFusion` (`fusion.args.combiner`).

    `missing` (an `mmkeras.configs.MissingModalityConfig`) adds `ModalityDropout` on the
    presence flags (training only) and/or `ModalityImputation` of missing embeddings before
    the fusion; its defaults add neither.

    `target` picks the head (`mmkeras.models.heads`): softmax (`multiclass`, `binary`),
    one sigmoid per label (`multilabel`), or linear (`regression`), un-standardised with
    `target_stats` `(mean, std)` of the training targets (default `(0, 1)`) so the model
    outputs real units.

    `tasks` adds auxiliary heads on the encoders' embeddings or the fused representation
    (`mmkeras.models.multitask`); `init_from` loads encoder weights from trained model
    directories and freezes them if asked (`mmkeras.models.transfer`), after the model is
    built, so every other weight is initialised as without it.

    Returns:
        A functional `keras.Model` with inputs `{m, m_present for m in modalities}` and one
        output, the class probabilities, named `probabilities` (a regression model's is the
        value, named `value`); with `tasks`, a dict output
        `{"probabilities": ..., <task name>: ...}` (`multitask.main_model` gives the
        single-output view).
    """
    modalities = sorted(model_config.modalities)
    if not modalities:
        raise ValueError("model.modalities is empty.")
    features.layer_names(modalities)  # one clear line if two features would share a name
    fusion_type = model_config.fusion.type
    args = dict(model_config.fusion.args)
    token_source = "embedding"
    if len(modalities) > 1 and fusion_type in FUSION_LAYERS:
        token_source = _token_source(model_config.fusion)
        args.pop("token_source", None)
    inputs, embeddings, presence, encoders, sequences = {}, {}, {}, {}, {}
    for m in modalities:
        if token_source == "sequence":
            encoder = encoder_from_config(m, model_config, data_config, return_sequence=True)
        else:
            encoder = build_encoder(m, model_config, data_config)
        encoders[m] = encoder
        x = keras.Input(shape=encoder.input_shape[1:], dtype=encoder.inputs[0].dtype, name=m)
        flag = keras.Input(shape=(), name=features.presence_key(m))
        inputs[m] = x
        inputs[features.presence_key(m)] = flag
        encoded = encoder(x)
        if token_source == "sequence":
            embeddings[m], sequences[m] = encoded[features.EMBEDDING], encoded[features.TOKENS]
        else:
            embeddings[m] = encoded
        presence[m] = flag
    encoder_embeddings = dict(embeddings)
    embeddings, presence = _missing_modalities(model_config, embeddings, presence)
    fused = None  # the representation the main head reads (none for decision fusion)

    if len(modalities) == 1:
        m = modalities[0]
        # A unimodal model still honours its presence flag: a missing input gives the
        # embedding of zeros (the same imputation the fusion layers use).
        fused = FUSION_LAYERS["concat"](name="fusion")({m: embeddings[m]}, presence=presence)
        probs = _head(fused, model_config)
    elif fusion_type in DECISION_FUSION_LAYERS:
        per_modality = {m: _head(embeddings[m], model_config, prefix=f"{m}_") for m in modalities}
        # Probabilities are combined in float32 under mixed precision too (like the heads).
        probs = DECISION_FUSION_LAYERS[fusion_type](name="fusion", dtype="float32", **args)(
            per_modality, presence=presence
        )
    elif fusion_type in FUSION_LAYERS:
        layer = FUSION_LAYERS[fusion_type](name="fusion", **args)
        if token_source == "sequence":
            fusion_inputs = sequences
        elif layer.input_kind == "sequence" or token_source == "feature_map":
            fusion_inputs = {
                m: _tokens(encoders[m], inputs[m], m) for m in modalities
            }
        else:
            fusion_inputs = embeddings
        fused = layer(fusion_inputs, presence=presence)
        if isinstance(fused, dict):  # e.g. AttentionFusion(return_weights=True)
            fused = fused["fused"]
        probs = _head(fused, model_config)
    else:
        known = sorted(FUSION_LAYERS) + sorted(DECISION_FUSION_LAYERS)
        raise ValueError(f"Unknown fusion type '{fusion_type}'. Known: {known}.")
    if heads.target_of(model_config) == "regression":
        mean, std = target_stats if target_stats is not None else (0.0, 1.0)
        outputs = heads.unstandardize(probs, mean, std)
    else:
        outputs = keras.layers.Identity(name=features.PROBABILITIES, dtype="float32")(probs)
    if model_config.tasks:
        outputs = {
            features.PROBABILITIES: outputs,
            **multitask.task_heads(model_config, encoder_embeddings, fused),
        }
    model = keras.Model(inputs, outputs, name=model_config.name)
    if model_config.init_from:
        transfer.load_encoders(model_config, encoders)
    return model
