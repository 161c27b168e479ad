"""The TF Serving artifacts: a SavedModel version with warm-up requests, and `models.config`.

Layout: `<base>/<model_name>/<version>/` (`saved_model.pb`, `variables/`,
`assets.extra/tf_serving_warmup_requests`), `<base>/models.config`.
"""

import os
import pathlib
import shutil

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_log_pb2

from mmkeras import model_dir as model_dir_lib
from serving import raw_inputs
from serving import text_signature
from serving.serving_module import SERVING_DEFAULT
from serving.serving_module import build_archive
from serving.serving_module import raw_features

WARMUP_FILE = "tf_serving_warmup_requests"
# Where TF Serving finds the models in `models.config`: the `tensorflow/serving` container's
# convention (`-v .../savedmodel/<name>:/models/<name>`); `--serving-base-path` changes it.
DEFAULT_SERVING_BASE_PATH = "/models"


def next_version(base):
    versions = [int(p.name) for p in pathlib.Path(base).glob("*") if p.name.isdigit()]
    return max(versions, default=0) + 1


def warmup_requests(model_name, examples, signature_name=None):
    """`PredictionLog`s for one signature (default `serving_default`): one per example
    (batch 1), then all at once.

    Args:
        model_name: the TF Serving model name.
        examples: `{input_name: np.ndarray}` with a leading batch dimension.
        signature_name: the signature the requests call.
    """
    count = len(next(iter(examples.values())))
    batches = [slice(i, i + 1) for i in range(count)] + [slice(0, count)]
    logs = []
    for rows in batches:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model_name
        request.model_spec.signature_name = signature_name or SERVING_DEFAULT
        for name, value in sorted(examples.items()):
            request.inputs[name].CopyFrom(tf.make_tensor_proto(np.asarray(value[rows])))
        logs.append(prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request)
        ))
    return logs


def write_warmup(version_dir, model_name, examples=None, by_signature=None):
    """Writes `<version_dir>/assets.extra/tf_serving_warmup_requests` (a TFRecord file):
    requests for `serving_default` on `examples`, and for each signature of `by_signature`
    (`{signature: {input: np.ndarray}}`) on its examples."""
    logs = warmup_requests(model_name, examples) if examples is not None else []
    for signature, inputs in (by_signature or {}).items():
        logs += warmup_requests(model_name, inputs, signature)
    path = pathlib.Path(version_dir) / "assets.extra" / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for log in logs:
            writer.write(log.SerializeToString())
    return path


def export_savedmodel(model, base, version=None, warmup_examples=None, model_name=None,
                      preprocessing=None, archive=None, warmup_by_signature=None,
                      wav_rate="resample", image_resize=None, image_fill=0.0, kinds=None):
    """Writes `<base>/<version>/` (with warm-up requests) atomically; returns its path.

    `preprocessing` (the model directory's fitted `Preprocessing`, for text and tabular
    models) puts the tokenizer and the tabular lookups into `serve_raw` and `serve_examples`
    (`serving/raw_inputs.py`; their description goes to `assets.extra/raw_inputs.json`) and,
    for a text model, adds `serve_text` (`serving/text_signature.py`). `archive` (an
    `ExportArchive`) replaces the classification signatures of `build_archive(model)` (the
    other tasks: `serving/tasks/`); `warmup_by_signature` `{signature: inputs}` adds warm-up
    requests for other signatures than `serving_default`. `wav_rate`: what `serve_raw` /
    `serve_examples` do with a WAV at another rate, `image_resize` / `image_fill` how they fit
    an image of another size (`serving_module.build_archive`); `kinds` the types of features
    not named after their type (`data.modality_types`).

    Everything is written into `<base>/.tmp-<pid>-version-<version>` and renamed at the end;
    on any error the temporary directory is removed and no version appears. (`export` calls
    it on a staging directory and publishes the version only after every check passed.)
    """
    base = pathlib.Path(base)
    base.mkdir(parents=True, exist_ok=True)
    version = version or next_version(base)
    final = base / str(version)
    if final.exists():
        raise FileExistsError(f"{final} exists: versions are immutable; pick another --version.")
    tmp = model_dir_lib.temporary_path(final, tag=f"version-{version}")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        raw = None
        if archive is None:
            archive = build_archive(model, preprocessing=preprocessing, kinds=kinds,
                                    wav_rate=wav_rate, image_resize=image_resize,
                                    image_fill=image_fill)
            if text_signature.text_only(preprocessing) is not None:
                text_signature.add_text_endpoint(archive, model, preprocessing)
            raw = raw_features(model, preprocessing, kinds)
        archive.write_out(str(tmp), verbose=False)
        if raw is not None:
            model_dir_lib.write_json(tmp / "assets.extra" / raw_inputs.RAW_INPUTS_FILE,
                                     raw_inputs.describe(raw))
        if warmup_examples is not None or warmup_by_signature:
            write_warmup(tmp, model_name or base.name, warmup_examples, warmup_by_signature)
        os.rename(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def models_config_text(savedmodel_root, serving_base_path=DEFAULT_SERVING_BASE_PATH):
    """A `ModelServerConfig` text proto listing every model directory under the root.

    Args:
        savedmodel_root: the local directory holding `<model_name>/<version>/`.
        serving_base_path: the directory holding the model directories as the server sees it:
            each model's `base_path` is `<serving_base_path>/<model_name>` (default `/models`,
            the `tensorflow/serving` container's). None: the local absolute paths.
    """
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
            f'    base_path: "{_served_path(model_dir, serving_base_path)}"\n'
            '    model_platform: "tensorflow"\n'
            "  }\n"
        )
    return "model_config_list {\n" + "".join(entries) + "}\n"


def _served_path(model_dir, serving_base_path):
    if serving_base_path is None:
        return str(model_dir)
    return serving_base_path.rstrip("/") + "/" + model_dir.name


def write_models_config(savedmodel_root, serving_base_path=DEFAULT_SERVING_BASE_PATH):
    """Writes `<root>/models.config` (for `tensorflow_model_server --model_config_file`)."""
    return model_dir_lib.write_text(pathlib.Path(savedmodel_root) / "models.config",
                                    models_config_text(savedmodel_root, serving_base_path))
