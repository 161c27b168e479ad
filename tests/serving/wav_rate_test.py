"""A WAV at another rate than the model's, through a real export's `serve_raw` /
`serve_examples` and through the real server (REST and gRPC).

Default export (`model.audio_encoder.serve_wav_rate: resample`): a 22.05 kHz recording is
resampled in the graph and answered like the same recording at 8 kHz. Exported with
`serve_wav_rate: reject`: it is refused, HTTP 400 / gRPC INVALID_ARGUMENT naming both rates,
and the server stays up; 8 kHz WAVs are still answered.
"""

import base64
import io
import shutil
import subprocess
import sys
import wave

import grpc
import numpy as np
import pytest
import scipy.signal
import tensorflow as tf
import yaml

from mmkeras.data import example_schema
from tests.serving.conftest import REPO_ROOT
from tests.serving.conftest import _env
from tests.serving.conftest import start_server
from tests.serving.conftest import stop_server
from tests.serving.server_test import NAME
from tests.serving.server_test import _predict
from tests.serving.server_test import _predict_request
from tests.serving.server_test import _stub

pytestmark = pytest.mark.large  # a trained and exported model, live server processes

RATE = 22050
# Largest probability difference between a 22.05 kHz WAV (resampled in the graph) and the
# same recording at 8 kHz.
PROBABILITY_TOLERANCE = 0.02


def _read(wav):
    with wave.open(io.BytesIO(wav)) as w:
        return w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), "<i2") / 32768.0


def _write(samples, rate):
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.clip(np.rint(samples * 32767), -32768, 32767).astype("<i2").tobytes())
    return buffer.getvalue()


