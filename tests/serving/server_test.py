"""End-to-end tests of `python -m serving.server` (a real subprocess) on a real export.

The model is what `serving.export` writes for a fusion model with presence flags
(`serving_default`, `serve_raw`, `serve_examples`; see conftest.py); answers are compared with
the exported signatures called in-process. The server fixture is module-scoped and runs with
the defaults (aiohttp, batching on); `test_new_and_corrupt_versions` adds versions and
therefore runs last (pytest keeps file order).
"""

import base64
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from serving import client as client_lib
from tests.serving.conftest import REPO_ROOT
from tests.serving.conftest import start_server
from tests.serving.conftest import stop_server

pytestmark = pytest.mark.large  # a trained and exported model, live server processes

ATOL = 1e-6
NAME = "avmnist_early_fusion"


# Helpers.


def _http(server, path, body=None, method=None, raw=None):
    """Returns (status, parsed JSON body) of one REST request."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.rest_port}{path}", data=data, method=method
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _predict(server, body, version=None):
    path = f"/v1/models/{NAME}" + (f"/versions/{version}" if version else "") + ":predict"
    return _http(server, path, body)


def _b64(data):
    return {"b64": base64.b64encode(data).decode()}


def _stub(server):
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


def _predict_request(inputs, name=NAME, version=None, signature_name=None):
    import tensorflow as tf

    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    if signature_name:
        request.model_spec.signature_name = signature_name
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    return request


def _assert_alive(server):
    assert server.process.poll() is None, server.log()[-3000:]
    status, _ = _http(server, f"/v1/models/{NAME}")
    assert status == 200


def _assert_outputs(got, expected, atol=ATOL):
    np.testing.assert_allclose(np.asarray(got["probabilities"]), expected["probabilities"],
                               atol=atol)
    np.testing.assert_array_equal(np.asarray(got["class_id"]), expected["class_id"])


def _missing(inputs, modality):
    """The same inputs with `modality` marked missing the explicit way (zeros, flag 0)."""
    out = dict(inputs)
    out[modality] = np.zeros_like(inputs[modality])
    out[f"{modality}_present"] = np.zeros_like(inputs[f"{modality}_present"])
    return out


def _columns(arrays):
    return {k: v.tolist() for k, v in arrays.items()}


# REST.


def test_rest_status(server):
    assert _http(server, f"/v1/models/{NAME}") == (
        200,
        {"model_version_status": [{"version": "1", "state": "AVAILABLE",
                                   "status": {"error_code": "OK", "error_message": ""}}]},
    )
    status, body = _http(server, f"/v1/models/{NAME}/versions/1")
    assert status == 200 and body["model_version_status"][0]["version"] == "1"


def test_rest_metadata(server):
    status, body = _http(server, f"/v1/models/{NAME}/metadata")
    assert status == 200, body
    assert body["model_spec"] == {"name": NAME, "version": "1", "signature_name": ""}
    signatures = body["metadata"]["signature_def"]["signature_def"]
    assert {"serving_default", "serve_raw", "serve_examples"} <= set(signatures)
    default = signatures["serving_default"]
    assert default["method_name"] == "tensorflow/serving/predict"
    assert set(default["inputs"]) == {"image", "audio", "image_present", "audio_present"}
    image = default["inputs"]["image"]
    assert image["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in image["tensor_shape"]["dim"]] == ["-1", "28", "28", "1"]
    assert default["outputs"]["class_id"]["dtype"] == "DT_INT64"
    assert signatures["serve_raw"]["inputs"]["audio_bytes"]["dtype"] == "DT_STRING"


def test_rest_predict_row_and_columnar_formats(server, real_export):
    x = real_export.inputs
    expected = real_export.expected("serving_default", x)
    instances = [{k: v[i].tolist() for k, v in x.items()} for i in range(len(x["image"]))]
    status, body = _predict(server, {"instances": instances})
    assert status == 200, body
    rows = body["predictions"]
    assert set(rows[0]) == {"probabilities", "class_id"}
    _assert_outputs({"probabilities": [r["probabilities"] for r in rows],
                     "class_id": [r["class_id"] for r in rows]}, expected)

    status, body = _predict(server, {"signature_name": "serving_default", "inputs": _columns(x)},
                            version=1)
    assert status == 200, body
    _assert_outputs(body["outputs"], expected)


def test_rest_serve_raw_and_serve_examples(server, real_export):
    raw = real_export.raw
    expected = real_export.expected("serving_default", real_export.inputs)
    instances = [{"image_bytes": _b64(raw["image_bytes"][i]),
                  "audio_bytes": _b64(raw["audio_bytes"][i]),
                  "image_present": 1.0, "audio_present": 1.0}
                 for i in range(len(raw["image_bytes"]))]
    status, body = _predict(server, {"signature_name": "serve_raw", "instances": instances})
    assert status == 200, body
    _assert_outputs({"probabilities": [r["probabilities"] for r in body["predictions"]],
                     "class_id": [r["class_id"] for r in body["predictions"]]}, expected, 1e-5)

    examples = [_b64(e) for e in real_export.examples]
    status, body = _predict(server, {"signature_name": "serve_examples",
                                     "inputs": {"examples": examples}})
    assert status == 200, body
    _assert_outputs(body["outputs"], expected, 1e-5)


def test_rest_client(server, real_export):
    x = real_export.inputs
    rest = client_lib.RestClient("127.0.0.1", server.rest_port, NAME)
    outputs = rest.predict(x)
    assert outputs["probabilities"].dtype == np.float32
    assert outputs["class_id"].dtype == np.int64
    _assert_outputs(outputs, real_export.expected("serving_default", x))

    outputs = rest.predict(real_export.raw, signature_name="serve_raw", version=1)
    _assert_outputs(outputs, real_export.expected("serving_default", x), 1e-5)

    with pytest.raises(client_lib.ServingError) as info:
        rest.predict({"image": x["image"], "image_present": x["image_present"],
                      "audio_present": x["audio_present"]})
    assert info.value.code == 400 and "'audio'" in info.value.message


def test_client_cli_serve_raw_with_a_modality_left_out(server, real_export, tmp_path):
    png = real_export.raw["image_bytes"][0]
    (tmp_path / "digit.png").write_bytes(png)
    result = subprocess.run(
        [sys.executable, "-m", "serving.client", "--rest", "--host", "127.0.0.1",
         "--port", str(server.rest_port), "--model-name", NAME, "--signature-name", "serve_raw",
         "--input-file", f"image_bytes={tmp_path / 'digit.png'}"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
        env=dict(os.environ, PYTHONPATH=REPO_ROOT),
    )
    assert result.returncode == 0, result.stderr
    outputs = json.loads(result.stdout)
    explicit = {"image_bytes": np.array([png], dtype=object),
                "image_present": np.ones(1, np.float32),
                "audio_bytes": np.array([b""], dtype=object),
                "audio_present": np.zeros(1, np.float32)}
    _assert_outputs(outputs, real_export.expected("serve_raw", explicit))


# Omitted modalities.


@pytest.mark.parametrize("modality", ["audio", "image"])
def test_omitted_modality_answers_like_zeros_and_flag_zero(server, real_export, modality):
    x = real_export.inputs
    explicit = _missing(x, modality)
    status, sent_zeros = _predict(server, {"inputs": _columns(explicit)})
    assert status == 200, sent_zeros
    omitted = {k: v for k, v in x.items() if not k.startswith(modality)}
    status, left_out = _predict(server, {"inputs": _columns(omitted)})
    assert status == 200, left_out
    assert left_out == sent_zeros
    with_zero_flag = dict(omitted, **{f"{modality}_present": explicit[f"{modality}_present"]})
    assert _predict(server, {"inputs": _columns(with_zero_flag)}) == (200, sent_zeros)
    _assert_outputs(left_out["outputs"], real_export.expected("serving_default", explicit))


def test_omitted_modality_per_row_and_over_grpc(server, real_export):
    x = real_export.inputs
    explicit = dict(x)
    explicit["audio"] = x["audio"].copy()
    explicit["audio"][1] = 0.0
    explicit["audio_present"] = np.array([1, 0, 1, 1], np.float32)
    rows = [{k: v[i].tolist() for k, v in x.items()} for i in range(4)]
    del rows[1]["audio"], rows[1]["audio_present"]  # instance 1 has no audio
    status, body = _predict(server, {"instances": rows})
    assert status == 200, body
    expected = real_export.expected("serving_default", explicit)
    _assert_outputs({"probabilities": [r["probabilities"] for r in body["predictions"]],
                     "class_id": [r["class_id"] for r in body["predictions"]]}, expected)

    without_image = {k: v for k, v in x.items() if not k.startswith("image")}
    response = _stub(server).Predict(_predict_request(without_image), timeout=60)
    import tensorflow as tf

    got = {k: tf.make_ndarray(v) for k, v in response.outputs.items()}
    _assert_outputs(got, real_export.expected("serving_default", _missing(x, "image")))


# gRPC.


def test_grpc_predict_client_metadata_and_status(server, real_export):
    import tensorflow as tf

    x = real_export.inputs
    response = _stub(server).Predict(_predict_request(x), timeout=60)
    assert response.model_spec.name == NAME and response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"
    _assert_outputs({k: tf.make_ndarray(v) for k, v in response.outputs.items()},
                    real_export.expected("serving_default", x))

    with client_lib.GrpcClient("127.0.0.1", server.grpc_port, NAME) as client:
        outputs = client.predict({"examples": real_export.examples},
                                 signature_name="serve_examples")
        _assert_outputs(outputs, real_export.expected("serving_default", x), 1e-5)
        grpc_metadata = client.metadata()
    assert grpc_metadata == client_lib.RestClient("127.0.0.1", server.rest_port, NAME).metadata()

    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = NAME
    response = _stub(server).GetModelMetadata(request, timeout=30)
    assert response.metadata["signature_def"].Is(get_model_metadata_pb2.SignatureDefMap.DESCRIPTOR)

    stub = model_service_pb2_grpc.ModelServiceStub(
        grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}"))
    status_request = get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = NAME
    (status,) = stub.GetModelStatus(status_request, timeout=30).model_version_status
    assert status.version == 1
    assert status.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE


# Bad requests: 400 / INVALID_ARGUMENT naming the input (and example), and a server still alive.


def _bad_inputs(real_export):
    """`{case: (signature, inputs as numpy, fragments the message must contain)}`."""
    x = real_export.inputs
    rng = np.random.default_rng(7)
    junk = np.array([rng.bytes(64) for _ in range(2)], dtype=object)
    raw = {k: v[:2] for k, v in real_export.raw.items()}
    nan_audio = x["audio"].copy()
    nan_audio[2, 10] = np.nan
    inf_image = x["image"].copy()
    inf_image[1, 3, 4, 0] = np.inf
    half_flag = x["image_present"].copy()
    half_flag[3] = 0.5
    nan_flag = x["audio_present"].copy()
    nan_flag[0] = np.nan
    good_then_junk_wav = dict(raw, audio_bytes=np.array([raw["audio_bytes"][0], junk[1]], object))
    return {
        "random_bytes_as_wav": ("serve_raw", good_then_junk_wav, ["audio_bytes", "example 1"]),
        "random_bytes_as_png": ("serve_raw", dict(raw, image_bytes=junk),
                                ["image_bytes", "example 0"]),
        "random_bytes_as_examples": ("serve_examples", {"examples": junk}, ["examples", "example 0"]),
        "nan": ("serving_default", dict(x, audio=nan_audio), ["'audio'", "example 2", "nan"]),
        "inf": ("serving_default", dict(x, image=inf_image), ["'image'", "example 1", "inf"]),
        "flag_half": ("serving_default", dict(x, image_present=half_flag),
                      ["'image_present'", "example 3", "0 or 1"]),
        "flag_nan": ("serving_default", dict(x, audio_present=nan_flag),
                     ["'audio_present'", "example 0", "0 or 1"]),
        "batch_mismatch": ("serving_default", dict(x, audio=x["audio"][:3]),
                           ["batch size", "'audio' 3", "'image' 4"]),
        "left_out_but_flag_one": ("serving_default", {k: v for k, v in x.items() if k != "audio"},
                                  ["'audio'", "'audio_present'", "example 0"]),
        "unknown_input": ("serving_default", dict(x, bogus=x["audio_present"]), ["bogus"]),
        "wrong_dtype": ("serving_default", dict(x, image=x["image"].astype(np.float64)),
                        ["'image'", "float64"]),
        "wrong_shape": ("serving_default", dict(x, image=x["image"][:, :27]), ["'image'", "axis 1"]),
        "string_for_float": ("serving_default", dict(x, audio_present=np.array([b"1"] * 4, object)),
                             ["audio_present"]),
    }


BAD_CASES = ["random_bytes_as_wav", "random_bytes_as_png", "random_bytes_as_examples", "nan", "inf",
             "flag_half", "flag_nan", "batch_mismatch", "left_out_but_flag_one", "unknown_input",
             "wrong_dtype", "wrong_shape", "string_for_float"]


def _json_value(array):
    if array.dtype == object:
        return [_b64(v) for v in array]
    return array.tolist()


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_payload_is_400_over_rest_and_invalid_argument_over_grpc(server, real_export, case):
    signature, inputs, fragments = _bad_inputs(real_export)[case]
    if case not in ("wrong_dtype",):  # JSON has no float64: the REST form is float32
        body = {"signature_name": signature, "inputs": {k: _json_value(v) for k, v in inputs.items()}}
        if case == "string_for_float":
            body["inputs"]["audio_present"] = ["1"] * 4
        status, response = _predict(server, body)
        assert status == 400, response
        for fragment in fragments if case != "string_for_float" else ["audio_present"]:
            assert fragment in response["error"], response
    with pytest.raises(grpc.RpcError) as info:
        _stub(server).Predict(_predict_request(inputs, signature_name=signature), timeout=60)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    for fragment in fragments:
        assert fragment in info.value.details(), info.value.details()
    _assert_alive(server)


def _bad_json_cases(x):
    aud = x["audio"].tolist()
    img = x["image"].tolist()
    flags = x["image_present"].tolist()
    full = {"image": img, "audio": aud, "image_present": flags, "audio_present": flags}
    return {
        "missing_input_row": ({"instances": [{"image": img[0], "audio_present": 1}]}, 400, "audio"),
        "wrong_rank": ({"inputs": dict(full, image=x["image"][..., 0].tolist())}, 400, "image"),
        "ragged": ({"inputs": dict(full, audio=[aud[0], aud[1][:3], aud[2], aud[3]])}, 400, "audio"),
        "null_value": ({"inputs": dict(full, audio_present=[None] * 4)}, 400, "audio_present"),
        "bool_for_float": ({"inputs": dict(full, audio_present=[True] * 4)}, 400, "audio_present"),
        "b64_for_float": ({"inputs": dict(full, audio_present=[_b64(b"1")] * 4)}, 400,
                          "audio_present"),
        "nan_literal": (None, 400, "audio_present"),
        "both_formats": ({"inputs": {}, "instances": []}, 400, "exactly one"),
        "not_an_object": ([1, 2, 3], 400, "JSON object"),
        "bad_b64": ({"signature_name": "serve_raw",
                     "inputs": {"image_bytes": [{"b64": "!!!"}], "image_present": [1.0]}},
                    400, "image_bytes"),
        "missing_examples": ({"signature_name": "serve_examples", "inputs": {}}, 400,
                             "missing input 'examples'"),
        "unknown_signature": ({"signature_name": "nope", "inputs": {}}, 404, "nope"),
    }


@pytest.mark.parametrize("case", ["missing_input_row", "wrong_rank", "ragged", "null_value",
                                  "bool_for_float", "b64_for_float", "nan_literal", "both_formats",
                                  "not_an_object", "bad_b64", "missing_examples",
                                  "unknown_signature"])
def test_rest_bad_request(server, real_export, case):
    body, expected_status, fragment = _bad_json_cases(real_export.inputs)[case]
    if case == "nan_literal":  # NaN as JSON accepts it (Python's json and TF Serving's parser)
        raw = json.dumps({"inputs": {**_columns(real_export.inputs),
                                     "audio_present": [1.0, float("nan"), 1.0, 1.0]}}).encode()
        status, response = _http(server, f"/v1/models/{NAME}:predict", method="POST", raw=raw)
        assert "NaN" in raw.decode()
    else:
        status, response = _predict(server, body)
    assert status == expected_status, response
    assert fragment in response["error"], response
    _assert_alive(server)


@pytest.mark.parametrize(
    "path, method, raw, expected_status",
    [
        (f"/v1/models/{NAME}:predict", "POST", b'{"inputs": {"image": [1,', 400),
        (f"/v1/models/{NAME}:predict", "POST", b"\xff\xfe", 400),
        (f"/v1/models/{NAME}:predict", "POST", b"[" * 100_000, 400),
        ("/v1/models/nope:predict", "POST", b'{"inputs": {}}', 404),
        ("/v1/models/nope", "GET", None, 404),
        ("/v1/models/nope/metadata", "GET", None, 404),
        (f"/v1/models/{NAME}/versions/9:predict", "POST", b'{"inputs": {}}', 404),
        (f"/v1/models/{NAME}/versions/9", "GET", None, 404),
        (f"/v1/models/{NAME}/labels/stable", "GET", None, 404),
        ("/v2/whatever", "GET", None, 404),
    ],
)
def test_rest_bad_url_or_json(server, path, method, raw, expected_status):
    status, response = _http(server, path, method=method, raw=raw)
    assert status == expected_status, response
    assert response["error"]
    _assert_alive(server)


def test_rest_oversized_payload(server):
    raw = b'{"inputs": {"audio": [' + b"0.0," * (server.max_payload_bytes // 2) + b"0.0]}}"
    status, response = _http(server, f"/v1/models/{NAME}:predict", method="POST", raw=raw)
    assert status == 413, response
    assert "exceeds" in response["error"]
    _assert_alive(server)


def test_grpc_not_found_metadata_and_oversized_message(server, real_export):
    x = real_export.inputs
    stub = _stub(server)
    for request, fragment in [(_predict_request(x, name="nope"), "nope"),
                              (_predict_request(x, version=9), "9"),
                              (_predict_request(x, signature_name="nope"), "nope")]:
        with pytest.raises(grpc.RpcError) as info:
            stub.Predict(request, timeout=30)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert fragment in info.value.details()
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = NAME
    with pytest.raises(grpc.RpcError) as info:
        stub.GetModelMetadata(request, timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    samples = real_export.inputs["audio"].shape[-1]
    big = np.zeros((server.max_payload_bytes // (4 * samples) + 10, samples), np.float32)
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(_predict_request({"audio": big}), timeout=30)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    _assert_alive(server)


# Batching: concurrent requests are merged, and each gets the answer it gets alone.


def test_concurrent_requests_are_merged_and_answered_as_alone(real_export, served_copy, tmp_path):
    import concurrent.futures
    import threading

    proc = start_server(
        ["--model-base-path", str(served_copy), "--rest-port", "0", "--grpc-port", "0",
         "--poll-seconds", "0", "--batch-timeout-micros", "50000", "--max-batch-size", "16"],
        str(tmp_path),
    )
    try:
        x = real_export.inputs
        rng = np.random.default_rng(3)
        requests = []
        for i in range(16):  # batch-1 requests: real rows, some with a modality left out
            row = {k: v[i % 4:i % 4 + 1] for k, v in x.items()}
            if i % 3 == 1:
                row = {k: v for k, v in row.items() if not k.startswith("audio")}
            elif i % 3 == 2:
                row = dict(row, image=np.clip(row["image"] + rng.normal(0, 0.1, row["image"].shape),
                                              0, 1).astype(np.float32))
            requests.append(row)
        alone = []
        for row in requests:
            status, body = _predict(proc, {"inputs": _columns(row)})
            assert status == 200, body
            alone.append(body["outputs"])
        _, before = _http(proc, "/monitoring/batching")
        barrier = threading.Barrier(len(requests))

        def send(i):
            barrier.wait()
            if i % 5 == 4:  # a bad request in the same burst fails alone
                bad = {"inputs": {**_columns(requests[i]), "image_present": [0.5]}}
                status, body = _predict(proc, bad)
                assert status == 400 and "image_present" in body["error"], body
            if i % 4 == 3:  # gRPC shares the batcher
                import tensorflow as tf

                response = _stub(proc).Predict(_predict_request(requests[i]), timeout=60)
                return 200, {"outputs": {k: tf.make_ndarray(v).tolist()
                                         for k, v in response.outputs.items()}}
            return _predict(proc, {"inputs": _columns(requests[i])})

        with concurrent.futures.ThreadPoolExecutor(len(requests)) as pool:
            together = list(pool.map(send, range(len(requests))))
        _, after = _http(proc, "/monitoring/batching")
        for (status, body), expected in zip(together, alone):
            assert status == 200, body
            np.testing.assert_allclose(body["outputs"]["probabilities"], expected["probabilities"],
                                       atol=ATOL)
            assert body["outputs"]["class_id"] == expected["class_id"]
        assert after["merged_batches"] > before["merged_batches"], (before, after)
        assert after["max_requests_in_batch"] > 1
        assert after["requests"] - before["requests"] == len(requests)
    finally:
        stop_server(proc.process)


# The standard-library HTTP stack, no batching, non-finite values allowed.


def test_stdlib_stack_without_batching_and_allow_non_finite(real_export, served_copy, tmp_path):
    proc = start_server(
        ["--model-base-path", str(served_copy), "--rest-port", "0", "--grpc-port", "0",
         "--poll-seconds", "0", "--http-stack", "stdlib", "--no-enable-batching",
         "--allow-non-finite"],
        str(tmp_path),
    )
    try:
        x = real_export.inputs
        status, body = _predict(proc, {"inputs": _columns(x)})
        assert status == 200, body
        _assert_outputs(body["outputs"], real_export.expected("serving_default", x))
        nan_audio = dict(x, audio=np.where(np.arange(x["audio"].shape[-1]) == 5, np.nan,
                                           x["audio"]))
        raw = json.dumps({"inputs": _columns(nan_audio)}).encode()
        status, body = _http(proc, f"/v1/models/{NAME}:predict", method="POST", raw=raw)
        assert status == 200, body  # accepted: --allow-non-finite
        flags = dict(x, image_present=np.full(4, np.nan, np.float32))
        status, body = _predict(proc, {"inputs": _columns(flags)})
        assert status == 400 and "0 or 1" in body["error"]  # flags stay checked
        assert _http(proc, "/monitoring/batching") == (200, {"enabled": False})
        status, body = _http(proc, f"/v1/models/{NAME}:predict", method="POST",
                             raw=b'{"inputs": [')
        assert status == 400, body
    finally:
        stop_server(proc.process)


# New and corrupt versions: keep last, it changes the served versions.


def test_new_and_corrupt_versions(server, served_copy, real_export):
    from serving.export import load_model_dir
    from serving.serving_module import build_archive

    model_dir = served_copy / NAME
    _, model = load_model_dir(real_export.model_dir)
    for weight in model.weights:  # version 2: other weights
        weight.assign(weight.numpy() * 1.5 + 0.01)
    staging = model_dir / "tmp-2"
    build_archive(model).write_out(str(staging), verbose=False)
    os.makedirs(model_dir / "4" / "variables")  # incomplete: ignored
    # Version 3: a genuinely corrupt SavedModel (its graph file garbled on disk).
    shutil.copytree(real_export.version_dir, model_dir / "3")
    pb = model_dir / "3" / "saved_model.pb"
    data = bytearray(pb.read_bytes())
    data[len(data) // 3: len(data) // 3 + 64] = b"\xff" * 64
    pb.write_bytes(bytes(data[: len(data) // 2]))
    os.rename(staging, model_dir / "2")

    deadline = time.monotonic() + 60
    versions = []
    while time.monotonic() < deadline:
        _, body = _http(server, f"/v1/models/{NAME}")
        versions = [(s["version"], s["state"]) for s in body["model_version_status"]]
        if ("2", "AVAILABLE") in versions and ("3", "END") in versions:
            break
        time.sleep(0.3)
    assert versions == [("3", "END"), ("2", "AVAILABLE"), ("1", "AVAILABLE")], server.log()[-3000:]
    corrupt = body["model_version_status"][0]["status"]
    assert corrupt["error_code"] == "UNKNOWN" and corrupt["error_message"]

    x = real_export.inputs
    expected_v1 = real_export.expected("serving_default", x)["probabilities"]
    expected_v2 = np.asarray(model(x, training=False))
    assert not np.allclose(expected_v1, expected_v2, atol=1e-3)
    _, latest = _predict(server, {"inputs": _columns(x)})
    np.testing.assert_allclose(latest["outputs"]["probabilities"], expected_v2, atol=1e-5)
    _, pinned = _predict(server, {"inputs": _columns(x)}, version=1)
    np.testing.assert_allclose(pinned["outputs"]["probabilities"], expected_v1, atol=ATOL)
    status, body = _predict(server, {"inputs": _columns(x)}, version=3)
    assert status == 404, body
    response = _stub(server).Predict(_predict_request(x))
    assert response.model_spec.version.value == 2
