"""What an exported model computes: named signatures around a trained Keras model.

One `tf.function` per input form, each exported as a named signature (as Model Garden's
serving modules do); decoding and normalisation happen inside the signature, so clients send
what they have. Every signature returns the same named outputs:

| outputs (every signature)  | dtype, shape      | when                                            |
|----------------------------|-------------------|-------------------------------------------------|
| `probabilities`            | f32 [B, classes]  | always: the main head                           |
| `class_id`                 | i64 [B]           | always: argmax of `probabilities`               |
| `<task>_probabilities`     | f32 [B, classes]  | a multi-task model (dict outputs, see           |
| `<task>_class_id`          | i64 [B]           | `mmkeras.models.multitask`): one pair per task  |

A multi-label model (`model.target: multilabel`) returns `probabilities` (one sigmoid per
label) and `multi_hot` i64 [B, labels] (1 where the probability is at least 0.5) instead of
`class_id`; a regression model returns `value` f32 [B] (real units) alone
(`head_outputs`; the kind is read from the model, `mmkeras.models.heads.target_of_model`).

A multi-task model's output dict holds the main head under `probabilities` and each auxiliary
head under its task's name (`audio_digit`, `parity`, ...); `head_names` lists them.

| signature        | inputs (batch dimension open)                  | runs in                   |
|------------------|------------------------------------------------|---------------------------|
| `serving_default`| what the model takes: `image` f32 [B,H,W,C] in | SavedModel, TFLite, ONNX  |
|                  | [0,1], `audio` f32 [B,N], `text` i32 [B,L]     | (the tensor signature)    |
|                  | token ids, `tabular` f32 [B,n+k] (normalised   |                           |
|                  | numbers, then category ids), `<m>_present` f32 |                           |
| `serve_raw`      | what a client has, per feature name            | SavedModel                |
|                  | (`serving/raw_inputs.py`): `image_bytes` /     | (TF Serving,              |
|                  | `audio_bytes` string [B] (PNG/JPEG, 16-bit     | `serving.server`)         |
|                  | WAV), `text` string [B] (tokenized inside by   |                           |
|                  | the saved tokenizer), one input per table      |                           |
|                  | column: numbers f32 [B] (NaN = missing,        |                           |
|                  | imputed as in tf.data) and categories string   |                           |
|                  | [B] (train vocabulary lookup inside), and      |                           |
|                  | `<m>_present` f32 [B] (0: inputs ignored)      |                           |
| `serve_examples` | `examples` string [B]: serialized              | SavedModel                |
|                  | `tf.train.Example`s with the same raw features |                           |
|                  | (`image`/`audio` bytes, `text` bytes, columns  |                           |
|                  | as float / bytes; absent = missing, an absent  |                           |
|                  | flag inferred from the features given)         |                           |
| `serve_text`     | `serving_default`'s inputs with `text` a string| SavedModel (text models)  |
|                  | [B] (`serving/text_signature.py`)              |                           |
| `serve_<m..>_only`| the data inputs of those modalities only      | SavedModel, TFLite        |
|                  | (`serve_image_only`: `image`); every other     |                           |
|                  | modality is set missing inside the graph:      |                           |
|                  | zeros (`""` for strings) and `<m>_present` = 0 |                           |

A TFLite client has no string ops: it runs the documented client step
`serving.client.tflite_inputs(DIR/export/tflite/assets, raw)` (numpy: the same tokenizer,
imputation, normalisation and lookups from the exported vocabulary and `tabular.json`), then
TFLite's `serving_default` (`serving/tflite_assets.py`).

Missing modality is part of the contract: a client that lacks a modality calls the signature
of the modalities it has. One `serve_<m1>_<m2>_only` signature (modalities in sorted order,
joined by `_`) per non-empty proper subset of the model's modalities when it has 2 to
`MAX_SUBSET_MODALITIES` (4) of them (2**n - 2 signatures: 2 for image+audio, 14 for 4
modalities); a model with more modalities gets the single-modality ones only
(`serve_<m>_only`), and a client with another combination calls `serving_default` with zeros
and `<m>_present` = 0. `serve_raw` takes `<m>_present` = 0 with empty bytes (`b""`, not
decoded), and `serve_examples` takes Examples that leave a modality's features out.

(each signature has the inputs of the modalities the model takes). `serving_default` is also
what TF Serving uses when a request names no signature. TFLite carries it and the
`serve_<m..>_only` signatures (`tensor_signatures`; `serve_raw` and `serve_examples` need string
ops and lookup tables), ONNX `serving_default` alone; `serving.export` converts those from an archive of the main
head alone, so they carry `probabilities` and `class_id` only. The decoders are `mmkeras.data.example_schema`'s, which
reproduce the training pipeline's decoding exactly with core TensorFlow ops only. WAV sample
rates (`serve_raw`, `serve_examples`): a WAV at another rate than the model's (read from its
`MelSpectrogram`, `audio_sample_rate`) is resampled in the graph, band-limited
(`mmkeras.data.audio_resample`), by default; exported with `wav_rate="reject"`
(`model.audio_encoder.serve_wav_rate: reject`) it is refused instead: the call fails with an
InvalidArgumentError naming both rates (HTTP 400 / gRPC INVALID_ARGUMENT from the servers,
`serving/batching.py`). TFLite has neither signature: its `audio` input takes samples at
the model's rate (resample before calling it). `serve_raw` and `serve_examples` exist
for models whose inputs all have a raw form (image, audio, and text and tabular given the model
directory's fitted `Preprocessing`); other models (video, time series) get `serving_default`
and the `serve_<m..>_only` ones (`supported_signatures`).
"""

