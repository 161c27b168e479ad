"""Export a trained model directory to TF Serving (SavedModel), TFLite and ONNX, and check parity.

    python -m serving.export --model-dir DIR [--format savedmodel --format tflite --format onnx]
        [--tflite-quant float32 --tflite-quant float16 --tflite-quant dynamic --tflite-quant int8]
        [--all-heads] [--serving-base-path /models] [--tolerance FORMAT.FIELD=VALUE ...]

(default: `--format savedmodel --format tflite --tflite-quant float32`) writes

    DIR/export/savedmodel/models.config              model_config_list for tensorflow_model_server
    DIR/export/savedmodel/<model_name>/<version>/    saved_model.pb, variables/, and
        assets.extra/tf_serving_warmup_requests      PredictionLogs of real test examples
    DIR/export/tflite/model.tflite                   float32      } builtin ops only, signatures
    DIR/export/tflite/model_f16.tflite               float16      } `serving_default` and
    DIR/export/tflite/model_dynamic.tflite           dynamic range} `serve_<m..>_only`; inputs
    DIR/export/tflite/model_int8.tflite              int8         } and outputs stay float32
    DIR/export/tflite/assets/                        text/tabular models: vocabulary, tabular.json,
                                                     inputs.json for the client step (below)
    DIR/export/onnx/model.onnx                       opset 17 (tf2onnx, see serving/onnx_export.py)
    DIR/export/parity.json                           every check, and whether it was published

Verify before publishing: every artifact is written into `DIR/export/.tmp-<pid>-export/` and
checked there; only when every check passes are the TFLite and ONNX files renamed into place
and then the SavedModel version (last, so TF Serving sees a version only with everything it
came with), and `models.config` written. When a check fails, nothing is published: the staged
artifacts become `DIR/export/rejected/` (replacing the previous rejected export), the log and
`parity.json` say so (`"published": false`, `"rejected_dir"`), and the command exits 1. An error
during the export removes the staging directory. `.tmp-*` entries left by killed exports
(their pid no longer running) are removed at the start, each named in the log.

`models.config` names each model's `base_path` as the server will see it: by default
`/models/<model_name>`, the `tensorflow/serving` container's convention (the export may run on
another machine than the server, where this machine's path means nothing); `--serving-base-path
DIR` writes `DIR/<model_name>`, `--serving-base-path local` this machine's absolute paths.

The SavedModel's signatures (`serving_default`, `serve_raw`, `serve_examples`, one
`serve_<m..>_only` per subset of modalities: see `serving/serving_module.py`) are checked:
`serve_raw` and `serve_examples` take what a client has (`serving/raw_inputs.py`: image and
audio bytes, text strings, one input per table column with NaN for a missing number, the
presence flags) and must give the probabilities of `serving_default` on the training
pipeline's tensors and of Keras (within 1e-5) on real test rows, one with each modality
marked missing and one with a NaN number and an unseen category; each `serve_<m..>_only`
gives those of `serving_default` with the other modalities zeroed and flagged 0, in the
SavedModel (1e-5) and in each TFLite file (float32 1e-4, quantized within the format's
`max_abs_diff`: int8 calibrates each signature on its own inputs).

Text and tabular models are fed through the model directory's fitted preprocessing
(`vocab.txt` or a `keras_hub` encoder's `text_preprocessor/`, and `tabular.json`) in every
check; `serve_raw` holds the tokenizer and the lookup tables in its graph, and a text model
also gets `serve_text` (raw strings, other inputs as tensors; `parity.json`:
`text_signature`). TFLite takes tensors (no string ops): the export writes
`DIR/export/tflite/assets/` (the vocabulary, `tabular.json`, `inputs.json`) and checks the
documented client step, `serving.client.tflite_inputs(assets, raw)` then TFLite, against Keras
(`parity.json`: `tflite_client_step`). `assets.extra/raw_inputs.json` in the SavedModel
describes the raw inputs for `serving.server` (NaN / null accepted in numeric columns).

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

Every task exports (`config.task`; the above is `classification`). The other tasks' model
directories get their own signatures (`serving/tasks/`, one module per task; the tables are
there), written in the same layout with warm-up requests for every signature and published
the same way, verify-then-publish (`serving/task_export.py`):

| task                 | SavedModel signatures                  | TFLite (float32, builtin ops)   |
|----------------------|----------------------------------------|---------------------------------|
| `retrieval`          | `embed_<m>` (unit embedding) per       | all                             |
|                      | modality, `similarity` (per-pair       |                                 |
|                      | cosine and logit)                      |                                 |
| `captioning`         | `generate` (greedy decoding in the     | `generate_ids` (`generate`'s    |
|                      | graph: token ids, length, caption      | strings need TF string ops)     |
|                      | strings), `generate_ids`               |                                 |
| `av_sync`            | `serving_default` (offset logits and   | all                             |
|                      | probabilities, offset, sync logit and  |                                 |
|                      | in-sync probability)                   |                                 |
| `shared_autoencoder` | `serving_default`, `serve_<m>_only`    | all                             |
|                      | (shared code, every reconstruction)    |                                 |
| `invariance`         | `serving_default`, `serve_<m>_only`    | all                             |
|                      | (the shared head's probabilities,      |                                 |
|                      | class ids, shared embedding)           |                                 |

Their checks compare every output of every signature, in the SavedModel and in TFLite, with
Keras on real test rows (`--max-parity-examples`, default 16): floats within 1e-5 (SavedModel)
or 1e-4 (TFLite) of max(1, max |Keras|), integer and string outputs equal on every row.
TFLite is float32 only and ONNX is not written for them (exit status 2 when asked).

The jobs live in their own modules: `serving/savedmodel_export.py` (version directory, warm-up
requests, `models.config`), `serving/tflite_export.py` (conversion, quantization, LiteRT
runners), `serving/parity.py` (tolerances and every check), `serving/examples.py` (real rows
decoded like the training pipeline); this module is the command and the verify-then-publish
orchestration.

Serve the SavedModel with TF Serving (warm-up runs at load time):
    docker run -p 8501:8501 -p 8500:8500 -v $PWD/DIR/export/savedmodel:/models \
        tensorflow/serving --model_config_file=/models/models.config
"""

