"""What a client has, per feature name: the raw inputs of `serve_raw` and `serve_examples`.

A model takes tensors (`serving_default`): decoded pixels and waveforms, token ids, one
normalised tabular vector. A client has files, strings and table cells. `raw_features` lists,
for each of the model's inputs (keyed by its feature name), what the client sends instead,
and `to_model_inputs` turns those into the model's tensors inside the graph with the model
directory's fitted `Preprocessing` (the same functions tf.data ran at training time):

| kind          | `serve_raw` input         | `serve_examples` feature   | inside the graph                         |
|---------------|---------------------------|----------------------------|------------------------------------------|
| `image`       | `<m>_bytes` string [B]    | `<m>` bytes                | PNG/JPEG decode, / 255 (`example_schema`)|
| `audio`       | `<m>_bytes` string [B]    | `<m>` bytes                | 16-bit WAV decode, crop / pad            |
| `text`        | `<m>` string [B]          | `<m>` bytes (UTF-8)        | the saved tokenizer: `TextVectorization` |
|               |                           |                            | of `vocab.txt`, or the keras_hub preset's|
| `numeric`     | `<column>` f32 [B]        | `<column>` float           | NaN (or an absent feature) = missing:    |
|               |                           |                            | imputed as `Preprocessing.tabular_vector`|
|               |                           |                            | does (training mean), then (x-mean)/std  |
| `categorical` | `<column>` string [B]     | `<column>` bytes           | train-split vocabulary lookup (unknown   |
|               |                           |                            | and absent -> id 0), as in tf.data       |
| `tensor`      | `<m>` f32 [B, ...]        | `<m>` float (flattened)    | as given (video, time series: no encoded |
|               |                           |                            | form yet)                                |
| presence      | `<m>_present` f32 [B]     | `<m>_present` float        | 0: the modality is missing; its inputs   |
|               |                           | (absent: 1 when the        | are ignored (zeros / "" as the pipeline  |
|               |                           | modality's features are)   | makes for a masked row)                  |

Tabular columns enter under their own column names (`tabular.json`'s `numeric` and
`categorical` lists, in that order), with one `tabular_present` flag for the modality.

Everything is keyed by feature name: `kinds` maps each model input to its modality type
(default: the name is the type, `text` -> text; the model's `data.modality_types` give the
others), and a text feature is tokenized by `text_ids(preprocessing, name, strings)`, the one
place that picks the tokenizer of a name. A model with several text columns (`title`,
`description`) takes one string input per column, each tokenized by its own vocabulary; two
image columns (`front`, `back`) take `front_bytes` and `back_bytes`.

`describe` is the JSON written beside the SavedModel (`assets.extra/raw_inputs.json`): the
server reads it to accept NaN / null for the numeric columns and to let a request leave a
whole modality (all its columns) out.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from mmkeras import features
from mmkeras.data import example_schema

RAW_INPUTS_FILE = "raw_inputs.json"  # in the SavedModel's assets.extra/
BYTES_KINDS = (features.IMAGE, features.AUDIO)
NUMERIC = "numeric"
CATEGORICAL = "categorical"
TEXT = features.TEXT
TENSOR = "tensor"
PRESENCE = "presence"


@dataclasses.dataclass(frozen=True)
class RawFeature:
    """One raw input of `serve_raw`.

    Attributes:
        name: the input name in `serve_raw` (`image_bytes`, `text`, `price`, `tabular_present`).
        modality: the model input it feeds (`image`, `text`, `tabular`, ...).
        kind: `image`, `audio`, `text`, `numeric`, `categorical`, `tensor` or `presence`.
        dtype: `tf.string` or `tf.float32`.
        shape: per-example shape (`()` for everything but `tensor`).
        example_key: its feature name in a `tf.train.Example` (`image` for `image_bytes`).
    """

    name: str
    modality: str
    kind: str
    dtype: tf.DType
    shape: tuple = ()
    example_key: str = None

    def spec(self):
        return tf.TensorSpec([None, *self.shape], self.dtype, name=self.name)


def default_kinds(modalities):
    """`{feature name: modality type}` when the names are the types (every built-in dataset)."""
    return {m: m for m in modalities}


def text_ids(preprocessing, name, strings):
    """Strings `[B]` of text feature `name` -> the model's token ids (that feature's tokenizer
    saved in the model directory: `vocab.txt` for `text`, `vocab_<name>.txt` for another text
    feature, or the keras_hub preset's, shared by every text feature)."""
    return preprocessing.text_ids(strings, name)


