"""Export a trained model directory to TF Serving (SavedModel), TFLite and ONNX, and check parity.

    python -m serving.export --model-dir DIR [--format savedmodel --format tflite --format onnx]
        [--tflite-quant float32 --tflite-quant float16 --tflite-quant dynamic --tflite-quant int8]
        [--all-heads]

(default: `--format savedmodel --format tflite --tflite-quant float32`) writes

    DIR/export/savedmodel/models.config              model_config_list for tensorflow_model_server
    DIR/export/savedmodel/<model_name>/<version>/    saved_model.pb, variables/, and
        assets.extra/tf_serving_warmup_requests      PredictionLogs of real test examples
    DIR/export/tflite/model.tflite                   float32      } builtin ops only, signature
    DIR/export/tflite/model_f16.tflite               float16      } `serving_default`; inputs
    DIR/export/tflite/model_dynamic.tflite           dynamic range} and outputs stay float32
    DIR/export/tflite/model_int8.tflite              int8         } (see below)
    DIR/export/onnx/model.onnx                       opset 17 (tf2onnx, see serving/onnx_export.py)
    DIR/export/parity.json                           every format vs Keras on the test split

and exits with status 1 when any format misses its tolerance (or an export fails). Each
version directory, warm-up file included, is written to a temporary directory first and renamed,
so TF Serving never sees half a version; a failure removes the temporary directory.

The SavedModel has three signatures (`serving_default`, `serve_raw`, `serve_examples`: see
`serving/serving_module.py`); `serve_raw` and `serve_examples` are checked to give the
probabilities of `serving_default` (within 1e-5) on real test files, one with audio and one with
the image marked missing.

A text model (`text` in `model.modalities`) is fed the token ids of the tokenizer saved in DIR
(`vocab.txt`, or a `keras_hub` encoder's `text_preprocessor/`) in every check, and its
SavedModel gets a `serve_text` signature taking raw strings (`serving/text_signature.py`),
checked against `serving_default` (`parity.json`: `text_signature`).

`--all-heads` (a model trained with `model.tasks`): the SavedModel is exported from
`DIR/multitask.keras` (every head) instead of `DIR/model.keras` (the main head), so every
signature returns `probabilities` and `class_id` exactly as without the flag (the main head)
plus `<task>_probabilities` and `<task>_class_id` for each auxiliary head (see
`serving/serving_module.py`). TFLite and ONNX stay main-head only: they are converted from a
temporary SavedModel of `model.keras` (`serving_default` alone), as without the flag; each
format's entry in `parity.json` lists the heads it carries (`heads`). Parity keeps judging the
main head on the whole test split; `head_check` adds, on `SIGNATURE_CHECK_EXAMPLES` real test
rows, the SavedModel's `probabilities` vs `model.keras` and each `<task>_probabilities` vs the
Keras multi-task model (within 1e-5, same class ids), and the signature checks compare every
head's probabilities across signatures. The version goes under the same model name: it is
the newest, so TF Serving serves it, and clients of the main head see no difference. Without
`DIR/multitask.keras` the flag is an error (exit status 2) naming that file.

Parity (`TOLERANCES`, override with `--tolerance FORMAT.FIELD=VALUE`) on the whole test split:
max |probability difference| to Keras, top-1 agreement with Keras, accuracy, size in bytes.
- Float formats (SavedModel, TFLite float32, ONNX) must match Keras to float rounding:
  max diff <= 1e-5 (SavedModel, same kernels) or 1e-4 (other runtimes), agreement >= 0.995.
- Quantized TFLite is judged by what users see, the top-1 decision: agreement with Keras >=
  0.99 (float16), 0.98 (dynamic range) or 0.97 (int8), and accuracy at most 0.5 (float16,
  dynamic range) or 1.0 (int8) point below Keras. Their max diff only has a loose bound that
  catches broken conversions (0.02 float16, 0.25 dynamic range and int8: over thousands of
  examples the worst one moves a lot while the decisions stay put). Measured on the AV-MNIST
  early-fusion model (3 epochs, 2000 test examples), max diff / agreement / accuracy change:
  float16 3.8e-4 / 0.9995 / +0.05 point, dynamic range 0.025 / 0.998 / +0.2, int8 0.026 /
  0.987 / 0.0 (at 0.26x the float32 size; `python -m benchmarks.serving` for timings).
- int8: integer kernels calibrated on the first `REPRESENTATIVE_EXAMPLES` training examples,
  except the log-mel front end (`MelSpectrogram` layers), which stays float32 through
  selective quantization: an int8 spectrogram loses the quiet bins before the log and took
  top-1 agreement down to 0.62. The interface stays float32 (inputs mix [0, 1] pixels, [-1, 1]
  waveforms and 0/1 flags, and the waveform must not be quantized; int8 I/O would also move
  quantization into every client), so the same code calls every variant.

Serve the SavedModel with TF Serving (warm-up runs at load time):
    tensorflow_model_server --rest_api_port=8501 --port=8500 \
        --model_config_file=$PWD/DIR/export/savedmodel/models.config
"""