import argparse
import os
import pathlib
import shutil
import sys
import time

from mmkeras import errors
from mmkeras import features
from mmkeras import model_dir as model_dir_lib
from mmkeras.models import heads as heads_lib
from serving import examples
from serving import onnx_export
from serving import parity as parity_lib
from serving import raw_inputs
from serving import savedmodel_export
from serving import serving_module as sm
from serving import task_export
from serving import text_signature
from serving import tflite_assets
from serving import tflite_export
from serving.onnx_export import OnnxExportError

FORMATS = ("savedmodel", "tflite", "onnx")
DEFAULT_FORMATS = ("savedmodel", "tflite")
MODEL_FILE = model_dir_lib.MODEL_FILE
MULTITASK_FILE = model_dir_lib.MULTITASK_FILE  # every task head (`model.tasks`)
REJECTED_DIR = "rejected"  # the artifacts of the last export that failed its checks
CLASSIFICATION = "classification"  # the task of `serving_module` / `parity`; the others:
# `serving/tasks/` through `serving/task_export.py`

# This module is the command and its orchestration; the jobs live in `savedmodel_export`,
# `tflite_export`, `parity` and `examples`. Their names stay importable from here for the
# callers of the single-file version.
load_model_dir = model_dir_lib.load_model_dir
load_multitask_model = model_dir_lib.load_multitask_model
WARMUP_FILE = savedmodel_export.WARMUP_FILE
DEFAULT_SERVING_BASE_PATH = savedmodel_export.DEFAULT_SERVING_BASE_PATH
next_version = savedmodel_export.next_version
warmup_requests = savedmodel_export.warmup_requests
write_warmup = savedmodel_export.write_warmup
export_savedmodel = savedmodel_export.export_savedmodel
models_config_text = savedmodel_export.models_config_text
write_models_config = savedmodel_export.write_models_config
TFLITE_QUANT = tflite_export.TFLITE_QUANT
TFLITE_VARIANTS = tflite_export.TFLITE_VARIANTS
REPRESENTATIVE_EXAMPLES = tflite_export.REPRESENTATIVE_EXAMPLES
representative_dataset = tflite_export.representative_dataset
float_layer_names = tflite_export.float_layer_names
export_tflite = tflite_export.export_tflite
tflite_runner = tflite_export.tflite_runner
Tolerance = parity_lib.Tolerance
TOLERANCES = parity_lib.TOLERANCES
TOLERANCE = parity_lib.TOLERANCE
MIN_TOP1_AGREEMENT = parity_lib.MIN_TOP1_AGREEMENT
SIGNATURE_TOLERANCE = parity_lib.SIGNATURE_TOLERANCE
judge = parity_lib.judge
parity = parity_lib.parity
parse_tolerances = parity_lib.parse_tolerances
check_signatures = parity_lib.check_signatures
check_subset_signatures = parity_lib.check_subset_signatures
check_heads = parity_lib.check_heads
_rows = examples.rows
_batches = examples.batches
_pipeline_inputs = examples.pipeline_inputs