def _at_rate(wav, rate=RATE):
    native_rate, samples = _read(wav)
    assert native_rate == 8000
    return _write(scipy.signal.resample_poly(samples, rate // 50, 160), rate)


@pytest.fixture(scope="module")
def raw_22k(real_export):
    raw = dict(real_export.raw)
    raw["audio_bytes"] = np.array([_at_rate(w) for w in raw["audio_bytes"]], dtype=object)
    return raw


def _call(version_dir, signature, inputs):
    function = tf.saved_model.load(str(version_dir)).signatures[signature]
    specs = function.structured_input_signature[1]
    out = function(**{k: tf.constant(v, dtype=specs[k].dtype) for k, v in inputs.items()})
    return {k: v.numpy() for k, v in out.items()}


def _examples(raw):
    out = np.empty(len(raw["audio_bytes"]), dtype=object)
    out[:] = [example_schema.to_example(image=i, audio=a).SerializeToString()
              for i, a in zip(raw["image_bytes"], raw["audio_bytes"])]
    return out


def test_export_resamples_another_rate_by_default(real_export, raw_22k):
    native = real_export.expected("serve_raw", real_export.raw)
    for signature, inputs in (("serve_raw", raw_22k),
                              ("serve_examples", {"examples": _examples(raw_22k)})):
        got = _call(real_export.version_dir, signature, inputs)
        np.testing.assert_allclose(got["probabilities"], native["probabilities"],
                                   atol=PROBABILITY_TOLERANCE)
    # Not the old rate-blind answer: reading the 22.05 kHz samples as 8 kHz ones differs more.
    specs = tf.saved_model.load(str(real_export.version_dir)).signatures[
        "serving_default"].structured_input_signature[1]
    blind = example_schema.decode_batch(
        {"image": tf.constant(raw_22k["image_bytes"]), "audio": tf.constant(raw_22k["audio_bytes"])},
        {"image": tf.ones([4]), "audio": tf.ones([4])},
        {"image": (28, 28, 1), "audio": tuple(specs["audio"].shape[1:])})
    blind_out = real_export.expected("serving_default", {k: v.numpy() for k, v in blind.items()})
    resampled = _call(real_export.version_dir, "serve_raw", raw_22k)["probabilities"]
    assert (np.abs(blind_out["probabilities"] - native["probabilities"]).max()
            > np.abs(resampled - native["probabilities"]).max())


def test_server_resamples_another_rate_by_default(server, real_export, raw_22k):
    native = real_export.expected("serve_raw", real_export.raw)
    body = {"signature_name": "serve_raw", "inputs": {
        k: [{"b64": base64.b64encode(v).decode()} for v in a] if a.dtype == object else a.tolist()
        for k, a in raw_22k.items()}}
    status, response = _predict(server, body)
    assert status == 200, response
    np.testing.assert_allclose(response["outputs"]["probabilities"], native["probabilities"],
                               atol=PROBABILITY_TOLERANCE)
    reply = _stub(server).Predict(_predict_request(raw_22k, signature_name="serve_raw"), timeout=60)
    np.testing.assert_allclose(tf.make_ndarray(reply.outputs["probabilities"]),
                               native["probabilities"], atol=PROBABILITY_TOLERANCE)


@pytest.fixture(scope="module")
def rejecting_export(real_export, tmp_path_factory):
    """The same trained model exported with `model.audio_encoder.serve_wav_rate: reject`."""
    model_dir = tmp_path_factory.mktemp("reject") / "early_fusion"
    shutil.copytree(real_export.model_dir, model_dir, ignore=shutil.ignore_patterns("export"))
    config_path = model_dir / "config.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["model"]["audio_encoder"]["serve_wav_rate"] = "reject"
    config_path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [sys.executable, "-m", "serving.export", "--model-dir", str(model_dir),
         "--format", "savedmodel"],
        cwd=REPO_ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return model_dir / "export" / "savedmodel"


@pytest.fixture(scope="module")
def rejecting_server(rejecting_export, tmp_path_factory):
    proc = start_server(["--model-base-path", str(rejecting_export), "--rest-port", "0",
                         "--grpc-port", "0"], str(tmp_path_factory.mktemp("reject_logs")))
    try:
        yield proc
    finally:
        stop_server(proc.process)


def test_rejecting_export_refuses_another_rate_naming_both(real_export, rejecting_export,
                                                           raw_22k):
    version_dir = rejecting_export / NAME / "1"
    native = real_export.expected("serve_raw", real_export.raw)
    got = _call(version_dir, "serve_raw", real_export.raw)  # 8 kHz: answered as before
    np.testing.assert_allclose(got["probabilities"], native["probabilities"], atol=1e-6)
    for signature, inputs in (("serve_raw", raw_22k),
                              ("serve_examples", {"examples": _examples(raw_22k)})):
        with pytest.raises(tf.errors.InvalidArgumentError, match="22050 Hz.*8000 Hz"):
            _call(version_dir, signature, inputs)


def test_rejecting_server_answers_400_and_invalid_argument(rejecting_server, real_export,
                                                           raw_22k):
    mixed = dict(real_export.raw)
    mixed["audio_bytes"] = np.array([mixed["audio_bytes"][0], raw_22k["audio_bytes"][1]], object)
    mixed = {k: v[:2] for k, v in mixed.items()}
    body = {"signature_name": "serve_raw", "inputs": {
        k: [{"b64": base64.b64encode(v).decode()} for v in a] if a.dtype == object else a.tolist()
        for k, a in mixed.items()}}
    status, response = _predict(rejecting_server, body)
    assert status == 400, response
    for fragment in ("audio_bytes", "example 1", "22050 Hz", "8000 Hz"):
        assert fragment in response["error"], response
    with pytest.raises(grpc.RpcError) as info:
        _stub(rejecting_server).Predict(_predict_request(mixed, signature_name="serve_raw"),
                                        timeout=60)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    for fragment in ("audio_bytes", "22050 Hz", "8000 Hz"):
        assert fragment in info.value.details(), info.value.details()
    status, response = _predict(rejecting_server, {"signature_name": "serve_raw", "inputs": {
        k: [{"b64": base64.b64encode(v).decode()} for v in a] if a.dtype == object else a.tolist()
        for k, a in {k: v[:1] for k, v in mixed.items()}.items()}})
    assert status == 200, response  # the 8 kHz WAV alone, and the server is still up
