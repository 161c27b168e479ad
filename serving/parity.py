"""The export's checks: every format against Keras on the test split (`parity`, judged by
`TOLERANCES`), the SavedModel's signatures against `serving_default` (`check_signatures`,
`check_subset_signatures`) and each head against its Keras model (`check_heads`).
"""

import dataclasses

from ai_edge_litert.interpreter import Interpreter
import numpy as np
import tensorflow as tf

from mmkeras import features
from mmkeras import model_dir as model_dir_lib
from mmkeras.data import example_schema
from mmkeras.models import heads
from serving import client
from serving import examples
from serving import serving_module as sm
from serving import tflite_export

SIGNATURE_TOLERANCE = 1e-5


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
# Kept for callers of the first version of the export module.
TOLERANCE = {name: t.max_abs_diff for name, t in TOLERANCES.items()}
MIN_TOP1_AGREEMENT = TOLERANCES["savedmodel"].min_top1_agreement


def _main_output(values, target):
    """A Keras model's main output as the signatures serve it (regression: `[B]`)."""
    if isinstance(values, dict):
        values = values[features.PROBABILITIES]
    values = np.asarray(values)
    return values.reshape(-1) if target == "regression" else values


def _decisions(values, target):
    """What a client of a classifier acts on: the class (argmax), or the label set
    (multi-label: at least `MULTI_LABEL_THRESHOLD`). Regression has none (callers judge its
    values by their difference)."""
    if target == "multilabel":
        return values >= sm.MULTI_LABEL_THRESHOLD
    return values.argmax(-1)


def _agreement(values, reference, target):
    """Fraction of examples decided as Keras decides them: the same class, the same label
    set; for regression None (judged by `max_abs_diff_per_std`)."""
    if target == "regression":
        return None
    same = _decisions(values, target) == _decisions(reference, target)
    return float(same.reshape(len(same), -1).all(-1).mean())


def _accuracy(values, labels, target):
    """Accuracy (multi-label: exact label set); None for regression."""
    if target == "regression":
        return None
    decided = _decisions(values, target)
    if target == "multilabel":
        return float((decided == (np.asarray(labels) >= 0.5)).all(-1).mean())
    return float((decided == np.asarray(labels).reshape(-1)).mean())


def judge(entry, keras_accuracy, tolerance):
    """Adds the tolerance and `passed` to a parity entry (`max_abs_diff`, `top1_agreement`,
    `accuracy`; a regression entry: `max_abs_diff_per_std`, no agreement or accuracy);
    returns the entry."""
    regression = entry["accuracy"] is None
    drop = None if regression else keras_accuracy - entry["accuracy"]
    checks = [] if regression else [entry["top1_agreement"] >= tolerance.min_top1_agreement]
    if tolerance.max_abs_diff is not None:
        checks.append(entry["max_abs_diff_per_std" if regression else "max_abs_diff"]
                      <= tolerance.max_abs_diff)
    if tolerance.max_accuracy_drop is not None and not regression:
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
    tolerances = dict(TOLERANCES, **(tolerances or {}))
    runners = dict(runners or {})
    if savedmodel_dir is not None:
        signature = tf.saved_model.load(str(savedmodel_dir)).signatures["serving_default"]
        runners["savedmodel"] = lambda x: {
            k: v.numpy() for k, v in signature(**{k: tf.constant(v) for k, v in x.items()}).items()
        }
    if tflite_path is not None:
        runners["tflite"] = tflite_export.tflite_runner(tflite_path)

    target = heads.target_of_model(model)
    main = sm.head_output_names(features.PROBABILITIES, target)[0]
    keras_out, labels, outs = [], [], {name: [] for name in runners}
    for x, y in examples.batches(config, max_examples, preprocessing=preprocessing):
        keras_out.append(_main_output(model(x, training=False), target))
        labels.append(y)
        for name, run in runners.items():
            outs[name].append(np.asarray(run(x)[main]))
    keras_out, labels = np.concatenate(keras_out), np.concatenate(labels)
    keras_accuracy = _accuracy(keras_out, labels, target)
    result = {"examples": int(len(labels)), "target": target,
              "keras": {"accuracy": keras_accuracy}}
    for name, chunks in outs.items():
        values = np.concatenate(chunks)
        entry = {
            "max_abs_diff": float(np.abs(values - keras_out).max()),
            "top1_agreement": _agreement(values, keras_out, target),
            "accuracy": _accuracy(values, labels, target),
        }
        if target == "regression":  # judged in units of the predictions' spread
            entry["max_abs_diff_per_std"] = entry["max_abs_diff"] / max(
                float(keras_out.std()), 1e-6)
        result[name] = judge(entry, keras_accuracy, tolerances[name])
    return result


