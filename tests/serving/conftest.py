"""Fixtures for the serving tests: a real export of a tiny trained fusion model, and live servers.

`real_export` trains the AV-MNIST early-fusion model for one epoch on the small real slice
(in-process, tiny encoders) and exports it with `python -m serving.export --format savedmodel`,
exactly as a user does: a SavedModel with presence flags and the three signatures
(`serving_default`, `serve_raw`, `serve_examples`). It is built once per session and never
modified; tests that change a model directory work on a copy (`served_copy`).
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
    "trainer.epochs=1",
    "trainer.verbose=0",
    "data.batch_size=16",
    "runtime.distribution=default",
    "runtime.cpu_replicas=1",
    "model.image_encoder.filters=[8]",
    "model.audio_encoder.filters=[8]",
    "model.image_encoder.embedding_dim=16",
    "model.audio_encoder.embedding_dim=16",
    "model.head_units=[16]",
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
def real_export(avmnist_small, tmp_path_factory):
    import tensorflow as tf

    from mmkeras.configs import load_config
    from mmkeras.data import example_schema
    from training.trainer import train

    model_dir = tmp_path_factory.mktemp("served") / "early_fusion"
    config = load_config(
        pathlib.Path(REPO_ROOT) / "training/configs/avmnist/early_fusion.yaml",
        TINY + [f"data.data_dir={avmnist_small}"],
    )
    train(config, model_dir)
    result = subprocess.run(
        [sys.executable, "-m", "serving.export", "--model-dir", str(model_dir),
         "--format", "savedmodel"],
        cwd=REPO_ROOT, env=_env(), capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    root = model_dir / "export" / "savedmodel"
    name = config.model.name
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
