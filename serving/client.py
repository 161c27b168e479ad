"""Clients for TF Serving's REST and gRPC APIs: `RestClient`, `GrpcClient` and a small CLI.

They talk to `python -m serving.server` and to the real `tensorflow_model_server` alike
(started e.g. as `tensorflow_model_server --rest_api_port=8501 --port=8500
--model_name=NAME --model_base_path=/abs/BASE/NAME`), since both speak the same contract.

Both clients take and return `{name: np.ndarray}` dicts:

```python
client = RestClient("localhost", 8501, "tiny")        # or GrpcClient("localhost", 8500, "tiny")
outputs = client.predict({"image": images, "audio": waveforms})
outputs["probabilities"].shape   # (batch, classes)
client.metadata()["metadata"]["signature_def"]["signature_def"]["serving_default"]
```

`RestClient` uses only the standard library (urllib) plus numpy: it sends the columnar
`{"inputs": {...}}` format, encodes `bytes` elements as `{"b64": ...}`, and reads the
signature's output dtypes from the model metadata (fetched once per version and signature).
`GrpcClient` needs `grpcio`, `tensorflow-serving-api` and TensorFlow (`tf.make_tensor_proto`).
Both raise `serving.errors.ServingError` with the HTTP status (int) or `grpc.StatusCode` in
`.code` and the server's message in `.message`. The JSON encoding is `serving/codec.py`, the
same module the server decodes with.

CLI (prints the outputs as JSON; bytes as `{"b64": ...}`):

    python -m serving.client --rest --host localhost --port 8501 --model-name tiny \
        --input image=image.npy --input audio=audio.npy
    python -m serving.client --grpc --port 8500 --model-name avmnist_early_fusion \
        --signature-name serve_raw --input-file image_bytes=digit.png --input-file audio_bytes=a.wav
    python -m serving.client --rest --port 8501 --model-name avmnist_early_fusion \
        --signature-name serve_raw --input-file image_bytes=digit.png   # audio left out
    python -m serving.client --rest --port 8501 --model-name tiny --metadata

Raw inputs (`serve_raw` of a text / tabular / image model, `serving/raw_inputs.py`): text as
strings, table cells by column name (numbers, `null` / NaN for a missing one; categories as
strings), files as bytes:

```python
client.predict({"text": ["grinning face"], "image_bytes": [png], "price": [float("nan")],
                "block": ["1F6"]}, signature_name="serve_raw")
```

The TFLite client step (`tflite_inputs`, numpy only, or keras_hub for a preset tokenizer):
a TFLite model takes tensors, so these raw inputs are turned into `serving_default`'s inputs
from the assets the export writes beside it (`DIR/export/tflite/assets/`).

`--input-file name=path` sends the file's raw bytes as a batch of one string, so pair it with
`.npy` inputs whose leading (batch) dimension is 1. A modality with a presence flag may be left
out (`python -m serving.server` fills it in as missing; sending it without its flag means
present); `tensorflow_model_server` itself requires every input of the signature.
"""

import argparse
import io
import json
import pathlib
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
import wave

import numpy as np

from mmkeras import errors
from serving import codec
from serving.errors import DEFAULT_SIGNATURE
from serving.errors import ServingError

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_NUMPY_DTYPES = {
    "DT_FLOAT": np.float32,
    "DT_DOUBLE": np.float64,
    "DT_HALF": np.float16,
    "DT_INT8": np.int8,
    "DT_INT16": np.int16,
    "DT_INT32": np.int32,
    "DT_INT64": np.int64,
    "DT_UINT8": np.uint8,
    "DT_UINT16": np.uint16,
    "DT_UINT32": np.uint32,
    "DT_UINT64": np.uint64,
    "DT_BOOL": np.bool_,
    "DT_STRING": codec.STRING,
}


def _json_to_array(value, dtype, name):
    """An output's JSON as numpy (`codec.json_to_array`; plain numpy when the dtype is unknown)."""
    if dtype is None:
        return np.asarray(value)
    return codec.json_to_array(value, dtype, name)


