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

A multi-task model's output dict holds the main head under `probabilities` and each auxiliary
head under its task's name (`audio_digit`, `parity`, ...); `head_names` lists them.

| signature        | inputs (batch dimension open)                                        |
|------------------|----------------------------------------------------------------------|
| `serving_default`| `image` f32 [B,28,28,1], `audio` f32 [B,N], `<m>_present` f32 [B]     |
| `serve_raw`      | `image_bytes` string [B] (PNG/JPEG), `audio_bytes` string [B] (16-bit |
|                  | WAV), `<m>_present` f32 [B] (0: the bytes are ignored, may be empty)  |
| `serve_examples` | `examples` string [B]: serialized `tf.train.Example`s in the schema   |
|                  | of `mmkeras.data.example_schema`                                      |

(each signature has the inputs of the modalities the model takes). `serving_default` is also
what TF Serving uses when a request names no signature, and the only one converted to TFLite
and ONNX (the others need string ops); `serving.export` converts those from an archive of the
main head alone, so they carry `probabilities` and `class_id` only. The decoders are `mmkeras.data.example_schema`'s, which
reproduce the training pipeline's decoding exactly with core TensorFlow ops only; WAVs must be
at the model's sampling rate (no in-graph resampling). `serve_raw` and `serve_examples` exist
for models whose modalities all have an encoded form in the schema (image, audio); other
models (text, video, tabular, ...) get `serving_default` only (`supported_signatures`).
"""

import keras
import tensorflow as tf

from mmkeras import features
from mmkeras.data import example_schema

SERVING_DEFAULT = "serving_default"
SERVE_RAW = "serve_raw"
SERVE_EXAMPLES = "serve_examples"
SIGNATURES = (SERVING_DEFAULT, SERVE_RAW, SERVE_EXAMPLES)


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


def raw_input_specs(model):
    """The `serve_raw` inputs: `<m>_bytes` strings and `<m>_present` flags."""
    specs = {}
    for m in modality_shapes(model):
        key = example_schema.bytes_key(m)
        specs[key] = tf.TensorSpec([None], tf.string, name=key)
        flag = features.presence_key(m)
        specs[flag] = tf.TensorSpec([None], tf.float32, name=flag)
    return specs


def examples_input_specs():
    """The `serve_examples` input: a batch of serialized `tf.train.Example`s."""
    name = example_schema.SERIALIZED
    return {name: tf.TensorSpec([None], tf.string, name=name)}


def supported_signatures(model):
    """The signatures `build_archive` can make for `model` (see the module docstring)."""
    shapes = modality_shapes(model)
    if shapes and set(shapes) <= set(example_schema.ENCODED_MODALITIES):
        return SIGNATURES
    return (SERVING_DEFAULT,)


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


def head_output_names(head):
    """`(probabilities name, class_id name)` of a head in the signatures' outputs."""
    if head == features.PROBABILITIES:
        return features.PROBABILITIES, features.CLASS_ID
    return f"{head}_{features.PROBABILITIES}", f"{head}_{features.CLASS_ID}"


def output_names(model):
    """Every signature output of `model`, in order (`probabilities`, `class_id`, then the heads')."""
    return [name for head in head_names(model) for name in head_output_names(head)]


def build_archive(model, signatures=None):
    """An `ExportArchive` holding `signatures` (default: `supported_signatures(model)`).

    `model` returns the main head's probabilities, or (multi-task) a dict of every head's with
    the main head under `probabilities`; each signature returns `output_names(model)`.
    """
    supported = supported_signatures(model)
    signatures = supported if signatures is None else tuple(signatures)
    unsupported = set(signatures) - set(supported)
    if unsupported:
        raise ValueError(
            f"Signatures {sorted(unsupported)} are not available for inputs "
            f"{sorted(input_specs(model))}; this model supports {list(supported)}."
        )
    shapes = modality_shapes(model)
    heads = head_names(model)

    def serve(inputs):
        outputs = model(inputs, training=False)
        if not isinstance(outputs, dict):
            outputs = {features.PROBABILITIES: outputs}
        result = {}
        for head in heads:
            probabilities_name, class_id_name = head_output_names(head)
            result[probabilities_name] = outputs[head]
            result[class_id_name] = tf.argmax(outputs[head], axis=-1)
        return result

    def serve_raw(inputs):
        encoded = {m: inputs[example_schema.bytes_key(m)] for m in shapes}
        present = {m: inputs[features.presence_key(m)] for m in shapes}
        return serve(example_schema.decode_batch(encoded, present, shapes))

    def serve_examples(inputs):
        return serve(example_schema.parse_examples(inputs[example_schema.SERIALIZED], shapes))

    endpoints = {
        SERVING_DEFAULT: (serve, input_specs(model)),
        SERVE_RAW: (serve_raw, raw_input_specs(model)),
        SERVE_EXAMPLES: (serve_examples, examples_input_specs()),
    }
    archive = keras.export.ExportArchive()
    archive.track(model)
    for name in SIGNATURES:
        if name in signatures:
            fn, specs = endpoints[name]
            archive.add_endpoint(name, fn, input_signature=[specs])
    return archive
