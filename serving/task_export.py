"""Export and check a model directory of a task other than classification.

`serving.export` calls `export_staged` for every `config.task` but `classification`, inside
its verify-then-publish staging: the SavedModel version (the task's signatures from
`serving/tasks/`, with warm-up requests for each signature on real test rows) and, when asked
(`--format tflite`), one float32 TFLite file holding the signatures that convert with builtin
ops; then every signature of every artifact is compared with the Keras reference on real
test rows (`serving.tasks.base.check`: floats within 1e-5 for the SavedModel and 1e-4 for
TFLite, relative to max(1, max |reference|); integer and string outputs equal on every row).

Only float32 TFLite and no ONNX for these tasks: the quantized variants' tolerances are
judged on class decisions (`serving/parity.py`), which these outputs do not have, and the
ONNX path (`serving/onnx_export.py`) converts `serving_default` of a classifier.
"""

import time

from mmkeras import errors
from serving import savedmodel_export
from serving import tasks
from serving import tflite_export
from serving.tasks import base

TFLITE_FILE = "model.tflite"
CHECK_EXAMPLES = base.CHECK_EXAMPLES  # real test rows each signature is checked on


class TaskExportError(errors.UserError, ValueError):
    """An export option the model directory's task does not support (exit status 2)."""


def check_options(task, formats, tflite_quant, all_heads):
    """ValueError for the options these tasks do not support (before anything is written)."""
    if "onnx" in formats:
        raise TaskExportError(f"ONNX export is for classification models; this model directory's "
                         f"task is {task!r}: use --format savedmodel/tflite.")
    extra = sorted(set(tflite_quant) - {"float32"})
    if "tflite" in formats and extra:
        raise TaskExportError(f"TFLite quantization {extra} is for classification models (judged on "
                         f"class decisions); task {task!r} exports float32 TFLite only.")
    if all_heads:
        raise TaskExportError(f"--all-heads is for multi-task classifiers; task {task!r} "
                         "has no auxiliary heads.")


def export_staged(config, model, model_dir, stage, version, formats, count=CHECK_EXAMPLES):
    """Writes the SavedModel (and TFLite) of `model` under `stage` and checks them.

    Returns:
        `(report, {artifact key: path})`; `report["passed"]` says whether every check passed.
    """
    serving = tasks.task_serving(config, model, model_dir)
    endpoints = serving.endpoints()
    t0 = time.time()
    warmup = serving.warmup_inputs()  # first: it runs a text tokenizer once, which builds it
    savedmodel_dir = savedmodel_export.export_savedmodel(
        model, stage / "savedmodel", version, model_name=config.model.name,
        archive=base.build_archive(serving), warmup_by_signature=warmup)
    timings = {"savedmodel": round(time.time() - t0, 1)}
    artifacts = {"savedmodel": savedmodel_dir}
    convertible = [e.name for e in endpoints if e.tflite]
    tflite_path = None
    if "tflite" in formats and convertible:
        t0 = time.time()
        tflite_path = tflite_export.export_tflite(
            savedmodel_dir, stage / "tflite" / TFLITE_FILE, "float32", signatures=convertible)
        artifacts["tflite"] = tflite_path
        timings["tflite"] = round(time.time() - t0, 1)
    checks = base.check(serving, savedmodel_dir, tflite_path, count)
    report = {"task": config.task, "model_name": config.model.name,
              "examples": checks["examples"]}
    for key in artifacts:
        signatures = checks[key]
        report[key] = {"signatures": signatures, "export_seconds": timings[key],
                       "passed": all(entry["passed"] for entry in signatures.values())}
    if "tflite" in formats:
        report.setdefault("tflite", {})["not_converted"] = {
            e.name: e.why_not_tflite for e in endpoints if not e.tflite}
    report["savedmodel"].update({
        "outputs": {name: sorted(entry["outputs"])
                    for name, entry in report["savedmodel"]["signatures"].items()},
        "source": "model.keras",
    })
    report["formats"] = list(artifacts)
    report["passed"] = all(report[key]["passed"] for key in artifacts)
    return report, artifacts


def summary_lines(report):
    """One line per artifact and signature: its outputs' differences and agreement."""
    lines = []
    for key in report["formats"]:
        for name, entry in report[key]["signatures"].items():
            figures = []
            for output, r in entry["outputs"].items():
                if "max_abs_diff" in r:
                    figures.append(f"{output} max|diff|={r['max_abs_diff']:.2e}")
                elif "agreement" in r:
                    figures.append(f"{output} agreement={r['agreement']:.4f}")
                else:
                    figures.append(f"{output} shape {r.get('shape')} != {r.get('expected_shape')}")
            lines.append(f"{key} {name}: {'; '.join(figures)} vs Keras on "
                         f"{report['examples']} test rows {'OK' if entry['passed'] else 'FAILED'}")
    for name, why in report.get("tflite", {}).get("not_converted", {}).items():
        lines.append(f"tflite: signature {name} not converted ({why})")
    return lines