def _dir_bytes(path):
    return sum(p.stat().st_size for p in pathlib.Path(path).rglob("*") if p.is_file())


# The whole export.


def _export_folders(out):
    """The folders of `DIR/export` where a killed export may have left `.tmp-*` entries."""
    savedmodel_root = out / "savedmodel"
    models = [p for p in savedmodel_root.glob("*") if p.is_dir()]
    return [out, savedmodel_root, *models, out / "tflite", out / "onnx"]


def _log(message):
    print(f"[export] {message}", flush=True)


def export(model_dir, formats=DEFAULT_FORMATS, version=None, max_parity_examples=None,
           tflite_quant=("float32",), tolerances=None, all_heads=False,
           serving_base_path=DEFAULT_SERVING_BASE_PATH, log=_log):
    """Exports `model_dir` in `formats`, checks it, and publishes it only if every check passes.

    Every artifact is written into a staging directory `DIR/export/.tmp-<pid>-export/` and
    checked there (parity of every format, the SavedModel's signatures against
    `serving_default`, the missing-modality signatures, the heads). Only then are the TFLite
    and ONNX files renamed into `DIR/export/tflite|onnx/` and the SavedModel version into
    `DIR/export/savedmodel/<model_name>/<version>/` (last, so TF Serving sees a version only
    when everything it came with is in place), and `models.config` written. When a check
    fails nothing is published: the staging directory becomes `DIR/export/rejected/`
    (replacing the previous rejected export) and `parity.json` says so (`published`,
    `rejected_dir`). `.tmp-*` entries left by killed exports are removed first.

    Args:
        all_heads: export the SavedModel from `multitask.keras` with every task head's outputs
            (see the module docstring); TFLite and ONNX keep the main head only, converted
            from a temporary main-head SavedModel. `FileNotFoundError` when the directory has
            no `multitask.keras`.
        serving_base_path: the directory of the model directories as TF Serving sees it, for
            `models.config` (default `/models`; None: this machine's absolute paths).
        log: called with each progress line.

    Returns:
        The parity report (also written to `DIR/export/parity.json`).
    """
    model_dir = pathlib.Path(model_dir)
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError(f"Unknown export formats {sorted(unknown)}; choose from {FORMATS}.")
    unknown = set(tflite_quant) - set(TFLITE_QUANT)
    if unknown:
        raise ValueError(f"Unknown TFLite quantizations {sorted(unknown)}; choose from {TFLITE_QUANT}.")
    out = model_dir / model_dir_lib.EXPORT_DIR
    for path in model_dir_lib.remove_stale_temporaries(_export_folders(out)):
        log(f"removed {path}: left by an export that did not finish")
    task = model_dir_lib.load_config(model_dir).task
    if task != CLASSIFICATION:  # before anything is loaded or written
        task_export.check_options(task, formats, tflite_quant, all_heads)
    multitask_model = load_multitask_model(model_dir) if all_heads else None
    config, model = load_model_dir(model_dir)
    preprocessing = text_signature.load_preprocessing(model_dir, config)
    served = model if multitask_model is None else multitask_model  # what the SavedModel holds
    savedmodel_root = out / "savedmodel"
    base = savedmodel_root / config.model.name
    version = version or savedmodel_export.next_version(base)
    if (base / str(version)).exists():
        raise FileExistsError(f"{base / str(version)} exists: versions are immutable; pick "
                              "another --version.")
    stage = model_dir_lib.temporary_path(out / "export")
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    start = time.time()
    try:
        if task == CLASSIFICATION:
            report, staged = _export_staged(config, model, multitask_model, served, stage,
                                            version, formats, tflite_quant, tolerances,
                                            max_parity_examples, preprocessing, model_dir)
        else:
            report, staged = task_export.export_staged(
                config, model, model_dir, stage, version, formats,
                count=max_parity_examples or task_export.CHECK_EXAMPLES)
        if report["passed"]:
            final = _publish(staged, stage, out, base / str(version))
            savedmodel_export.write_models_config(savedmodel_root, serving_base_path)
            report["published"] = True
            log(f"checks passed; published version {version} at {final['savedmodel']}")
        else:
            rejected = out / REJECTED_DIR
            if rejected.exists():
                shutil.rmtree(rejected)
            os.rename(stage, rejected)
            final = {key: rejected / path.relative_to(stage) for key, path in staged.items()}
            report.update({"published": False, "rejected_dir": str(rejected)})
            log(f"checks FAILED: version {version} NOT published; its artifacts are in "
                f"{rejected} (previously published versions and files are unchanged)")
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
    heads = {}
    if task == CLASSIFICATION:
        main = sm.head_output_names(features.PROBABILITIES, heads_lib.target_of_model(served))
        heads = {key: [main[0]] for key in final}
        heads["savedmodel"] = sm.head_names(served)
    float_tflite = final.get("tflite")
    for key, path in final.items():
        entry = report.setdefault(key, {})
        entry["path"] = str(path)
        entry["bytes"] = _dir_bytes(path) if path.is_dir() else path.stat().st_size
        if heads:
            entry["heads"] = heads[key]
        if key.startswith("tflite") and key != "tflite_assets" and float_tflite is not None:
            entry["size_vs_tflite_float32"] = round(entry["bytes"] / float_tflite.stat().st_size, 4)
    report["savedmodel"].update({
        "version": int(version),
        "warmup_requests": str(final["savedmodel"] / "assets.extra" / WARMUP_FILE),
        "models_config": str(savedmodel_root / "models.config"),
        "serving_base_path": serving_base_path,
    })
    report["seconds"] = round(time.time() - start, 1)
    if not report["published"]:
        model_dir_lib.write_json(out / REJECTED_DIR / "parity.json", report)
    model_dir_lib.write_json(out / "parity.json", report)
    return report