import argparse
import dataclasses
import os
import pathlib
import shutil
import sys
import time

import numpy as np

FORMATS = ("savedmodel", "tflite", "onnx")
DEFAULT_FORMATS = ("savedmodel", "tflite")
TFLITE_QUANT = ("float32", "float16", "dynamic", "int8")
# quantization -> (file name, parity.json key)
TFLITE_VARIANTS = {
    "float32": ("model.tflite", "tflite"),
    "float16": ("model_f16.tflite", "tflite_f16"),
    "dynamic": ("model_dynamic.tflite", "tflite_dynamic"),
    "int8": ("model_int8.tflite", "tflite_int8"),
}
REPRESENTATIVE_EXAMPLES = 200
WARMUP_EXAMPLES = 4
SIGNATURE_CHECK_EXAMPLES = 6
SIGNATURE_TOLERANCE = 1e-5
WARMUP_FILE = "tf_serving_warmup_requests"
MODEL_FILE = "model.keras"
MULTITASK_FILE = "multitask.keras"  # the trainer's model with every task head (`model.tasks`)


@dataclasses.dataclass
class Tolerance:
    """What a format must meet against Keras on the test split.

    Attributes:
        max_abs_diff: bound on the largest |probability difference| (None: not checked).
        min_top1_agreement: fraction of examples with the same top-1 class as Keras.
        max_accuracy_drop: largest accuracy loss vs Keras as a fraction (0.01 = 1 point);
            None: not checked. A format more accurate than Keras always passes this check.
    """

    max_abs_diff: float = None
    min_top1_agreement: float = 0.995
    max_accuracy_drop: float = None


TOLERANCES = {
    "savedmodel": Tolerance(1e-5, 0.995),
    "tflite": Tolerance(1e-4, 0.995),
    "onnx": Tolerance(1e-4, 0.995),
    "tflite_f16": Tolerance(0.02, 0.99, 0.005),
    "tflite_dynamic": Tolerance(0.25, 0.98, 0.005),
    "tflite_int8": Tolerance(0.25, 0.97, 0.01),
}
# Kept for callers of the first version of this module.
TOLERANCE = {name: t.max_abs_diff for name, t in TOLERANCES.items()}
MIN_TOP1_AGREEMENT = TOLERANCES["savedmodel"].min_top1_agreement


def load_model_dir(model_dir):
    """The resolved config and the Keras model of a model directory."""
    import keras
    import yaml

    import mmkeras.layers  # noqa: F401  (registers the custom layers)
    from mmkeras.configs import config_from_dict

    from serving import text_signature

    model_dir = pathlib.Path(model_dir)
    with open(model_dir / "config.yaml") as f:
        config = config_from_dict(yaml.safe_load(f))
    text_signature.register_keras_hub(config)  # KerasHub backbones inside the model
    model = keras.saving.load_model(model_dir / MODEL_FILE)
    return config, model


def load_multitask_model(model_dir):
    """The Keras model with every task head (`DIR/multitask.keras`, written by the trainer
    for `model.tasks`); `FileNotFoundError` naming the file when the directory has none."""
    import keras

    import mmkeras.layers  # noqa: F401  (registers the custom layers)

    path = pathlib.Path(model_dir) / MULTITASK_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"--all-heads exports {path}, which does not exist: only a model trained with "
            "model.tasks (auxiliary heads) has one. Export without --all-heads for the main head."
        )
    return keras.saving.load_model(path)


def next_version(base):
    versions = [int(p.name) for p in pathlib.Path(base).glob("*") if p.name.isdigit()]
    return max(versions, default=0) + 1


def _atomic_write(path, data):
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    tmp.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    os.replace(tmp, path)
    return path


def _dir_bytes(path):
    return sum(p.stat().st_size for p in pathlib.Path(path).rglob("*") if p.is_file())


# SavedModel + TF Serving extras.