import itertools

import keras
import numpy as np
import tensorflow as tf

from mmkeras import features
from mmkeras.data import example_schema
from mmkeras.models import heads
from serving import raw_inputs
from serving.errors import DEFAULT_SIGNATURE

SERVING_DEFAULT = DEFAULT_SIGNATURE  # one name for the package (serving/errors.py)
SERVE_RAW = "serve_raw"
SERVE_EXAMPLES = "serve_examples"
SIGNATURES = (SERVING_DEFAULT, SERVE_RAW, SERVE_EXAMPLES)
# Up to this many modalities, every non-empty proper subset gets a `serve_<...>_only`
# signature (2**n - 2 of them: 14 for 4 modalities); beyond it, only single-modality ones.
MAX_SUBSET_MODALITIES = 4
MULTI_HOT = "multi_hot"  # a multi-label model's 0/1 labels, beside its probabilities
MULTI_LABEL_THRESHOLD = 0.5


def subset_signature_name(modalities):
    """`serve_<m1>_<m2>_only` for the given modalities, in sorted order."""
    return "serve_" + "_".join(sorted(modalities)) + "_only"


def input_specs(model):
    """Named `tf.TensorSpec`s of a functional model's inputs (batch dimension left open)."""
    specs = {}
    for tensor in model.inputs:
        name = tensor.name
        specs[name] = tf.TensorSpec([None, *tensor.shape[1:]], tf.as_dtype(tensor.dtype), name=name)
    return specs


def modality_shapes(model):
    """`{modality: per-example shape}` of the model's data inputs (not the presence flags)."""
    return {
        name: tuple(spec.shape[1:])
        for name, spec in input_specs(model).items()
        if not name.endswith(features.PRESENT_SUFFIX)
    }


def raw_input_specs(model, preprocessing=None, kinds=None):
    """The `serve_raw` inputs (`serving/raw_inputs.py`): `<m>_bytes` strings for images and
    audio, strings for text, one input per tabular column, and the `<m>_present` flags."""
    raw = raw_features(model, preprocessing, kinds)
    if raw is None:
        raise ValueError(f"No raw form for every input of {sorted(input_specs(model))}.")
    return raw_inputs.input_specs(raw)


def examples_input_specs():
    """The `serve_examples` input: a batch of serialized `tf.train.Example`s."""
    name = example_schema.SERIALIZED
    return {name: tf.TensorSpec([None], tf.string, name=name)}


def modality_subsets(model):
    """`{signature name: sorted modalities}` of the missing-modality signatures of `model`.

    One per non-empty proper subset of the model's modalities when it has 2 to
    `MAX_SUBSET_MODALITIES` of them, one per single modality when it has more, none for a
    single-modality model. A modality can be left out only when its input has a fully known
    shape (its zeros are built inside the graph); subsets that would leave out another are
    skipped.
    """
    specs = input_specs(model)
    modalities = sorted(modality_shapes(model))
    if len(modalities) < 2:
        return {}
    sizes = range(1, len(modalities)) if len(modalities) <= MAX_SUBSET_MODALITIES else (1,)
    subsets = {}
    for size in sizes:
        for subset in itertools.combinations(modalities, size):
            left_out = [m for m in modalities if m not in subset]
            if all(specs[m].shape[1:].is_fully_defined() for m in left_out):
                subsets[subset_signature_name(subset)] = list(subset)
    return subsets