class RestClient:
    """Client of the REST API (`/v1/models/NAME...`) over urllib.

    Args:
        host: server host name.
        port: REST port (8501 by TF Serving convention).
        model_name: model to query.
        timeout: seconds per HTTP request.
    """

    def __init__(self, host, port, model_name, timeout=30.0):
        self.host = host
        self.port = port
        self.model_name = model_name
        self.timeout = timeout
        self._output_dtypes = {}  # (version, signature) -> {output: numpy dtype}

    def _url(self, version=None, suffix=""):
        name = urllib.parse.quote(self.model_name, safe="")
        path = f"/v1/models/{name}" + (f"/versions/{int(version)}" if version is not None else "")
        return f"http://{self.host}:{self.port}{path}{suffix}"

    def _request(self, url, body=None):
        data = None if body is None else json.dumps(body, allow_nan=True).encode("utf-8")
        request = urllib.request.Request(
            url, data=data, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                message = json.loads(raw)["error"]
            except (ValueError, KeyError, TypeError):
                message = raw.decode("utf-8", "replace")
            raise ServingError(message, code=e.code) from None

    def status(self, version=None):
        """The model status JSON (`{"model_version_status": [...]}`)."""
        return self._request(self._url(version))

    def metadata(self, version=None):
        """The metadata JSON: `{"model_spec": ..., "metadata": {"signature_def": ...}}`."""
        return self._request(self._url(version, "/metadata"))

    def _signature_outputs(self, signature_name, version):
        key = (version, signature_name)
        if key not in self._output_dtypes:
            signatures = self.metadata(version)["metadata"]["signature_def"]["signature_def"]
            if signature_name not in signatures:
                raise ServingError(f"no signature '{signature_name}' in the model", code=404)
            outputs = signatures[signature_name].get("outputs", {})
            self._output_dtypes[key] = {
                name: _NUMPY_DTYPES.get(info.get("dtype"), None) for name, info in outputs.items()
            }
        return self._output_dtypes[key]

    def predict(self, inputs, signature_name=DEFAULT_SIGNATURE, version=None):
        """Runs a signature on `{input_name: array}`; returns `{output_name: np.ndarray}`."""
        output_dtypes = self._signature_outputs(signature_name, version)
        body = {
            "signature_name": signature_name,
            "inputs": {k: codec.array_to_json(codec.to_array(v), text_strings=False)
                       for k, v in inputs.items()},
        }
        outputs = self._request(self._url(version, ":predict"), body)["outputs"]
        if len(output_dtypes) == 1:  # TF Serving omits the name of a lone output.
            outputs = {next(iter(output_dtypes)): outputs}
        return {k: _json_to_array(v, output_dtypes.get(k), k) for k, v in outputs.items()}


class GrpcClient:
    """Client of `tensorflow.serving.PredictionService` over gRPC.

    Args:
        host: server host name.
        port: gRPC port (8500 by TF Serving convention).
        model_name: model to query.
        timeout: seconds per call.
        max_message_bytes: largest message sent or received.
    """

    def __init__(
        self, host, port, model_name, timeout=30.0, max_message_bytes=DEFAULT_MAX_MESSAGE_BYTES
    ):
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        self.model_name = model_name
        self.timeout = timeout
        self._grpc = grpc
        self.channel = grpc.insecure_channel(
            f"{host}:{port}",
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
            ],
        )
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)

    def close(self):
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _fill_spec(self, model_spec, version, signature_name=None):
        model_spec.name = self.model_name
        if version is not None:
            model_spec.version.value = int(version)
        if signature_name:
            model_spec.signature_name = signature_name

    def _call(self, method, request):
        try:
            return method(request, timeout=self.timeout)
        except self._grpc.RpcError as e:
            raise ServingError(e.details(), code=e.code()) from None

    def metadata(self, version=None):
        """The same JSON shape as `RestClient.metadata()`, from `GetModelMetadata`."""
        from google.protobuf import json_format
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._fill_spec(request.model_spec, version)
        response = self._call(self.stub.GetModelMetadata, request)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)

        def to_dict(message):
            return json_format.MessageToDict(
                message, preserving_proto_field_name=True, including_default_value_fields=True
            )

        return {
            "model_spec": to_dict(response.model_spec),
            "metadata": {"signature_def": to_dict(signature_map)},
        }

    def predict(self, inputs, signature_name=DEFAULT_SIGNATURE, version=None):
        """Runs a signature on `{input_name: array}`; returns `{output_name: np.ndarray}`."""
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        self._fill_spec(request.model_spec, version, signature_name)
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(codec.to_array(value)))
        response = self._call(self.stub.Predict, request)
        return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}


# The TFLite client step: raw inputs -> the tensors of a TFLite model (`serving/tflite_assets.py`).