def _export_staged(config, model, multitask_model, served, stage, version, formats,
                   tflite_quant, tolerances, max_parity_examples, preprocessing=None,
                   model_dir=None):
    """Writes every artifact under `stage` and checks it; returns `(report, {key: path})`.

    `preprocessing` (the model directory's fitted tokenizer / tabular normaliser, None when
    the model needs none) makes every check feed what `serving_default` takes (token ids,
    normalised vectors), and for text models adds the raw-string `serve_text` signature."""
    kinds = features.modality_types(config.model.modalities, config.data.modality_types)
    t0 = time.time()
    savedmodel_dir = savedmodel_export.export_savedmodel(
        served, stage / "savedmodel", version,
        warmup_examples=examples.warmup_examples(config, preprocessing=preprocessing),
        model_name=config.model.name, preprocessing=preprocessing,
        wav_rate=config.model.audio_encoder.serve_wav_rate,
        image_resize=config.data.image_resize, image_fill=config.data.image_fill,
        kinds=kinds,
    )
    timings = {"savedmodel": round(time.time() - t0, 1)}
    # TFLite and ONNX carry the main head: with --all-heads they are converted from a
    # SavedModel of `model.keras` (the tensor signatures of a default export).
    convert_source = savedmodel_dir
    if multitask_model is not None and {"tflite", "onnx"} & set(formats):
        convert_source = stage / "main-head"
        sm.build_archive(model, sm.tensor_signatures(model)).write_out(
            str(convert_source), verbose=False)
    runners, artifacts, onnx_source = _convert(
        model, convert_source, stage, formats, tflite_quant, config, timings, preprocessing)
    if convert_source != savedmodel_dir:
        shutil.rmtree(convert_source, ignore_errors=True)
    raw = sm.raw_features(served, preprocessing, kinds)
    if "tflite" in artifacts:
        assets = tflite_assets.write_assets(stage / "tflite", model_dir,
                                            config, raw, sm.input_specs(model))
        if assets is not None:
            artifacts["tflite_assets"] = assets
    artifacts = {"savedmodel": savedmodel_dir, **artifacts}

    report = parity_lib.parity(
        config, model,
        savedmodel_dir=savedmodel_dir if "savedmodel" in formats else None,
        max_examples=max_parity_examples, runners=runners, tolerances=tolerances,
        preprocessing=preprocessing,
    )
    signatures = list(sm.supported_signatures(served, preprocessing, kinds))
    if "savedmodel" in formats and sm.SERVE_RAW in signatures:
        report["signatures"] = parity_lib.check_signatures(
            config, model, savedmodel_dir, raw, preprocessing)
    if "tflite_assets" in artifacts:
        report["tflite_client_step"] = parity_lib.check_tflite_client_step(
            config, model, artifacts["tflite"], artifacts["tflite_assets"], raw, preprocessing)
    if sm.modality_subsets(model):
        tflite_paths = {key: path for key, path in artifacts.items()
                        if key.startswith("tflite") and key != "tflite_assets"}
        report["subset_signatures"] = parity_lib.check_subset_signatures(
            config, model, savedmodel_dir, tflite_paths, tolerances,
            preprocessing=preprocessing)
    if multitask_model is not None:
        report["head_check"] = parity_lib.check_heads(
            config, savedmodel_dir, model, multitask_model, preprocessing=preprocessing)
    if text_signature.text_only(preprocessing) is not None:
        rows = examples.rows(config, "test", examples.SIGNATURE_CHECK_EXAMPLES)
        modalities = sorted(config.model.modalities)
        id_inputs = examples.pipeline_inputs(rows, config, modalities, preprocessing)
        strings = examples.pipeline_inputs(rows, config, modalities)
        strings = {name: strings[name] for name in preprocessing.text_features}
        report["text_signature"] = text_signature.check_text_signature(
            savedmodel_dir, dict(id_inputs, **strings),
            id_inputs, parity_lib.SIGNATURE_TOLERANCE)
    for key, seconds in timings.items():
        report.setdefault(key, {})["export_seconds"] = seconds
    if text_signature.text_only(preprocessing) is not None:
        signatures.append(text_signature.SERVE_TEXT)
    report["savedmodel"].update({
        "signatures": signatures,
        "outputs": sm.output_names(served),
        "source": MULTITASK_FILE if multitask_model is not None else MODEL_FILE,
    })
    if onnx_source is not None:
        report["onnx"]["source"] = onnx_source
    report.update({
        "model_name": config.model.name,
        "all_heads": multitask_model is not None,
        "formats": [k for k in artifacts if k in report and "passed" in report[k]],
        "raw_inputs": raw_inputs.describe(raw) if raw is not None else None,
    })
    checked = [report[k] for k in artifacts if "passed" in report.get(k, {})]
    checked += list(report.get("signatures", {}).values())
    checked += list(report.get("subset_signatures", {}).values())
    checked += list(report.get("head_check", {}).values())
    checked += [report["text_signature"]] if "text_signature" in report else []
    checked += [report["tflite_client_step"]] if "tflite_client_step" in report else []
    report["passed"] = all(entry["passed"] for entry in checked)
    return report, artifacts