def _has_tokenizer(preprocessing):
    return preprocessing is not None and bool(preprocessing.tokenizers())


def raw_features(specs, preprocessing=None, kinds=None):
    """The raw inputs of a model, in order: each modality's data inputs, then its flag.

    Args:
        specs: `serving_module.input_specs(model)`.
        preprocessing: the model directory's fitted `Preprocessing` (needed for text and
            tabular; without it they stay tensors: token ids, the normalised vector).
        kinds: `{feature name: modality type}` (default: `default_kinds`).

    Raises:
        ValueError: naming the column, when a tabular column's name collides with another
            raw input.
    """
    modalities = sorted(n for n in specs if not n.endswith(features.PRESENT_SUFFIX))
    kinds = dict(default_kinds(modalities), **(kinds or {}))
    result = []
    for m in modalities:
        kind = kinds[m]
        if kind in BYTES_KINDS:
            key = example_schema.bytes_key(m)
            result.append(RawFeature(key, m, kind, tf.string, (), m))
        elif kind == features.TEXT and _has_tokenizer(preprocessing):
            result.append(RawFeature(m, m, TEXT, tf.string, (), m))
        elif kind == features.TABULAR and preprocessing is not None and preprocessing.tabular:
            for column in preprocessing.tabular["numeric"]:
                result.append(RawFeature(column, m, NUMERIC, tf.float32, (), column))
            for column in preprocessing.tabular["categorical"]:
                result.append(RawFeature(column, m, CATEGORICAL, tf.string, (), column))
        else:
            spec = specs[m]
            result.append(RawFeature(m, m, TENSOR, spec.dtype, tuple(spec.shape[1:]), m))
        flag = features.presence_key(m)
        if flag in specs:
            result.append(RawFeature(flag, m, PRESENCE, tf.float32, (), flag))
    names = [f.name for f in result]
    for f in result:
        if names.count(f.name) > 1:
            raise ValueError(f"Raw input '{f.name}' ({f.kind} of '{f.modality}') collides with "
                             "another input of the same name; rename the column.")
    return result


def input_specs(raw):
    """`{name: TensorSpec}` of the `serve_raw` signature."""
    return {f.name: f.spec() for f in raw}


def _flag(inputs, modality, batch):
    key = features.presence_key(modality)
    if key in inputs:
        return tf.cast(inputs[key], tf.float32)
    return tf.ones([batch], tf.float32)


def to_model_inputs(inputs, raw, specs, preprocessing=None, rate=None):
    """`serve_raw` inputs -> `serving_default` inputs (tf ops, inside the signature).

    `rate`: `{"audio_sample_rate": Hz, "wav_rate": "resample" | "reject"}` for WAV bytes
    (`mmkeras.data.example_schema.decode_batch`).

    A modality whose flag is 0 gets what the pipeline gives a masked row: zero pixels /
    samples, `""` text, numbers 0 and categories `""` (then normalised, as in tf.data).
    """
    first = inputs[raw[0].name]
    batch = tf.shape(first)[0]
    by_modality = {}
    for f in raw:
        by_modality.setdefault(f.modality, []).append(f)
    x = {}
    for m, group in by_modality.items():
        present = _flag(inputs, m, batch)
        on = present > 0
        kind = group[0].kind
        if kind in BYTES_KINDS:
            shape = tuple(int(d) for d in specs[m].shape[1:])
            decoded = example_schema.decode_batch(
                {m: inputs[group[0].name]}, {m: present}, {m: shape}, **(rate or {}),
                kinds={m: kind})
            x[m] = decoded[m]
        elif kind == TEXT:
            x[m] = text_ids(preprocessing, m, tf.where(on, inputs[m], ""))
        elif kind in (NUMERIC, CATEGORICAL):
            numeric = [f for f in group if f.kind == NUMERIC]
            categorical = [f for f in group if f.kind == CATEGORICAL]
            numbers = _stack([inputs[f.name] for f in numeric], tf.float32, batch)
            categories = _stack([inputs[f.name] for f in categorical], tf.string, batch)
            numbers = tf.where(on[:, None], numbers, tf.zeros_like(numbers))
            categories = tf.where(on[:, None], categories, tf.fill(tf.shape(categories), ""))
            x[m] = preprocessing.tabular_vector(numbers, categories)
        else:
            x[m] = inputs[m]
        if features.presence_key(m) in specs:
            x[features.presence_key(m)] = present
    return x


