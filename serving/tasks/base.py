"""What every task's serving module gives the export: endpoints, real check rows, Keras references.

A `TaskServing` wraps the model of a model directory (`config.task` picks the subclass, see
`serving/tasks/__init__.py`) and says:
- `endpoints()`: the named signatures, each a function of `{input: tensor}` returning
  `{output: tensor}` with its `tf.TensorSpec`s, and whether it converts to TFLite with builtin
  ops only (`tflite`, and `why_not_tflite` when it does not);
- `resources()`: trackables the endpoints use beyond the model (a vocabulary table);
- `check_rows(count)`: real test rows as numpy, decoded as the training pipeline decodes them,
  holding every input of every endpoint;
- `reference(rows)`: `{endpoint: {output: array}}` computed by Keras (the model's own call,
  the library's Python decoders, numpy post-processing), never by the exported graph.

`check` compares each artifact's signatures with the reference (`compare`).
"""

import dataclasses

import keras
import numpy as np
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from serving import examples

# Largest |difference| of a float output, relative to max(1, max |reference|): the SavedModel
# runs TensorFlow's kernels (as Keras does), TFLite its own.
FLOAT_TOLERANCE = {"savedmodel": 1e-5, "tflite": 1e-4}
# Integer and string outputs (class ids, offsets, token ids, captions) must agree on every row.
MIN_AGREEMENT = 1.0
CHECK_EXAMPLES = 16


@dataclasses.dataclass
class Endpoint:
    """One signature: `fn({input: tensor}) -> {output: tensor}` over `specs` `{input: TensorSpec}`."""

    name: str
    fn: object
    specs: dict
    tflite: bool = True
    why_not_tflite: str = ""
    row_keys: dict = dataclasses.field(default_factory=dict)  # input -> key in `check_rows`


class TaskServing:
    """The serving side of one task (subclasses set `task` and implement the methods)."""

    task = None

    def __init__(self, config, model, model_dir):
        self.config = config
        self.model = model
        self.model_dir = model_dir

    def endpoints(self):
        raise NotImplementedError

    def resources(self):
        return []

    def check_rows(self, count=CHECK_EXAMPLES):
        raise NotImplementedError

    def reference(self, rows):
        raise NotImplementedError

    def warmup_inputs(self, count=4):
        """`{endpoint: inputs}` of `count` real rows, for the TF Serving warm-up requests."""
        rows = self.check_rows(count)
        return {e.name: inputs_of(e, rows) for e in self.endpoints()}


def inputs_of(endpoint, rows):
    """The inputs `endpoint` takes, picked from `rows` (`endpoint.row_keys` renames), in its
    dtypes."""
    return {k: np.asarray(rows[endpoint.row_keys.get(k, k)],
                          spec.dtype.as_numpy_dtype if spec.dtype != tf.string else object)
            for k, spec in endpoint.specs.items()}


def input_spec(tensor, name):
    """A `tf.TensorSpec` with an open batch dimension for a Keras input tensor."""
    return tf.TensorSpec([None, *tensor.shape[1:]], tf.as_dtype(tensor.dtype), name=name)


def build_archive(serving):
    """A `keras.export.ExportArchive` holding every endpoint of `serving`."""
    archive = keras.export.ExportArchive()
    archive.track(serving.model)
    for resource in serving.resources():
        archive.track(resource)
    for endpoint in serving.endpoints():
        archive.add_endpoint(endpoint.name, endpoint.fn, input_signature=[endpoint.specs])
    return archive


def compare(got, expected, float_tolerance):
    """Every output of `expected` in `got`: floats by max |difference| (relative to
    max(1, max |expected|)), integers and strings by the fraction of rows that agree."""
    report, passed = {}, set(got) >= set(expected)
    for name, want in expected.items():
        want = np.asarray(want)
        have = np.asarray(got.get(name)) if name in got else None
        if have is None or have.shape != want.shape:
            report[name] = {"shape": None if have is None else list(have.shape),
                            "expected_shape": list(want.shape), "passed": False}
            passed = False
            continue
        if want.dtype.kind == "f":
            scale = max(1.0, float(np.abs(want).max(initial=0.0)))
            diff = float(np.abs(have.astype(np.float64) - want).max(initial=0.0))
            ok = diff <= float_tolerance * scale
            report[name] = {"max_abs_diff": diff, "tolerance": float_tolerance * scale,
                            "passed": bool(ok)}
        else:
            rows = (have == want).reshape(len(want), -1).all(axis=1)
            agreement = float(rows.mean()) if len(rows) else 1.0
            ok = agreement >= MIN_AGREEMENT
            report[name] = {"agreement": agreement, "passed": bool(ok)}
        passed &= ok
    return {"outputs": report, "passed": bool(passed)}


def _numpy(outputs):
    return {k: (v.numpy() if hasattr(v, "numpy") else np.asarray(v)) for k, v in outputs.items()}


def check(serving, savedmodel_dir, tflite_path=None, count=CHECK_EXAMPLES):
    """Each signature of the SavedModel (and of the TFLite file) against the Keras reference
    on `count` real test rows: `{"examples", "savedmodel": {signature: entry}, "tflite": ...}`."""
    rows = serving.check_rows(count)
    reference = serving.reference(rows)
    endpoints = serving.endpoints()
    signatures = tf.saved_model.load(str(savedmodel_dir)).signatures
    report = {"examples": int(len(next(iter(rows.values())))), "savedmodel": {}}
    for e in endpoints:
        inputs = {k: tf.constant(v) for k, v in inputs_of(e, rows).items()}
        got = _numpy(signatures[e.name](**inputs))
        report["savedmodel"][e.name] = compare(got, reference[e.name], FLOAT_TOLERANCE["savedmodel"])
    if tflite_path is not None:
        interpreter = Interpreter(model_path=str(tflite_path))
        report["tflite"] = {}
        for e in endpoints:
            if not e.tflite:
                continue
            runner = interpreter.get_signature_runner(e.name)
            got = runner(**inputs_of(e, rows))
            expected = {k: v for k, v in reference[e.name].items()
                        if np.asarray(v).dtype.kind != "O"}
            report["tflite"][e.name] = compare(got, expected, FLOAT_TOLERANCE["tflite"])
    return report


def softmax(logits):
    logits = np.asarray(logits, np.float64)
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def manifest_rows(config, count, modalities=None, preprocessing=None):
    """The first `count` test rows of a manifest dataset, decoded as the training pipeline
    decodes them (`serving.examples.pipeline_inputs`), as numpy."""
    modalities = sorted(modalities or config.model.modalities)
    columns = examples.rows(config, "test", count)
    x = examples.pipeline_inputs(columns, config, modalities, preprocessing)
    return {k: v.numpy() for k, v in x.items()}