_STRIP_PUNCTUATION = re.compile(r'[!"#$%&()\*\+,-\./:;<=>?@\[\\\]^_`{|}~\']')
_WHITESPACE = re.compile(r"[ \t\n\v\f\r]+")
_ASCII_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}


def load_tflite_assets(assets_dir):
    """`DIR/export/tflite/assets/` as a dict: `inputs.json` plus the vocabularies it names."""
    assets_dir = pathlib.Path(assets_dir)
    assets = json.loads((assets_dir / "inputs.json").read_text())
    assets["dir"] = assets_dir
    for tensor in assets["tensors"].values():
        text = tensor.get("text")
        if text and text["tokenizer"] == "text_vectorization":
            tokens = (assets_dir / text["vocabulary"]).read_text(encoding="utf-8").split("\n")
            tokens = tokens[:-1] if tokens and tokens[-1] == "" else tokens
            text["ids"] = {t: i + text["first_token_id"] for i, t in enumerate(tokens)}
        if "tabular" in tensor:
            tensor["stats"] = json.loads((assets_dir / tensor["tabular"]).read_text())
    return assets


def text_vectorization_ids(texts, text):
    """Strings -> int32 ids `(batch, sequence_length)` exactly as the model directory's
    `TextVectorization` makes them: ASCII lower-case, punctuation stripped, split on ASCII
    whitespace, ids from `vocab.txt` (first line = 2), 1 = unknown, 0 = padding."""
    length = text["sequence_length"]
    out = np.zeros((len(texts), length), np.int32)
    for row, value in enumerate(texts):
        value = value.decode("utf-8") if isinstance(value, bytes) else str(value)
        value = _STRIP_PUNCTUATION.sub("", value.translate(_ASCII_LOWER))
        tokens = [t for t in _WHITESPACE.split(value) if t][:length]
        out[row, :len(tokens)] = [text["ids"].get(t, text["oov_id"]) for t in tokens]
    return out


def _preset_ids(texts, assets_dir, text):
    """A keras_hub preset tokenizer's ids (needs keras_hub and TensorFlow on the client)."""
    from mmkeras.data import text as text_lib

    preprocessor = text_lib.load_preset_preprocessor(assets_dir / text["path"])
    strings = [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in texts]
    return np.asarray(preprocessor(strings)["token_ids"], np.int32)


def tabular_vector(columns, present, stats):
    """`{column: values}` (numbers with NaN for missing, category strings) -> the model's
    float32 vector: NaN -> the column's fill (training mean), (x - mean) / std, each category
    -> its id (position in the train vocabulary + 1; unknown 0). A row whose flag is 0 gets
    numbers 0 and categories "" first, as the pipeline's masked rows."""
    batch = len(present)
    on = np.asarray(present, np.float32) > 0
    mean = np.asarray(stats["mean"], np.float32)
    std = np.asarray(stats["std"], np.float32)
    fill = np.asarray(stats.get("fill", stats["mean"]), np.float32)
    numbers = np.zeros((batch, len(stats["numeric"])), np.float32)
    for j, name in enumerate(stats["numeric"]):
        numbers[:, j] = np.where(on, np.asarray(columns[name], np.float32), 0.0)
    numbers = np.where(np.isnan(numbers), fill, numbers)
    parts = [(numbers - mean) / std]
    for name, vocab in zip(stats["categorical"], stats["vocabularies"]):
        ids = {token: i + 1 for i, token in enumerate(vocab)}
        values = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in columns[name]]
        parts.append(np.array([[ids.get(v, 0) if o else ids.get("", 0)]
                               for v, o in zip(values, on)], np.float32))
    return np.concatenate(parts, axis=-1).astype(np.float32)


def _decode_image(data, shape):
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        img = img.convert("L" if shape[-1] == 1 else "RGB")
        array = np.asarray(img)
    array = array[..., None] if array.ndim == 2 else array
    if tuple(array.shape) != tuple(shape):
        raise ValueError(f"image has shape {array.shape}; the model takes {tuple(shape)}")
    return array.astype(np.float32) / 255.0