def _publish(staged, stage, out, version_dir):
    """Renames the checked artifacts into place (the SavedModel version last); returns
    `{key: final path}`."""
    final = {}
    for key, path in staged.items():
        if key == "savedmodel":
            continue
        target = out / path.relative_to(stage)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_dir():  # the previous export's TFLite assets
            shutil.rmtree(target)
        os.replace(path, target)
        final[key] = target
    version_dir.parent.mkdir(parents=True, exist_ok=True)
    os.rename(staged["savedmodel"], version_dir)  # fails if the version appeared meanwhile
    final["savedmodel"] = version_dir
    return dict(sorted(final.items(), key=lambda item: list(staged).index(item[0])))


def _convert(model, source, out, formats, tflite_quant, config, timings, preprocessing=None):
    """TFLite (`serving_default` and the `serve_<m..>_only` signatures) and ONNX
    (`serving_default`) from the SavedModel `source` of `model`; returns
    `(runners, artifacts, onnx_source)` and adds each conversion's seconds to `timings`."""
    runners, artifacts = {}, {}
    if "tflite" in formats:
        representative = None
        for quant in TFLITE_QUANT:
            if quant not in tflite_quant:
                continue
            t0 = time.time()
            if quant == "int8" and representative is None:
                representative = tflite_export.representative_dataset(
                    config, preprocessing=preprocessing)
            filename, key = tflite_export.TFLITE_VARIANTS[quant]
            path = tflite_export.export_tflite(
                source, out / "tflite" / filename, quant, representative,
                float_layers=tflite_export.float_layer_names(model),
                signatures=sm.tensor_signatures(model))
            runners[key], artifacts[key] = tflite_export.tflite_runner(path), path
            timings[key] = round(time.time() - t0, 1)
    onnx_source = None
    if "onnx" in formats:
        t0 = time.time()
        path, onnx_source = onnx_export.export_onnx(model, source, out / "onnx" / "model.onnx")
        runners["onnx"], artifacts["onnx"] = onnx_export.session(path)[1], path
        timings["onnx"] = round(time.time() - t0, 1)
    return runners, artifacts, onnx_source