def raw_features(model, preprocessing=None, kinds=None):
    """The raw inputs of `serve_raw` (`serving/raw_inputs.py`), or None when a modality has
    no raw form (video, time series; text or tabular without the fitted `preprocessing`)."""
    raw = raw_inputs.raw_features(input_specs(model), preprocessing, kinds)
    if not raw or any(f.kind == raw_inputs.TENSOR for f in raw):
        return None
    return raw


def supported_signatures(model, preprocessing=None, kinds=None):
    """The signatures `build_archive` can make for `model` (see the module docstring)."""
    subsets = tuple(modality_subsets(model))
    if raw_features(model, preprocessing, kinds) is not None:
        return SIGNATURES + subsets
    return (SERVING_DEFAULT,) + subsets


def tensor_signatures(model):
    """The signatures that take tensors only (no string decoding): `serving_default` and the
    `serve_<...>_only` ones; what TFLite and the parity checks run."""
    return (SERVING_DEFAULT,) + tuple(modality_subsets(model))


def complete_inputs(inputs, specs, modalities):
    """`inputs` of the modalities given, plus zeros and a 0 presence flag for every other one.

    Args:
        inputs: `{name: tensor}` holding the data inputs (and optionally flags) of `modalities`.
        specs: `input_specs(model)`: every input of the model.
        modalities: the modalities present in `inputs`; their flags default to 1.
    """
    first = inputs[sorted(modalities)[0]]
    batch = tf.shape(first)[0]
    result = {}
    for name, spec in specs.items():
        if name in inputs:
            result[name] = inputs[name]
            continue
        if name.endswith(features.PRESENT_SUFFIX):
            modality = name[:-len(features.PRESENT_SUFFIX)]
            value = 1.0 if modality in modalities else 0.0
            result[name] = tf.fill(tf.reshape(batch, [1]), tf.constant(value, spec.dtype))
            continue
        shape = tf.concat([[batch], tf.constant(spec.shape[1:].as_list(), tf.int32)], 0)
        if spec.dtype == tf.string:
            result[name] = tf.fill(shape, tf.constant("", tf.string))
        else:
            result[name] = tf.zeros(shape, spec.dtype)
    return result


def preprocessing_resources(preprocessing):
    """What the raw signatures' graph holds of `preprocessing`: the tokenizer (a Keras layer)
    and the tabular lookup tables (made here, eagerly, so the SavedModel saves them)."""
    resources = []
    for name in preprocessing.text_features:
        preprocessing.text_ids(tf.constant([""]), name)  # builds the layer (an eager call)
    resources += preprocessing.tokenizers()
    if preprocessing.tabular:
        resources += preprocessing.lookup_tables()
    return resources


def head_names(model):
    """The heads a model serves, main head first: `["probabilities", <task>, ...]`.

    A single-output classifier has the main head only; a multi-task model (dict outputs) must
    name its main head `probabilities`, and its other outputs are the auxiliary heads, in the
    model's order.
    """
    output = model.output
    if not isinstance(output, dict):
        return [features.PROBABILITIES]
    if features.PROBABILITIES not in output:
        raise ValueError(
            f"A multi-output model needs its main head under '{features.PROBABILITIES}'; "
            f"its outputs are {sorted(output)}."
        )
    return [features.PROBABILITIES] + [name for name in output if name != features.PROBABILITIES]


def head_output_names(head, target="multiclass"):
    """The names of a head's outputs in the signatures: `(probabilities, class_id)`;
    `(probabilities, multi_hot)` for a multi-label model, `(value,)` for regression."""
    if target == "regression":
        return (heads.VALUE,)
    decision = MULTI_HOT if target == "multilabel" else features.CLASS_ID
    if head == features.PROBABILITIES:
        return features.PROBABILITIES, decision
    return f"{head}_{features.PROBABILITIES}", f"{head}_{decision}"


def head_outputs(head, values, target="multiclass"):
    """`{output name: tensor}` of one head's values (`head_output_names`): the probabilities
    and their argmax; for multi-label, the probabilities and the 0/1 labels at
    `MULTI_LABEL_THRESHOLD`; for regression the value, shape `[B]`."""
    names = head_output_names(head, target)
    if target == "regression":
        return {names[0]: tf.reshape(values, [-1])}
    if target == "multilabel":
        decision = tf.cast(values >= MULTI_LABEL_THRESHOLD, tf.int64)
    else:
        decision = tf.argmax(values, axis=-1)
    return {names[0]: values, names[1]: decision}