def _decode_wav(data, num_samples):
    with wave.open(io.BytesIO(data), "rb") as w:
        channels = w.getnchannels()
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    samples = samples[: len(samples) // channels * channels].reshape(-1, channels)[:, 0]
    waveform = samples.astype(np.float32) / 32768.0
    start = max((len(waveform) - num_samples) // 2, 0)
    waveform = waveform[start:start + num_samples]
    pad = num_samples - len(waveform)
    return np.pad(waveform, (pad // 2, pad - pad // 2))


def tflite_inputs(assets, raw_values):
    """The client step of a TFLite model: `serve_raw` inputs -> `serving_default` inputs.

    Args:
        assets: `load_tflite_assets(DIR/export/tflite/assets)` (or that path).
        raw_values: `{raw input name: batch}` as `serve_raw` takes them: `text` strings,
            tabular columns by name (floats, NaN = missing; category strings), `image_bytes` /
            `audio_bytes` encoded files, `<m>_present` flags (default 1).

    Returns:
        `{input name: np.ndarray}` for the TFLite `serving_default` signature runner.

    Example:
    ```python
    from ai_edge_litert.interpreter import Interpreter
    runner = Interpreter("DIR/export/tflite/model.tflite").get_signature_runner()
    x = tflite_inputs("DIR/export/tflite/assets", {"text": ["grinning face"],
                      "image_bytes": [png_bytes], "price": [float("nan")], "block": ["1F6"]})
    runner(**x)["probabilities"]
    ```
    """
    if not isinstance(assets, dict):
        assets = load_tflite_assets(assets)
    batch = len(next(iter(raw_values.values())))
    flags = {i["name"] for i in assets["inputs"] if i["kind"] == "presence"}
    out = {}
    for modality, tensor in assets["tensors"].items():
        flag = f"{modality}_present"
        present = np.asarray(raw_values.get(flag, np.ones(batch)), np.float32)
        on = present > 0
        shape = tensor["shape"]
        if tensor["kind"] == "text":
            texts = [t if o else "" for t, o in zip(raw_values[modality], on)]
            text = tensor["text"]
            if text["tokenizer"] == "text_vectorization":
                out[modality] = text_vectorization_ids(texts, text)
            else:
                out[modality] = _preset_ids(texts, assets["dir"], text)
        elif tensor["kind"] == "tabular":
            out[modality] = tabular_vector(raw_values, present, tensor["stats"])
        elif tensor["kind"] in ("image", "audio"):
            data = raw_values[f"{modality}_bytes"]
            decode = _decode_image if tensor["kind"] == "image" else (
                lambda d, s: _decode_wav(d, s[0]))
            out[modality] = np.stack([decode(bytes(d), shape) if o else
                                      np.zeros(shape, np.float32) for d, o in zip(data, on)])
        else:
            out[modality] = np.asarray(raw_values[modality], np.float32)
        if flag in flags:
            out[flag] = present
    return out


def _parse_pairs(pairs, flag):
    result = {}
    for pair in pairs or []:
        name, sep, path = pair.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"{flag} expects name=path, got {pair!r}")
        result[name] = path
    return result


@errors.command_line
def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m serving.client", description="Query a TF-Serving-compatible server."
    )
    protocol = parser.add_mutually_exclusive_group(required=True)
    protocol.add_argument("--rest", action="store_true", help="use the REST API")
    protocol.add_argument("--grpc", action="store_true", help="use the gRPC API")
    parser.add_argument("--host", default="localhost")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model-name", required=True)
    parser.add_argument("--signature-name", default=DEFAULT_SIGNATURE)
    parser.add_argument("--version", type=int, default=None)
    parser.add_argument(
        "--input", action="append", metavar="NAME=PATH.npy", help="numpy input (repeatable)"
    )
    parser.add_argument(
        "--input-file",
        action="append",
        metavar="NAME=PATH",
        help="raw file bytes as a batch of one string (repeatable)",
    )
    parser.add_argument("--metadata", action="store_true", help="print metadata instead")
    parser.add_argument("--timeout", type=float, default=30.0)
    errors.add_flags(parser)
    args = parser.parse_args(argv)

    cls = RestClient if args.rest else GrpcClient
    client = cls(args.host, args.port, args.model_name, timeout=args.timeout)
    try:
        if args.metadata:
            result = client.metadata(args.version)
        else:
            inputs = {k: np.load(v) for k, v in _parse_pairs(args.input, "--input").items()}
            for name, path in _parse_pairs(args.input_file, "--input-file").items():
                with open(path, "rb") as f:
                    inputs[name] = np.array([f.read()], dtype=object)
            if not inputs:
                parser.error("give at least one --input or --input-file (or --metadata)")
            outputs = client.predict(inputs, args.signature_name, args.version)
            result = {k: codec.array_to_json(v, text_strings=False) for k, v in outputs.items()}
    except ServingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(result, allow_nan=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
