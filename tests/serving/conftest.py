"""Fixtures for the serving tests: a real export of a tiny trained fusion model, and live servers.

`exported_model_dir` trains the AV-MNIST early-fusion model on the small real slice
(in-process, tiny encoders; the epochs and learning rate are explained in
tests/serving/export_test.py) and exports it in every format with `python -m serving.export`,
exactly as a user does: a SavedModel with presence flags and its signatures (`serving_default`,
`serve_raw`, `serve_examples`, `serve_<m>_only`), the TFLite variants and ONNX. It is built once
per session and shared by export_test.py and, through `real_export`, by the server, batching,
validation, repository and WAV-rate tests; it is never modified: tests that change a model
directory work on a copy (`served_copy`).
"""

import dataclasses
import os
import pathlib
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAX_PAYLOAD_BYTES = 2_000_000
SERVER_START_TIMEOUT = 90.0
TINY = [
    "trainer.verbose=0",
    "data.batch_size=16",
    "runtime.distribution=default",
    "runtime.cpu_replicas=1",
    "model.image_encoder.filters=[8]",
    "model.audio_encoder.filters=[8]",
    "model.image_encoder.embedding_dim=16",
    "model.audio_encoder.embedding_dim=16",
    "model.head_units=[16]",
    "trainer.learning_rate=0.003",
]
TINY_EPOCHS = 10
# Quantized TFLite vs Keras on the slice's test split: (min top-1 agreement, max accuracy drop).
QUANT_BOUNDS = {"tflite_f16": (0.975, 0.025), "tflite_dynamic": (0.95, 0.05),
                "tflite_int8": (0.90, 0.075)}
BOUND_TOLERANCES = [
    f"{fmt}.{field}={value}"
    for fmt, (agreement, drop) in QUANT_BOUNDS.items()
    for field, value in (("min_top1_agreement", agreement), ("max_accuracy_drop", drop))
]
ROWS = 4  # real test rows used as inputs


def _env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


@dataclasses.dataclass
class RealExport:
    model_dir: pathlib.Path  # the trained model directory
    savedmodel_root: pathlib.Path  # DIR/export/savedmodel (models.config + <name>/<version>)
    name: str  # the TF Serving model name
    version_dir: pathlib.Path  # <root>/<name>/1
    inputs: dict  # serving_default inputs of ROWS real test rows (image, audio, flags)
    raw: dict  # serve_raw inputs of the same rows (PNG and WAV bytes, flags)
    examples: np.ndarray  # serialized tf.Examples of the same rows (object array)

    def expected(self, signature, inputs):
        """The outputs of calling the exported signature in-process (what the server must send)."""
        import tensorflow as tf

        function = _loaded(str(self.version_dir)).signatures[signature]
        specs = function.structured_input_signature[1]
        out = function(**{k: tf.constant(v, dtype=specs[k].dtype) for k, v in inputs.items()})
        return {k: v.numpy() for k, v in out.items()}


_LOADED = {}


def _loaded(path):
    import tensorflow as tf

    if path not in _LOADED:
        _LOADED[path] = tf.saved_model.load(path)
    return _LOADED[path]