def check_signatures(config, model, savedmodel_dir, raw, preprocessing=None,
                     count=examples.SIGNATURE_CHECK_EXAMPLES, tolerance=SIGNATURE_TOLERANCE):
    """`serve_raw` and `serve_examples` on what a client has vs the training pipeline.

    On real test rows (`examples.signature_check_rows`: a modality marked missing in rows 1
    and 2, a NaN number and an unseen category in a tabular row), `serve_raw` gets the files'
    bytes, the raw strings, the table cells (`examples.raw_batch`) and `serve_examples` the
    same values as `tf.train.Example`s (`examples.raw_examples`: missing values left out,
    flags explicit in even rows and inferred in odd ones). Both are compared with
    `serving_default` on the pipeline's tensors (decoded, tokenized, normalised with the
    fitted `preprocessing`) and with the Keras model on those tensors: every head's
    probabilities within `tolerance`, the same class ids.
    """
    columns = examples.signature_check_rows(config, count)
    modalities = sorted(config.model.modalities)
    x = examples.pipeline_inputs(columns, config, modalities, preprocessing)
    x = {k: np.array(v) for k, v in x.items()}
    batch = examples.raw_batch(columns, raw)
    converted = examples.wav_for_other_audio(batch, x, raw, sm.audio_sample_rate(model))
    x = {k: tf.constant(v) for k, v in x.items()}
    signatures = tf.saved_model.load(str(savedmodel_dir)).signatures
    reference = {k: v.numpy() for k, v in signatures[sm.SERVING_DEFAULT](**x).items()}
    target = heads.target_of_model(model)
    main = sm.head_output_names(features.PROBABILITIES, target)[0]
    keras_out = _main_output(model(x, training=False), target)
    serialized = [e.SerializeToString() for e in examples.raw_examples(batch, raw)]
    outputs = {
        sm.SERVE_RAW: signatures[sm.SERVE_RAW](
            **{k: tf.constant(v) for k, v in batch.items()}),
        sm.SERVE_EXAMPLES: signatures[sm.SERVE_EXAMPLES](
            **{example_schema.SERIALIZED: tf.constant(serialized)}),
    }
    report = {}
    for name, out in outputs.items():
        diff, same_class = sm.outputs_agree(out, reference)
        vs_keras = float(np.abs(out[main].numpy() - keras_out).max())
        report[name] = {"examples": len(serialized), "inputs": sorted(batch),
                        "max_abs_diff_vs_serving_default": diff,
                        "max_abs_diff_vs_keras": vs_keras, "tolerance": tolerance,
                        "nan_cells": examples.nan_cells(batch, raw),
                        "audio_files_sent_as_wav": converted,
                        "passed": bool(diff <= tolerance and vs_keras <= tolerance
                                       and same_class)}
    return report


def check_tflite_client_step(config, model, tflite_path, assets_dir, raw, preprocessing=None,
                             count=examples.SIGNATURE_CHECK_EXAMPLES,
                             tolerance=TOLERANCES["tflite"].max_abs_diff):
    """The TFLite model on `serving.client.tflite_inputs` of raw values (the documented client
    step: numpy tokenizer, tabular normalisation, PIL / wave decoding) vs Keras on the
    pipeline's tensors of the same rows (those of `check_signatures`)."""
    columns = examples.signature_check_rows(config, count)
    x = examples.pipeline_inputs(columns, config, sorted(config.model.modalities), preprocessing)
    x = {k: np.array(v) for k, v in x.items()}
    batch = examples.raw_batch(columns, raw)
    examples.wav_for_other_audio(batch, x, raw, sm.audio_sample_rate(model))
    if config.data.image_resize is not None:  # the client fits images before calling TFLite
        examples.fitted_png_for_client(batch, x, raw)
    target = heads.target_of_model(model)
    expected = _main_output(model(x, training=False), target)
    fed = client.tflite_inputs(assets_dir, batch)
    got = np.asarray(tflite_export.tflite_runner(tflite_path)(fed)[
        sm.head_output_names(features.PROBABILITIES, target)[0]])
    diff = float(np.abs(got - expected).max())
    ids_equal = {k: bool(np.array_equal(np.asarray(fed[k]), np.asarray(x[k])))
                 for k in fed if np.asarray(fed[k]).dtype.kind in "iu"}
    return {"examples": int(len(expected)), "max_abs_diff_vs_keras": diff,
            "token_ids_equal_pipeline": ids_equal, "tolerance": tolerance,
            "nan_cells": examples.nan_cells(batch, raw),
            "passed": bool(diff <= tolerance and all(ids_equal.values())
                           and (target == "regression"
                                or np.array_equal(_decisions(got, target),
                                                  _decisions(expected, target))))}