def _stack(columns, dtype, batch):
    if not columns:
        return tf.zeros([batch, 0], dtype) if dtype != tf.string else tf.fill([batch, 0], "")
    return tf.stack([tf.cast(c, dtype) if dtype != tf.string else c for c in columns], axis=-1)


# serve_examples: the same raw features in a tf.train.Example.

_UNSET = -1.0


def example_spec(raw):
    """The `tf.io.parse_example` spec of the raw features (absent features read as missing)."""
    spec = {}
    for f in raw:
        if f.kind == PRESENCE:
            spec[f.example_key] = tf.io.FixedLenFeature([], tf.float32, default_value=_UNSET)
        elif f.kind == NUMERIC:
            spec[f.example_key] = tf.io.FixedLenFeature([], tf.float32, default_value=np.nan)
        elif f.kind == TENSOR:
            spec[f.example_key] = tf.io.FixedLenFeature(
                list(f.shape), f.dtype, default_value=np.zeros(f.shape, f.dtype.as_numpy_dtype))
        else:
            spec[f.example_key] = tf.io.FixedLenFeature([], tf.string, default_value="")
    return spec


def parse_examples(serialized, raw):
    """Serialized Examples `[B]` -> `serve_raw` inputs. A flag left out is 1 when the
    modality's features say so: non-empty bytes or text, any number or category given."""
    parsed = tf.io.parse_example(serialized, example_spec(raw))
    inputs = {}
    given = {}
    for f in raw:
        if f.kind == PRESENCE:
            continue
        value = parsed[f.example_key]
        inputs[f.name] = value
        if f.kind in (*BYTES_KINDS, TEXT, CATEGORICAL):
            here = tf.strings.length(value) > 0
        elif f.kind == NUMERIC:
            here = tf.logical_not(tf.math.is_nan(value))
        else:
            here = tf.ones(tf.shape(value)[:1], tf.bool)
        given[f.modality] = here if f.modality not in given else given[f.modality] | here
    for f in raw:
        if f.kind == PRESENCE:
            flag = parsed[f.example_key]
            inferred = tf.cast(given[f.modality], tf.float32)
            inputs[f.name] = tf.where(flag < 0, inferred, flag)
    return inputs


def to_example(values, raw):
    """A `tf.train.Example` of one row's raw values (`{raw input name: value}`); names left
    out are left out of the Example (missing). Bytes/str -> bytes_list, numbers -> float_list."""
    from tensorflow.core.example import example_pb2
    from tensorflow.core.example import feature_pb2

    feature = {}
    by_name = {f.name: f for f in raw}
    for name, value in values.items():
        if name not in by_name:
            raise ValueError(f"'{name}' is not a raw input; the model takes {sorted(by_name)}.")
        f = by_name[name]
        if f.dtype == tf.string:
            value = value.encode("utf-8") if isinstance(value, str) else bytes(value)
            feature[f.example_key] = feature_pb2.Feature(
                bytes_list=feature_pb2.BytesList(value=[value]))
        else:
            flat = np.asarray(value, np.float32).reshape(-1).tolist()
            feature[f.example_key] = feature_pb2.Feature(
                float_list=feature_pb2.FloatList(value=flat))
    return example_pb2.Example(features=feature_pb2.Features(feature=feature))


def describe(raw):
    """JSON-ready description of the raw inputs (`assets.extra/raw_inputs.json`).

    `nan_inputs`: inputs where NaN (JSON `null` over REST) means missing; `groups`:
    `{flag: [inputs]}` of each modality, which a request may leave out together.
    """
    groups = {}
    for f in raw:
        if f.kind != PRESENCE:
            groups.setdefault(features.presence_key(f.modality), []).append(f.name)
    return {
        "inputs": [{"name": f.name, "modality": f.modality, "kind": f.kind,
                    "dtype": f.dtype.name, "shape": list(f.shape),
                    "example_feature": f.example_key} for f in raw],
        "nan_inputs": [f.name for f in raw if f.kind == NUMERIC],
        "groups": {flag: names for flag, names in groups.items()
                   if flag in {f.name for f in raw}},
    }