def _test_rows(data_dir, count):
    import csv

    with open(data_dir / "manifest.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "test"]
    return rows[:count]


@pytest.fixture(scope="session")
def exported_model_dir(avmnist_small, tmp_path_factory):
    """A tiny trained model directory, exported in every format by the CLI (its quantized
    variants held to `QUANT_BOUNDS`)."""
    from mmkeras.configs import load_config
    from training.trainer import train

    directory = tmp_path_factory.mktemp("export") / "tiny"
    config = load_config(
        pathlib.Path(REPO_ROOT) / "training/configs/avmnist/early_fusion.yaml",
        TINY + [f"trainer.epochs={TINY_EPOCHS}", f"data.data_dir={avmnist_small}"],
    )
    train(config, directory)
    cmd = [sys.executable, "-m", "serving.export", "--model-dir", str(directory),
           "--format", "savedmodel", "--format", "tflite", "--format", "onnx"]
    cmd += [x for q in ("float32", "float16", "dynamic", "int8") for x in ("--tflite-quant", q)]
    cmd += [x for t in BOUND_TOLERANCES for x in ("--tolerance", t)]
    result = subprocess.run(cmd, cwd=REPO_ROOT, env=_env(), capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return directory


@pytest.fixture(scope="session")
def real_export(exported_model_dir, avmnist_small):
    """`exported_model_dir`'s SavedModel and ROWS real test rows in each input form."""
    import tensorflow as tf

    from mmkeras.data import example_schema

    model_dir = exported_model_dir
    root = model_dir / "export" / "savedmodel"
    (name,) = [p.name for p in root.iterdir() if p.is_dir()]
    version_dir = root / name / "1"
    assert (version_dir / "saved_model.pb").is_file()

    rows = _test_rows(pathlib.Path(avmnist_small), ROWS)
    images = [(pathlib.Path(avmnist_small) / r["image"]).read_bytes() for r in rows]
    audio = [(pathlib.Path(avmnist_small) / r["audio"]).read_bytes() for r in rows]
    ones = np.ones(len(rows), np.float32)
    raw = {"image_bytes": np.array(images, dtype=object),
           "audio_bytes": np.array(audio, dtype=object),
           "image_present": ones, "audio_present": ones}
    specs = _loaded(str(version_dir)).signatures["serving_default"].structured_input_signature[1]
    shapes = {m: tuple(specs[m].shape[1:]) for m in ("image", "audio")}
    decoded = example_schema.decode_batch(
        {"image": tf.constant(images), "audio": tf.constant(audio)},
        {"image": tf.constant(ones), "audio": tf.constant(ones)}, shapes)
    inputs = {k: v.numpy() for k, v in decoded.items()}
    examples = np.empty(len(rows), dtype=object)
    examples[:] = [example_schema.to_example(image=i, audio=a).SerializeToString()
                   for i, a in zip(images, audio)]
    return RealExport(model_dir, root, name, version_dir, inputs, raw, examples)


@dataclasses.dataclass
class ServerProcess:
    process: subprocess.Popen
    rest_port: int
    grpc_port: int
    log_path: str
    max_payload_bytes: int = MAX_PAYLOAD_BYTES

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()


def start_server(args, log_dir):
    """Starts `python -m serving.server ARGS` and waits for its READY line."""
    stdout_path = os.path.join(log_dir, "server.stdout")
    stderr_path = os.path.join(log_dir, "server.stderr")
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "serving.server", *args],
            cwd=REPO_ROOT, env=_env(), stdout=out, stderr=err,
        )
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        with open(stdout_path) as f:
            for line in f:
                if line.startswith("READY "):
                    fields = dict(item.split("=") for item in line.split()[1:])
                    return ServerProcess(
                        process, int(fields["rest"]), int(fields["grpc"]), stderr_path
                    )
        if process.poll() is not None:
            break
        time.sleep(0.1)
    stop_server(process)
    with open(stderr_path, errors="replace") as f:
        raise RuntimeError(f"server did not become ready:\n{f.read()[-4000:]}")


def stop_server(process):
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def served_copy(real_export, tmp_path_factory):
    """A private copy of the export's model directory (`<base>/<name>/1`), for tests that add
    or break versions."""
    base = tmp_path_factory.mktemp("base")
    shutil.copytree(real_export.version_dir, base / real_export.name / "1")
    return base


@pytest.fixture(scope="module")
def server(served_copy, tmp_path_factory):
    """The server (defaults: aiohttp, batching on) on a private copy of the real export."""
    log_dir = tmp_path_factory.mktemp("server_logs")
    proc = start_server(
        ["--model-base-path", str(served_copy), "--rest-port", "0", "--grpc-port", "0",
         "--poll-seconds", "0.5", "--max-payload-bytes", str(MAX_PAYLOAD_BYTES)],
        str(log_dir),
    )
    try:
        yield proc
    finally:
        stop_server(proc.process)


# Tiny model directories of every task but classification, exported with `serving.export`.
#
# Every task trains through the one driver, `python -m training.train` (the config's `task:`
# picks it); the script names in TASK_TRAINING are the old aliases, kept for reference.
TRAIN_MODULE = "training.train"
# No distribution (`runtime.distribution=default`): these tests are about the tasks' exports.
ONE_DEVICE = ["runtime.distribution=default", "runtime.cpu_replicas=1"]
AVMNIST_TINY = ONE_DEVICE + [
    "trainer.epochs=1", "trainer.verbose=0", "data.batch_size=16",
    "model.image_encoder.filters=[4]", "model.audio_encoder.filters=[4]",
]
TASK_TRAINING = {  # task -> (its script, config, --set values, the script's extra flags)
    "retrieval": ("training.train_retrieval", "training/configs/avmnist/dual_encoder.yaml",
                  AVMNIST_TINY + ["cross_modal.embedding_dim=8"], []),
    "shared_autoencoder": (
        "training.train_shared_autoencoder", "training/configs/avmnist/shared_autoencoder.yaml",
        AVMNIST_TINY + ["cross_modal.code_dim=8", "cross_modal.autoencoder_normalize_batches=2"],
        []),
    "invariance": (
        "training.train_invariance", "training/configs/avmnist/modality_invariance.yaml",
        AVMNIST_TINY + ["cross_modal.embedding_dim=6", "cross_modal.discriminator_units=[8]",
                        "cross_modal.probe_mlp_epochs=1"], ["--no-baseline"]),
    "av_sync": ("training.train_av_sync", "training/configs/av_sync/av_sync.yaml", [
        *ONE_DEVICE, "trainer.epochs=1", "trainer.steps_per_epoch=1", "trainer.verbose=0",
        "data.batch_size=4", "av_sync.max_offset=2", "av_sync.video_filters=[2]",
        "av_sync.frame_units=4", "av_sync.audio_filters=[4]", "av_sync.embedding_dim=4",
        "av_sync.num_mel_bins=8"], []),
    "captioning": ("training.train_captioning", "training/configs/openmoji/captioning.yaml", [
        *ONE_DEVICE, "trainer.epochs=1", "trainer.verbose=0", "data.batch_size=16",
        "data.image_shape=[16,16,3]", "model.image_encoder.type=cnn",
        "model.image_encoder.filters=[8]", "model.image_encoder.embedding_dim=16",
        "captioning.hidden_dim=16", "captioning.num_layers=1", "captioning.num_heads=2",
        "captioning.intermediate_dim=32", "captioning.min_count=1", "captioning.max_words=6",
        "captioning.beam_width=2", "captioning.samples=5", "captioning.constant_candidates=20"],
        []),
    # Image <-> text retrieval on OpenMoji: a text tower (`vocab.txt` tokenizer) for the
    # raw-string `embed_text_strings` signature (a CNN text encoder: an unrolled GRU makes
    # every export signature slow, and the test is about the tokenizer in the graph).
    "retrieval_text": ("training.train_retrieval", "training/configs/openmoji/dual_encoder.yaml", [
        *ONE_DEVICE, "trainer.epochs=1", "trainer.verbose=0", "data.batch_size=16",
        "data.image_shape=[16,16,3]", "model.image_encoder.filters=[8]",
        "model.image_encoder.embedding_dim=16", "model.text_encoder.type=cnn",
        "model.text_encoder.units=8", "model.text_encoder.embedding_dim=16",
        "cross_modal.embedding_dim=8"], []),
}
SERVED_TASKS = ("retrieval", "shared_autoencoder", "invariance", "av_sync", "captioning")


