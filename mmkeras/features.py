"""The feature-key vocabulary shared by tf.data, `keras.Input(name=...)` and serving signatures.

A modality named `m` enters a model as the input `m` and its presence flag as `m_present`
(float32 of shape `(batch,)`: 1 present, 0 missing). Labels are `label`.
"""

import re

IMAGE = "image"
AUDIO = "audio"
TEXT = "text"
VIDEO = "video"
TABULAR = "tabular"
TIMESERIES = "timeseries"
LABEL = "label"
PRESENT_SUFFIX = "_present"

# Outputs of exported models.
PROBABILITIES = "probabilities"
CLASS_ID = "class_id"
EMBEDDING = "embedding"
# Encoders built with `return_sequence=True` also output their token sequence under this key.
TOKENS = "tokens"


def presence_key(modality):
    """The input name of a modality's presence flag."""
    return f"{modality}{PRESENT_SUFFIX}"


# Modality types. A feature (a model input and the manifest column feeding it) whose name is a
# type is of that type; other names are declared, e.g. `data.modality_types: {title: text,
# description: text, front: image, back: image}` (several columns of one type, each with its
# own encoder, `model.<type>_encoder`).
TYPES = (IMAGE, AUDIO, TEXT, VIDEO, TABULAR, TIMESERIES)
# Names a declared feature cannot take: the keys of the feature dict, the manifest and the
# exported signatures that are not features.
RESERVED_NAMES = (LABEL, "id", "split", "source_id", "tabular_categories", PROBABILITIES,
                  CLASS_ID, EMBEDDING, TOKENS, "examples", "fused", "value",
                  # layers of `mmkeras.models.fusion_classifier.build_classifier`
                  "fusion", "modality_dropout", "modality_imputation", "head_dropout",
                  "logits_softmax")
_NAME = re.compile(r"[a-z][a-z0-9_]*")


def modality_type(name, types=None):
    """The type of feature `name`: `types[name]` when declared, else the name itself when it
    is a type (`image`, ...). Raises `ValueError` (one line) for an undeclared other name."""
    if types and name in types:
        return types[name]
    if name in TYPES:
        return name
    raise ValueError(
        f"feature {name!r} has no modality type: it is none of {list(TYPES)} and "
        f"data.modality_types does not declare it (e.g. data.modality_types.{name}=text)")


def modality_types(names, types=None):
    """`{name: type}` of several features (see `modality_type`)."""
    return {name: modality_type(name, types) for name in names}


def of_type(names, kind, types=None):
    """The features of `names` whose type is `kind`, in order."""
    return [name for name in names if modality_type(name, types) == kind]


def check_modality_types(types):
    """Checks a `data.modality_types` map; returns an error line, or None when it is valid.

    Each key must be a lowercase identifier (an input name, and part of signature names)
    that is not a reserved name, each value a type; a name that is a type is that type, and
    tabular stays one modality (its columns are `data.tabular_numeric` / `_categorical`)."""
    for name, kind in (types or {}).items():
        key = f"data.modality_types.{name}"
        if kind not in TYPES:
            return f"'{key}': unknown modality type {kind!r}; use one of {list(TYPES)}"
        if name in TYPES and name != kind:
            return f"'{key}': {name!r} is itself a modality type; it cannot be {kind!r}"
        if kind == TABULAR and name != TABULAR:
            return (f"'{key}': the tabular modality is one feature named 'tabular' (its "
                    "columns are data.tabular_numeric and data.tabular_categorical)")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            return f"'{key}': a feature name must be a lowercase identifier ([a-z][a-z0-9_]*)"
        if name in RESERVED_NAMES or name.endswith((PRESENT_SUFFIX, "_bytes", "_encoder")):
            return (f"'{key}': {name!r} is reserved (or ends with _present, _bytes or "
                    "_encoder, which name other inputs and layers)")
    return None


def needs_preprocessing(names, types=None):
    """Whether features `names` include text or tabular ones (fitted `Preprocessing`)."""
    return any(modality_type(name, types) in (TEXT, TABULAR) for name in names)


def layer_names(names):
    """`{layer name: feature}` of the inputs, flags and encoders of features `names`.

    Raises:
        ValueError: one line naming both features when two of them would make one name (a
            feature `title_encoder` beside `title`), or a feature takes a reserved name.
    """
    taken = {}
    for name in names:
        if name in RESERVED_NAMES:
            raise ValueError(f"feature {name!r}: the name is reserved ({list(RESERVED_NAMES)})")
        for layer in (name, presence_key(name), f"{name}_encoder"):
            if layer in taken and taken[layer] != name:
                raise ValueError(
                    f"features {taken[layer]!r} and {name!r} both make a layer named {layer!r} "
                    "(inputs are <feature> and <feature>_present, encoders <feature>_encoder); "
                    "rename one")
            taken[layer] = name
    return taken