def outputs_agree(out, reference):
    """`(max |difference| of the float outputs, integer outputs identical and the same
    output names)` between two signature results (tensors or arrays)."""
    if set(out) != set(reference):
        return float("inf"), False
    diff, same = 0.0, True
    for name, value in reference.items():
        expected, got = np.asarray(value), np.asarray(out[name])
        if expected.dtype.kind == "f":
            diff = max(diff, float(np.abs(got - expected).max())) if expected.size else diff
        else:
            same &= bool(np.array_equal(got, expected))
    return diff, same


def output_names(model):
    """Every signature output of `model`, in order (`probabilities`, `class_id`, then the heads')."""
    target = heads.target_of_model(model)
    return [name for head in head_names(model) for name in head_output_names(head, target)]


def audio_sample_rate(model):
    """The audio rate (Hz) of `model`'s first `keras.layers.MelSpectrogram`, or None."""
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.MelSpectrogram):
            return int(layer.sampling_rate)
    return None


def build_archive(model, signatures=None, preprocessing=None, kinds=None, wav_rate="resample",
                  sample_rate=None, image_resize=None, image_fill=0.0):
    """An `ExportArchive` holding `signatures` (default: `supported_signatures(model)`).

    `model` returns the main head's probabilities, or (multi-task) a dict of every head's with
    the main head under `probabilities`; each signature returns `output_names(model)`.
    `preprocessing` (the model directory's fitted `Preprocessing`) puts the tokenizer and the
    tabular lookup tables into the graph of `serve_raw` and `serve_examples`; `kinds` maps
    feature names to modality types (`serving/raw_inputs.py`). `wav_rate` (`"resample"` or
    `"reject"`) is what `serve_raw` / `serve_examples` do with a WAV whose rate is not the
    model's: `sample_rate`, by default `audio_sample_rate(model)` (None when the model has no
    spectrogram layer: WAV rates are then not checked). `image_resize` / `image_fill` (the
    model's `data.image_resize`, `data.image_fill`) fit encoded images of any size as training
    did; None: images must have the model's shape.
    """
    supported = supported_signatures(model, preprocessing, kinds)
    signatures = supported if signatures is None else tuple(signatures)
    unsupported = set(signatures) - set(supported)
    if unsupported:
        raise ValueError(
            f"Signatures {sorted(unsupported)} are not available for inputs "
            f"{sorted(input_specs(model))}; this model supports {list(supported)}."
        )
    names = head_names(model)
    target = heads.target_of_model(model)
    rate = {"audio_sample_rate": sample_rate or audio_sample_rate(model), "wav_rate": wav_rate,
            "image_resize": image_resize, "image_fill": image_fill}

    def serve(inputs):
        outputs = model(inputs, training=False)
        if not isinstance(outputs, dict):
            outputs = {features.PROBABILITIES: outputs}
        result = {}
        for head in names:
            result.update(head_outputs(head, outputs[head], target))
        return result

    specs = input_specs(model)
    raw = raw_features(model, preprocessing, kinds)

    def serve_raw(inputs):
        return serve(raw_inputs.to_model_inputs(inputs, raw, specs, preprocessing, rate=rate))

    def serve_examples(inputs):
        parsed = raw_inputs.parse_examples(inputs[example_schema.SERIALIZED], raw)
        return serve(raw_inputs.to_model_inputs(parsed, raw, specs, preprocessing, rate=rate))

    endpoints = {SERVING_DEFAULT: (serve, specs)}
    if raw is not None:
        endpoints[SERVE_RAW] = (serve_raw, raw_inputs.input_specs(raw))
        endpoints[SERVE_EXAMPLES] = (serve_examples, examples_input_specs())
    for name, subset in modality_subsets(model).items():
        def serve_subset(inputs, subset=subset):
            return serve(complete_inputs(inputs, specs, subset))

        endpoints[name] = (serve_subset, {m: specs[m] for m in subset})
    archive = keras.export.ExportArchive()
    archive.track(model)
    if raw is not None and preprocessing is not None:
        for resource in preprocessing_resources(preprocessing):
            archive.track(resource)
    for name in endpoints:
        if name in signatures:
            fn, fn_specs = endpoints[name]
            archive.add_endpoint(name, fn, input_signature=[fn_specs])
    return archive