def train_task_model_dir(task, model_dir, data_dir):
    """Trains a tiny model directory of `task` (a key of `TASK_TRAINING`) on `data_dir` (in
    process); returns its path."""
    import importlib

    module, config, sets, flags = TASK_TRAINING[task]
    if TRAIN_MODULE is not None:
        module, flags = TRAIN_MODULE, []
    argv = ["--config", os.path.join(REPO_ROOT, config), "--model-dir", str(model_dir), *flags]
    argv += [a for s in [*sets, f"data.data_dir={data_dir}"] for a in ("--set", s)]
    assert importlib.import_module(module).main(argv) == 0, f"{module} {argv}"
    assert (pathlib.Path(model_dir) / "model.keras").is_file()
    return pathlib.Path(model_dir)


@dataclasses.dataclass
class TaskExport:
    task: str
    model_dir: pathlib.Path
    name: str  # the TF Serving model name
    version_dir: pathlib.Path  # DIR/export/savedmodel/<name>/1
    report: dict  # DIR/export/parity.json

    def warmup_inputs(self):
        """`{signature: inputs}` of the warm-up file's batched request per signature (real
        test rows written by the export)."""
        import tensorflow as tf
        from tensorflow_serving.apis import prediction_log_pb2

        path = self.version_dir / "assets.extra" / "tf_serving_warmup_requests"
        result = {}
        for record in tf.data.TFRecordDataset(str(path)):
            log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
            request = log.predict_log.request
            inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
            previous = result.get(request.model_spec.signature_name)
            if previous is None or len(next(iter(inputs.values()))) > len(
                    next(iter(previous.values()))):
                result[request.model_spec.signature_name] = inputs
        return result

    def expected(self, signature, inputs):
        return RealExport.expected(self, signature, inputs)


@pytest.fixture(scope="session")
def task_data_dirs(avmnist_small, data_root):
    """`{task: function returning its prepared dataset}` (prepared on first use)."""

    def av_sync_data():
        from mmkeras.datasets import av_sync

        return av_sync.prepare(data_root=data_root, verbose=False, train=12, validation=4,
                               test=6, seed=0, visual="hold", jitter_frames=0.5)

    def openmoji_data():
        pytest.importorskip("cairosvg")
        from mmkeras.datasets import openmoji

        return openmoji.prepare(size=16, per_class=10, data_root=data_root, verbose=False)

    avmnist = lambda: avmnist_small  # noqa: E731
    return {"retrieval": avmnist, "shared_autoencoder": avmnist, "invariance": avmnist,
            "av_sync": av_sync_data, "captioning": openmoji_data, "retrieval_text": openmoji_data}


@pytest.fixture(scope="session")
def task_export(task_data_dirs, tmp_path_factory):
    """`get(task)`: a tiny trained model directory of `task`, exported by `python -m
    serving.export --format savedmodel --format tflite` (its `main`, in process), built once
    per session."""
    import json

    from serving import export

    cache = {}

    def get(task):
        if task not in cache:
            model_dir = train_task_model_dir(
                task, tmp_path_factory.mktemp(f"task_{task}") / task, task_data_dirs[task]())
            code = export.main(["--model-dir", str(model_dir), "--format", "savedmodel",
                                "--format", "tflite"])
            report = json.loads((model_dir / "export" / "parity.json").read_text())
            assert code == 0, json.dumps(report, indent=1)[-4000:]
            name = report["model_name"]
            version_dir = model_dir / "export" / "savedmodel" / name / "1"
            cache[task] = TaskExport(task, model_dir, name, version_dir, report)
        return cache[task]

    return get