def subset_reference_inputs(x, subset):
    """What a `serve_<subset>_only` signature computes on `x`, as `serving_default` inputs:
    the subset's data with flag 1, every other modality zeros with flag 0."""
    result = {}
    for name, value in x.items():
        value = np.asarray(value)
        if name.endswith(features.PRESENT_SUFFIX):
            present = name[:-len(features.PRESENT_SUFFIX)] in subset
            result[name] = np.full_like(value, 1.0 if present else 0.0)
        else:
            result[name] = value if name in subset else np.zeros_like(value)
    return result


def check_subset_signatures(config, model, savedmodel_dir, tflite_paths=None, tolerances=None,
                            count=examples.SIGNATURE_CHECK_EXAMPLES, preprocessing=None):
    """Each `serve_<m..>_only` signature vs `serving_default` with the other modalities set
    missing (zeros, flag 0; `subset_reference_inputs`), on real test rows, in the SavedModel
    and in each TFLite file (`{parity key: path}`, each compared with its own
    `serving_default`).

    Tolerances: `SIGNATURE_TOLERANCE` for the SavedModel, the format's `max_abs_diff` for
    TFLite (`tolerances`, default `TOLERANCES`; quantized models calibrate each signature on
    its own inputs, so their subset signatures move within that format's bound); the class
    ids must agree in the SavedModel and float32 TFLite.

    Returns:
        `{signature: {"modalities", "examples", "max_abs_diff": {format: diff}, "passed"}}`
        for the signatures `serving_module.modality_subsets(model)` names.
    """
    tolerances = dict(TOLERANCES, **(tolerances or {}))
    columns = examples.signature_check_rows(config, count)
    x = {k: v.numpy() for k, v in
         examples.pipeline_inputs(columns, config, sorted(config.model.modalities),
                                  preprocessing).items()}
    loaded = tf.saved_model.load(str(savedmodel_dir))
    signatures = loaded.signatures
    runners = {"savedmodel": (
        lambda name, inputs: {k: v.numpy() for k, v in signatures[name](
            **{k: tf.constant(v) for k, v in inputs.items()}).items()},
        SIGNATURE_TOLERANCE, True)}
    for key, path in (tflite_paths or {}).items():
        interpreter = Interpreter(model_path=str(path))
        runners[key] = (
            lambda name, inputs, interpreter=interpreter:
                interpreter.get_signature_runner(name)(**inputs),
            tolerances[key].max_abs_diff, key == "tflite")
    report = {}
    for name, subset in sm.modality_subsets(model).items():
        reference_inputs = subset_reference_inputs(x, subset)
        diffs, passed = {}, True
        for key, (run, tolerance, same_class) in runners.items():
            expected = run(sm.SERVING_DEFAULT, reference_inputs)
            got = run(name, {m: x[m] for m in subset})
            diffs[key], same = sm.outputs_agree(got, expected)
            if tolerance is not None:
                passed &= diffs[key] <= tolerance
            if same_class:
                passed &= same
        report[name] = {"modalities": subset, "examples": int(len(columns["label"])),
                        "max_abs_diff": diffs, "passed": bool(passed)}
    return report


def check_heads(config, savedmodel_dir, model, multitask_model,
                count=examples.SIGNATURE_CHECK_EXAMPLES, tolerance=SIGNATURE_TOLERANCE,
                preprocessing=None):
    """An `--all-heads` SavedModel's `serving_default` vs Keras on real test rows, per head.

    The main `probabilities` are compared with `model` (`model.keras`, what the other formats
    and parity use) and each `<task>_probabilities` with `multitask_model`'s output `<task>`;
    each head's `class_id` must be the argmax of the Keras probabilities. The rows are those of
    `check_signatures` (two with a modality marked missing).

    Returns:
        `{head: {"reference", "examples", "max_abs_diff", "tolerance", "passed"}}`.
    """
    columns = examples.signature_check_rows(config, count)
    x = examples.pipeline_inputs(columns, config, sorted(config.model.modalities),
                                 preprocessing)
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
            "reference": (model_dir_lib.MODEL_FILE if head == features.PROBABILITIES
                          else model_dir_lib.MULTITASK_FILE),
            "outputs": [probabilities, class_id], "examples": int(len(expected)),
            "max_abs_diff": diff, "tolerance": tolerance,
            "passed": bool(diff <= tolerance and same_class),
        }
    return report


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