def warmup_requests(model_name, examples):
    """`PredictionLog`s for `serving_default`: one per example (batch 1), then all at once.

    Args:
        model_name: the TF Serving model name.
        examples: `{input_name: np.ndarray}` with a leading batch dimension.
    """
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2
    from tensorflow_serving.apis import prediction_log_pb2

    from serving.serving_module import SERVING_DEFAULT

    count = len(next(iter(examples.values())))
    batches = [slice(i, i + 1) for i in range(count)] + [slice(0, count)]
    logs = []
    for rows in batches:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model_name
        request.model_spec.signature_name = SERVING_DEFAULT
        for name, value in sorted(examples.items()):
            request.inputs[name].CopyFrom(tf.make_tensor_proto(np.asarray(value[rows])))
        logs.append(prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request)
        ))
    return logs


def write_warmup(version_dir, model_name, examples):
    """Writes `<version_dir>/assets.extra/tf_serving_warmup_requests` (a TFRecord file)."""
    import tensorflow as tf

    path = pathlib.Path(version_dir) / "assets.extra" / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for log in warmup_requests(model_name, examples):
            writer.write(log.SerializeToString())
    return path


def export_savedmodel(model, base, version=None, warmup_examples=None, model_name=None,
                      preprocessing=None):
    """Writes `<base>/<version>/` (with warm-up requests) atomically; returns its path.

    `preprocessing` (a text model's fitted `Preprocessing`) adds the `serve_text` signature,
    which takes raw strings (`serving/text_signature.py`).

    Everything is written into `<base>/.tmp-<version>-<pid>` and renamed at the end; on any
    error the temporary directory is removed and no version appears.
    """
    from serving.serving_module import build_archive

    base = pathlib.Path(base)
    base.mkdir(parents=True, exist_ok=True)
    version = version or next_version(base)
    final = base / str(version)
    if final.exists():
        raise FileExistsError(f"{final} exists: versions are immutable; pick another --version.")
    tmp = base / f".tmp-{version}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        archive = build_archive(model)
        if preprocessing is not None:
            from serving import text_signature

            text_signature.add_text_endpoint(archive, model, preprocessing)
        archive.write_out(str(tmp), verbose=False)
        if warmup_examples is not None:
            write_warmup(tmp, model_name or base.name, warmup_examples)
        os.rename(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def models_config_text(savedmodel_root):
    """A `ModelServerConfig` text proto listing every model directory under the root."""
    root = pathlib.Path(savedmodel_root).resolve()
    entries = []
    for model_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        if model_dir.name.startswith((".", "tmp")):
            continue
        if not any(v.name.isdigit() for v in model_dir.iterdir()):
            continue
        entries.append(
            "  config {\n"
            f'    name: "{model_dir.name}"\n'
            f'    base_path: "{model_dir}"\n'
            '    model_platform: "tensorflow"\n'
            "  }\n"
        )
    return "model_config_list {\n" + "".join(entries) + "}\n"


def write_models_config(savedmodel_root):
    """Writes `<root>/models.config` (for `tensorflow_model_server --model_config_file`)."""
    return _atomic_write(pathlib.Path(savedmodel_root) / "models.config",
                         models_config_text(savedmodel_root))


# TFLite.


def _rows(config, split, count=None):
    """The first `count` checked manifest rows of a split (`load_split` columns)."""
    from mmkeras.data import load_split
    from mmkeras.data.sources import dataset_dir_for

    dataset_dir = dataset_dir_for(config.data, prepare=False)
    columns, _ = load_split(dataset_dir, split, config.data, config.model.modalities,
                            config.model.num_classes)
    return {k: np.array(v[:count], copy=True) for k, v in columns.items()}


def representative_dataset(config, count=REPRESENTATIVE_EXAMPLES, preprocessing=None):
    """A function yielding the first `count` training examples one by one (int8 calibration)."""
    columns = _rows(config, "train", count)
    x = _pipeline_inputs(columns, config, sorted(config.model.modalities), preprocessing)
    examples = [{k: v[i:i + 1].numpy() for k, v in x.items()} for i in range(len(columns["label"]))]

    def generate():
        yield from examples

    return generate


def float_layer_names(model):
    """Layers kept in float in the int8 model: the log-mel front ends (`MelSpectrogram`).

    Quantizing a spectrogram before its log maps the quiet bins (most of the dB range) to
    zero: with them in int8, top-1 agreement with Keras fell to 0.62 on AV-MNIST.
    """
    import keras

    def walk(layer):
        for sub in getattr(layer, "layers", []):
            yield sub
            yield from walk(sub)

    return sorted({l.name for l in walk(model) if isinstance(l, keras.layers.MelSpectrogram)})


def _tensor_names_in_layers(flatbuffer, layer_names):
    """Names of the tensors of a float TFLite model that belong to the named Keras layers."""
    import re

    from ai_edge_litert.interpreter import Interpreter

    if not layer_names:
        return []
    scope = re.compile(r"(^|/)(" + "|".join(re.escape(n) for n in layer_names) + r")(_\d+)?/")
    details = Interpreter(model_content=flatbuffer).get_tensor_details()
    return sorted({d["name"] for d in details if scope.search(d["name"])})


def export_tflite(savedmodel_dir, path, quant="float32", representative=None, float_layers=()):
    """Converts the SavedModel's `serving_default` to builtin-ops TFLite, quantized as asked.

    Args:
        savedmodel_dir: a SavedModel version directory.
        path: the `.tflite` file to write (atomically).
        quant: `float32`, `float16` (float16 weights), `dynamic` (int8 weights, dynamic-range
            activations) or `int8` (integer kernels, float32 I/O; needs `representative`).
        representative: a generator function of `{input_name: array}` (batch 1) for `int8`.
        float_layers: for `int8`, Keras layer names whose ops stay float (selective
            quantization with `tf.lite.experimental.QuantizationDebugger`'s denylist); every
            other op with an int8 kernel is quantized.
    """
    import tensorflow as tf

    if quant not in TFLITE_QUANT:
        raise ValueError(f"Unknown TFLite quantization '{quant}'; choose from {TFLITE_QUANT}.")

    def converter():
        c = tf.lite.TFLiteConverter.from_saved_model(
            str(savedmodel_dir), signature_keys=["serving_default"]
        )
        c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        return c

    c = converter()
    if quant == "float16":
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        c.target_spec.supported_types = [tf.float16]
    elif quant == "dynamic":
        c.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quant == "int8":
        if representative is None:
            raise ValueError("int8 quantization needs a representative dataset.")
        float_nodes = _tensor_names_in_layers(converter().convert(), float_layers)
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        c.representative_dataset = representative
        if not float_nodes:
            c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        else:
            c.target_spec.supported_ops = [
                tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS
            ]
            debugger = tf.lite.experimental.QuantizationDebugger(
                converter=c,
                debug_dataset=representative,
                debug_options=tf.lite.experimental.QuantizationDebugOptions(
                    denylisted_nodes=float_nodes
                ),
            )
            return _atomic_write(path, debugger.get_nondebug_quantized_model())
    return _atomic_write(path, c.convert())


def tflite_runner(path, num_threads=None):
    """`run(inputs) -> {output: array}` over the `serving_default` signature of a TFLite file."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
    runner = interpreter.get_signature_runner("serving_default")
    return lambda x: runner(**x)


# Parity.


def _batches(config, max_examples, batch_size=64, split="test", preprocessing=None):
    from mmkeras.data import load_split, make_dataset
    from mmkeras.data.sources import dataset_dir_for

    data = config.data
    dataset_dir = dataset_dir_for(data, prepare=False)
    columns, _ = load_split(dataset_dir, split, data, config.model.modalities, config.model.num_classes)
    if max_examples:
        columns = {k: v[:max_examples] for k, v in columns.items()}
    ds = make_dataset(columns, data, sorted(config.model.modalities), batch_size=batch_size,
                      preprocessing=preprocessing)
    for x, y in ds:
        yield {k: v.numpy() for k, v in x.items()}, y.numpy()


def judge(entry, keras_accuracy, tolerance):
    """Adds the tolerance and `passed` to a parity entry (`max_abs_diff`, `top1_agreement`,
    `accuracy`); returns the entry."""
    drop = keras_accuracy - entry["accuracy"]
    checks = [entry["top1_agreement"] >= tolerance.min_top1_agreement]
    if tolerance.max_abs_diff is not None:
        checks.append(entry["max_abs_diff"] <= tolerance.max_abs_diff)
    if tolerance.max_accuracy_drop is not None:
        checks.append(drop <= tolerance.max_accuracy_drop + 1e-12)
    entry.update({
        "accuracy_drop": drop,
        "tolerance": dataclasses.asdict(tolerance),
        "min_top1_agreement": tolerance.min_top1_agreement,
        "passed": bool(all(checks)),
    })
    return entry


def parity(config, model, savedmodel_dir=None, tflite_path=None, max_examples=None,
           runners=None, tolerances=None, preprocessing=None):
    """Runs Keras and each format on the test split; returns the parity report.

    Args:
        runners: `{format: run(inputs) -> {"probabilities": array, ...}}`; `savedmodel_dir`
            and `tflite_path` add the `savedmodel` and `tflite` runners.
        tolerances: `{format: Tolerance}` overriding `TOLERANCES`.
        preprocessing: the model directory's fitted `Preprocessing` (text, tabular models).
    """
    import tensorflow as tf

    tolerances = dict(TOLERANCES, **(tolerances or {}))
    runners = dict(runners or {})
    if savedmodel_dir is not None:
        signature = tf.saved_model.load(str(savedmodel_dir)).signatures["serving_default"]
        runners["savedmodel"] = lambda x: {
            k: v.numpy() for k, v in signature(**{k: tf.constant(v) for k, v in x.items()}).items()
        }
    if tflite_path is not None:
        runners["tflite"] = tflite_runner(tflite_path)

    keras_probs, labels, outs = [], [], {name: [] for name in runners}
    for x, y in _batches(config, max_examples, preprocessing=preprocessing):
        keras_probs.append(np.asarray(model(x, training=False)))
        labels.append(y)
        for name, run in runners.items():
            outs[name].append(np.asarray(run(x)["probabilities"]))
    keras_probs, labels = np.concatenate(keras_probs), np.concatenate(labels)
    keras_top1 = keras_probs.argmax(-1)
    keras_accuracy = float((keras_top1 == labels).mean())
    result = {"examples": int(len(labels)), "keras": {"accuracy": keras_accuracy}}
    for name, chunks in outs.items():
        probs = np.concatenate(chunks)
        entry = {
            "max_abs_diff": float(np.abs(probs - keras_probs).max()),
            "top1_agreement": float((probs.argmax(-1) == keras_top1).mean()),
            "accuracy": float((probs.argmax(-1) == labels).mean()),
        }
        result[name] = judge(entry, keras_accuracy, tolerances[name])
    return result


def _signature_check_rows(config, count=SIGNATURE_CHECK_EXAMPLES):
    """The first `count` test rows; row 1 has its audio and row 2 its image marked missing."""
    from mmkeras import features

    columns = _rows(config, "test", count)
    modalities = sorted(config.model.modalities)
    if len(modalities) > 1:
        for row, m in enumerate(modalities, start=1):
            if row < len(columns["label"]):
                columns[m][row] = ""
                columns[features.presence_key(m)][row] = 0.0
    return columns


def _pipeline_inputs(columns, config, modalities, preprocessing=None):
    """The training pipeline's decoding (`pipeline.decode_row`) of manifest rows, one at a time.

    Row by row rather than through `make_dataset`: tensorflow-io's audio decoding returns wrong
    samples for some clips when several calls run at once (a parallel `tf.data` map), which
    would make these checks flaky; one call at a time it is exact.
    """
    import tensorflow as tf

    from mmkeras.data import pipeline

    rows = []
    for i in range(len(columns["label"])):
        row = {k: tf.constant(v[i]) for k, v in columns.items() if k != "id"}
        rows.append(pipeline.decode_row(row, config.data, modalities))
    x = {k: tf.stack([r[k] for r in rows]) for k in rows[0]}
    return preprocessing.apply(x) if preprocessing is not None else x


def check_signatures(config, savedmodel_dir, count=SIGNATURE_CHECK_EXAMPLES,
                     tolerance=SIGNATURE_TOLERANCE):
    """`serve_raw` and `serve_examples` vs `serving_default` on real test files.

    `serving_default` gets the tensors of the training pipeline; `serve_raw` the files'
    bytes; `serve_examples` Examples written by `example_schema.to_example`. Every head's
    probabilities and class ids are compared (`probabilities`, `class_id`, and with
    `--all-heads` the `<task>_...` pairs).
    """
    import tensorflow as tf

    from mmkeras import features
    from mmkeras.data import example_schema
    from serving import serving_module as sm

    columns = _signature_check_rows(config, count)
    modalities = sorted(config.model.modalities)
    n = len(columns["label"])
    x = _pipeline_inputs(columns, config, modalities)
    signatures = tf.saved_model.load(str(savedmodel_dir)).signatures
    reference = {k: v.numpy() for k, v in signatures[sm.SERVING_DEFAULT](**x).items()}
    pairs = [(k, k[:-len(features.PROBABILITIES)] + features.CLASS_ID)
             for k in reference if k.endswith(features.PROBABILITIES)]

    def read(path):
        return pathlib.Path(path).read_bytes() if path else b""

    raw = {}
    for m in modalities:
        raw[example_schema.bytes_key(m)] = tf.constant([read(p) for p in columns[m]])
        raw[features.presence_key(m)] = tf.constant(columns[features.presence_key(m)], tf.float32)
    examples = []
    for i in range(n):
        kwargs = {m: (columns[m][i] or None) for m in modalities}
        examples.append(example_schema.to_example(
            label=int(columns["label"][i]), sample_rate=config.model.audio_encoder.sample_rate,
            **kwargs).SerializeToString())
    outputs = {
        sm.SERVE_RAW: signatures[sm.SERVE_RAW](**raw),
        sm.SERVE_EXAMPLES: signatures[sm.SERVE_EXAMPLES](
            **{example_schema.SERIALIZED: tf.constant(examples)}),
    }
    report = {}
    for name, out in outputs.items():
        diff, same_class = 0.0, set(out) == set(reference)
        for probabilities, class_id in pairs:
            probs = out[probabilities].numpy()
            diff = max(diff, float(np.abs(probs - reference[probabilities]).max()))
            same_class &= bool((out[class_id].numpy() == reference[probabilities].argmax(-1)).all())
        report[name] = {"examples": n, "max_abs_diff_vs_serving_default": diff,
                        "tolerance": tolerance, "passed": bool(diff <= tolerance and same_class)}
    return report


def check_heads(config, savedmodel_dir, model, multitask_model, count=SIGNATURE_CHECK_EXAMPLES,
                tolerance=SIGNATURE_TOLERANCE):
    """An `--all-heads` SavedModel's `serving_default` vs Keras on real test rows, per head.

    The main `probabilities` are compared with `model` (`model.keras`, what the other formats
    and parity use) and each `<task>_probabilities` with `multitask_model`'s output `<task>`;
    each head's `class_id` must be the argmax of the Keras probabilities. The rows are those of
    `check_signatures` (two with a modality marked missing).

    Returns:
        `{head: {"reference", "examples", "max_abs_diff", "tolerance", "passed"}}`.
    """
    import tensorflow as tf

    from mmkeras import features
    from serving import serving_module as sm

    columns = _signature_check_rows(config, count)
    x = _pipeline_inputs(columns, config, sorted(config.model.modalities))
    out = tf.saved_model.load(str(savedmodel_dir)).signatures[sm.SERVING_DEFAULT](**x)
    references = dict(multitask_model(x, training=False))
    references[features.PROBABILITIES] = model(x, training=False)
    report = {}
    for head in sm.head_names(multitask_model):
        probabilities, class_id = sm.head_output_names(head)
        expected = np.asarray(references[head])
        diff = float(np.abs(out[probabilities].numpy() - expected).max())
        same_class = bool((out[class_id].numpy() == expected.argmax(-1)).all())
        report[head] = {
            "reference": MODEL_FILE if head == features.PROBABILITIES else MULTITASK_FILE,
            "outputs": [probabilities, class_id], "examples": int(len(expected)),
            "max_abs_diff": diff, "tolerance": tolerance,
            "passed": bool(diff <= tolerance and same_class),
        }
    return report


def _warmup_examples(config, count=WARMUP_EXAMPLES, preprocessing=None):
    x = _pipeline_inputs(_rows(config, "test", count), config, sorted(config.model.modalities),
                         preprocessing)
    return {k: v.numpy() for k, v in x.items()}


# The whole export.


def parse_tolerances(items):
    """`["tflite_int8.min_top1_agreement=0.9", ...]` -> `{format: Tolerance}`."""
    result = {}
    fields = {f.name for f in dataclasses.fields(Tolerance)}
    for item in items or []:
        key, sep, value = item.partition("=")
        fmt, dot, field = key.partition(".")
        if not sep or not dot or fmt not in TOLERANCES or field not in fields:
            raise ValueError(
                f"--tolerance expects FORMAT.FIELD=VALUE with FORMAT in {sorted(TOLERANCES)} and "
                f"FIELD in {sorted(fields)}; got {item!r}"
            )
        current = result.get(fmt, TOLERANCES[fmt])
        parsed = None if value.lower() in ("none", "null", "") else float(value)
        result[fmt] = dataclasses.replace(current, **{field: parsed})
    return result


def export(model_dir, formats=DEFAULT_FORMATS, version=None, max_parity_examples=None,
           tflite_quant=("float32",), tolerances=None, all_heads=False):
    """Exports `model_dir` in `formats` and checks parity; returns the parity report.

    The SavedModel is always written (TFLite and ONNX are converted from it); parity and the
    signature checks cover the formats asked for.

    Args:
        all_heads: export the SavedModel from `multitask.keras` with every task head's outputs
            (see the module docstring); TFLite and ONNX keep the main head only, converted
            from a temporary main-head SavedModel. `FileNotFoundError` when the directory has
            no `multitask.keras`.
    """
    from mmkeras import features
    from serving import serving_module as sm
    from serving import text_signature
    from training.report import write_json

    model_dir = pathlib.Path(model_dir)
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError(f"Unknown export formats {sorted(unknown)}; choose from {FORMATS}.")
    unknown = set(tflite_quant) - set(TFLITE_QUANT)
    if unknown:
        raise ValueError(f"Unknown TFLite quantizations {sorted(unknown)}; choose from {TFLITE_QUANT}.")
    multitask_model = load_multitask_model(model_dir) if all_heads else None
    config, model = load_model_dir(model_dir)
    preprocessing = text_signature.load_preprocessing(model_dir, config)
    served = model if multitask_model is None else multitask_model  # what the SavedModel holds
    out = model_dir / "export"
    start = time.time()
    savedmodel_root = out / "savedmodel"
    savedmodel_dir = export_savedmodel(
        served, savedmodel_root / config.model.name, version,
        warmup_examples=_warmup_examples(config, preprocessing=preprocessing),
        model_name=config.model.name, preprocessing=text_signature.text_only(preprocessing),
    )
    write_models_config(savedmodel_root)
    timings = {"savedmodel": round(time.time() - start, 1)}
    heads = {"savedmodel": sm.head_names(served)}

    # TFLite and ONNX carry the main head: with --all-heads they are converted from a
    # temporary SavedModel of `model.keras` (the `serving_default` of a default export).
    convert_source, staging = savedmodel_dir, None
    if multitask_model is not None and {"tflite", "onnx"} & set(formats):
        staging = out / f".tmp-main-head-{os.getpid()}"
        if staging.exists():
            shutil.rmtree(staging)
        sm.build_archive(model, [sm.SERVING_DEFAULT]).write_out(str(staging), verbose=False)
        convert_source = staging
    try:
        runners, artifacts, onnx_source = _convert(
            model, convert_source, out, formats, tflite_quant, config, timings, preprocessing)
    finally:
        if staging is not None and staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    artifacts = {"savedmodel": savedmodel_dir, **artifacts}
    heads.update({key: [features.PROBABILITIES] for key in artifacts if key != "savedmodel"})

    report = parity(
        config, model,
        savedmodel_dir=savedmodel_dir if "savedmodel" in formats else None,
        max_examples=max_parity_examples, runners=runners, tolerances=tolerances,
        preprocessing=preprocessing,
    )
    signatures = list(sm.supported_signatures(model))
    if "savedmodel" in formats and len(signatures) > 1:
        report["signatures"] = check_signatures(config, savedmodel_dir)
    if multitask_model is not None:
        report["head_check"] = check_heads(config, savedmodel_dir, model, multitask_model)
    if text_signature.text_only(preprocessing) is not None:
        rows, modalities = _rows(config, "test", SIGNATURE_CHECK_EXAMPLES), sorted(config.model.modalities)
        report["text_signature"] = text_signature.check_text_signature(
            savedmodel_dir, _pipeline_inputs(rows, config, modalities),
            _pipeline_inputs(rows, config, modalities, preprocessing), SIGNATURE_TOLERANCE)
    float_tflite = artifacts.get("tflite")
    for key, path in artifacts.items():
        entry = report.setdefault(key, {})
        entry["path"] = str(path)
        entry["bytes"] = _dir_bytes(path) if path.is_dir() else path.stat().st_size
        entry["heads"] = heads[key]
        if key.startswith("tflite") and float_tflite is not None:
            entry["size_vs_tflite_float32"] = round(entry["bytes"] / float_tflite.stat().st_size, 4)
        if key in timings:
            entry["export_seconds"] = timings[key]
    report["savedmodel"].update({
        "version": int(savedmodel_dir.name),
        "signatures": signatures,
        "outputs": sm.output_names(served),
        "source": MULTITASK_FILE if multitask_model is not None else MODEL_FILE,
        "warmup_requests": str(savedmodel_dir / "assets.extra" / WARMUP_FILE),
        "models_config": str(savedmodel_root / "models.config"),
    })
    if onnx_source is not None:
        report["onnx"]["source"] = onnx_source
    report.update({
        "model_name": config.model.name,
        "all_heads": multitask_model is not None,
        "formats": [k for k in artifacts if k in report and "passed" in report[k]],
        "seconds": round(time.time() - start, 1),
    })
    checked = [report[k] for k in artifacts if "passed" in report[k]]
    checked += list(report.get("signatures", {}).values())
    checked += list(report.get("head_check", {}).values())
    checked += [report["text_signature"]] if "text_signature" in report else []
    report["passed"] = all(entry["passed"] for entry in checked)
    write_json(out / "parity.json", report)
    return report


def _convert(model, source, out, formats, tflite_quant, config, timings, preprocessing=None):
    """TFLite and ONNX from the SavedModel `source` (`serving_default`) of `model`; returns
    `(runners, artifacts, onnx_source)` and adds each conversion's seconds to `timings`."""
    from serving import onnx_export

    runners, artifacts = {}, {}
    if "tflite" in formats:
        representative = None
        for quant in TFLITE_QUANT:
            if quant not in tflite_quant:
                continue
            t0 = time.time()
            if quant == "int8" and representative is None:
                representative = representative_dataset(config, preprocessing=preprocessing)
            filename, key = TFLITE_VARIANTS[quant]
            path = export_tflite(source, out / "tflite" / filename, quant, representative,
                                 float_layers=float_layer_names(model))
            runners[key], artifacts[key] = tflite_runner(path), path
            timings[key] = round(time.time() - t0, 1)
    onnx_source = None
    if "onnx" in formats:
        t0 = time.time()
        path, onnx_source = onnx_export.export_onnx(model, source, out / "onnx" / "model.onnx")
        runners["onnx"], artifacts["onnx"] = onnx_export.session(path)[1], path
        timings["onnx"] = round(time.time() - t0, 1)
    return runners, artifacts, onnx_source


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--format", action="append", choices=FORMATS,
                        help=f"repeatable; default: {' '.join(DEFAULT_FORMATS)}")
    parser.add_argument("--tflite-quant", action="append", choices=TFLITE_QUANT,
                        help="TFLite variants (repeatable; default: float32)")
    parser.add_argument("--version", type=int, default=None, help="default: the next integer")
    parser.add_argument("--max-parity-examples", type=int, default=None)
    parser.add_argument("--tolerance", action="append", default=[], metavar="FORMAT.FIELD=VALUE",
                        help="override a parity tolerance, e.g. tflite_int8.max_accuracy_drop=0.02")
    parser.add_argument("--all-heads", action="store_true",
                        help="SavedModel from DIR/multitask.keras: every task head's "
                             "<task>_probabilities and <task>_class_id beside the main outputs "
                             "(TFLite and ONNX keep the main head)")
    args = parser.parse_args(argv)
    formats = args.format or list(DEFAULT_FORMATS)
    if args.tflite_quant and "tflite" not in formats:
        parser.error("--tflite-quant needs --format tflite")
    try:
        tolerances = parse_tolerances(args.tolerance)
    except ValueError as e:
        parser.error(str(e))

    from serving.onnx_export import OnnxExportError

    try:
        report = export(args.model_dir, formats, args.version, args.max_parity_examples,
                        tflite_quant=args.tflite_quant or ["float32"], tolerances=tolerances,
                        all_heads=args.all_heads)
    except OnnxExportError as e:
        print(f"[export] ONNX export FAILED: {e}", file=sys.stderr)
        return 1
    except FileNotFoundError as e:
        if not args.all_heads or MULTITASK_FILE not in str(e):
            raise
        print(f"[export] {e}", file=sys.stderr)
        return 2
    for key in report["formats"]:
        r = report[key]
        print(f"[export] {key}: {r.get('path')}  {r.get('bytes', 0):,} bytes  "
              f"max|diff|={r['max_abs_diff']:.2e} top1 agreement={r['top1_agreement']:.4f} "
              f"accuracy={r['accuracy']:.4f} (keras {report['keras']['accuracy']:.4f}) "
              f"{'OK' if r['passed'] else 'FAILED'}")
    for name, r in report.get("signatures", {}).items():
        print(f"[export] signature {name}: max|diff| vs serving_default="
              f"{r['max_abs_diff_vs_serving_default']:.2e} {'OK' if r['passed'] else 'FAILED'}")
    if "text_signature" in report:
        r = report["text_signature"]
        print(f"[export] signature {r['signature']} (raw strings): max|diff| vs serving_default="
              f"{r['max_abs_diff_vs_serving_default']:.2e} {'OK' if r['passed'] else 'FAILED'}")
    for head, r in report.get("head_check", {}).items():
        print(f"[export] head {head} ({', '.join(r['outputs'])}): max|diff| vs {r['reference']}="
              f"{r['max_abs_diff']:.2e} {'OK' if r['passed'] else 'FAILED'}")
    if report.get("all_heads"):
        print("[export] heads: " + "; ".join(
            f"{key} {', '.join(report[key]['heads'])}" for key in report["formats"]))
    if not report["passed"]:
        print("[export] parity FAILED; see parity.json", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