@errors.command_line
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
    parser.add_argument("--serving-base-path", default=DEFAULT_SERVING_BASE_PATH,
                        help="the directory holding the model directories as TF Serving sees "
                             "it, for models.config (default: %(default)s, the tensorflow/serving "
                             "container's; 'local': this machine's absolute paths)")
    errors.add_flags(parser)
    args = parser.parse_args(argv)
    formats = args.format or list(DEFAULT_FORMATS)
    if args.tflite_quant and "tflite" not in formats:
        parser.error("--tflite-quant needs --format tflite")
    try:
        tolerances = parity_lib.parse_tolerances(args.tolerance)
    except ValueError as e:
        parser.error(str(e))

    try:
        report = export(args.model_dir, formats, args.version, args.max_parity_examples,
                        tflite_quant=args.tflite_quant or ["float32"], tolerances=tolerances,
                        all_heads=args.all_heads,
                        serving_base_path=None if args.serving_base_path == "local"
                        else args.serving_base_path)
    except OnnxExportError as e:
        print(f"[export] ONNX export FAILED: {e}", file=sys.stderr)
        return 1
    except FileNotFoundError as e:
        if not args.all_heads or MULTITASK_FILE not in str(e):
            raise
        print(f"[export] {e}", file=sys.stderr)
        return 2
    if report.get("task", CLASSIFICATION) != CLASSIFICATION:
        for line in task_export.summary_lines(report):
            print(f"[export] {line}")
        if not report["passed"]:
            print(f"[export] checks FAILED; nothing published (artifacts in "
                  f"{report.get('rejected_dir')}); see parity.json", file=sys.stderr)
            return 1
        print(f"[export] task {report['task']}: published {report['savedmodel']['path']}")
        return 0
    for key in report["formats"]:
        r = report[key]
        print(f"[export] {key}: {r.get('path')}  {r.get('bytes', 0):,} bytes  "
              f"max|diff|={r['max_abs_diff']:.2e} top1 agreement={r['top1_agreement']:.4f} "
              f"accuracy={r['accuracy']:.4f} (keras {report['keras']['accuracy']:.4f}) "
              f"{'OK' if r['passed'] else 'FAILED'}")
    for name, r in report.get("signatures", {}).items():
        print(f"[export] signature {name} (raw inputs {', '.join(r['inputs'])}; "
              f"{r['nan_cells']} NaN cell(s)): max|diff| vs serving_default="
              f"{r['max_abs_diff_vs_serving_default']:.2e}, vs keras="
              f"{r['max_abs_diff_vs_keras']:.2e} {'OK' if r['passed'] else 'FAILED'}")
    if "tflite_client_step" in report:
        r = report["tflite_client_step"]
        print(f"[export] tflite + client step (serving.client.tflite_inputs on raw inputs, "
              f"assets in tflite/assets/): max|diff| vs keras={r['max_abs_diff_vs_keras']:.2e} "
              f"{'OK' if r['passed'] else 'FAILED'}")
    for name, r in report.get("subset_signatures", {}).items():
        diffs = " ".join(f"{k}={v:.2e}" for k, v in r["max_abs_diff"].items())
        print(f"[export] signature {name}: max|diff| vs serving_default with "
              f"{', '.join(m for m in r['modalities'])} present, the rest missing: {diffs} "
              f"{'OK' if r['passed'] else 'FAILED'}")
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
        print(f"[export] checks FAILED; nothing published (artifacts in "
              f"{report.get('rejected_dir')}); see parity.json", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
