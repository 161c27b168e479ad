"""TF Serving's REST API over a `Predictor`: the routes, and two HTTP stacks to serve them.

Routes (JSON in and out):
* `GET  /v1/models/NAME[/versions/N]` -> `{"model_version_status": [...]}`
* `GET  /v1/models/NAME[/versions/N]/metadata` -> `{"model_spec": ..., "metadata":
  {"signature_def": {"signature_def": {...}}}}` (JSON form of the SignatureDefMap proto)
* `POST /v1/models/NAME[/versions/N]:predict` with `{"signature_name": ..., "instances": [...]}`
  (row format: a list of `{input: value}` objects, or of bare values when the signature has
  one input) -> `{"predictions": [...]}`; or with `{"inputs": {...}}` (columnar) ->
  `{"outputs": {...}}`. A single output's name is omitted, as in TF Serving. Binary strings
  travel as `{"b64": "..."}`; string outputs are text when valid UTF-8 and their name does not
  end in `_bytes`, else `{"b64": ...}` (`serving/codec.py`).
* `GET  /monitoring/batching` -> the batcher's counters (`{"enabled": false}` without batching).

Errors are `{"error": "..."}` with 400 (anything wrong with the request's bytes: JSON, names,
dtypes, shapes, values, undecodable files; see `serving/validation.py`), 404 (unknown model,
version or signature), 411 (no Content-Length), 413 (body over the size limit) or 500 (a fault
of the server, logged; the server keeps running).

Two HTTP stacks serve the same `RestApi`: `aiohttp` (the default: one asyncio loop with C
HTTP parsing, request bodies parsed with `orjson`; predict calls are awaited, so idle
connections cost no threads) and the standard library alone (`--http-stack stdlib`:
`ThreadingHTTPServer`, one thread per connection, and `json`), the previous server's stack,
kept for comparison and for machines without the two packages.
`python -m benchmarks.serving --concurrency` measures both.
"""

import asyncio
import http.server
import json
import logging
import re
import threading
import urllib.parse

import numpy as np
import orjson
from aiohttp import web

from serving import codec
from serving.errors import DEFAULT_SIGNATURE
from serving.errors import InvalidArgumentError
from serving.errors import LengthRequiredError
from serving.errors import NotFoundError
from serving.errors import PayloadTooLargeError
from serving.errors import ServingError
from serving.status import message_to_dict
from serving.status import metadata_json
from serving.status import status_response
from serving.validation import numpy_dtype
from serving.validation import omittable

logger = logging.getLogger("serving.rest")

DRAIN_LIMIT_FACTOR = 4  # Oversized bodies up to 4x the limit are read and discarded.
_OFFLOAD_BYTES = 1 << 20  # bodies larger than this are decoded off the event loop
_URL = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>[0-9]+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<suffix>/metadata|:[A-Za-z]+)?/?$"
)
MONITORING_PATH = "/monitoring/batching"
_NOT_PARSED = object()


def _null_to_nan(value):
    """JSON nulls of a column where NaN means missing (a raw table column) -> NaN."""
    if value is None:
        return float("nan")
    if isinstance(value, list):
        return [_null_to_nan(v) for v in value]
    return value


def _row_column(name, values, spec):
    """A row-format column where some rows left the input out (None): zeros for those rows."""
    dtype = numpy_dtype(spec)
    dims = spec.shape.as_list()[1:] if spec.shape.rank else None
    rows = []
    for index, value in enumerate(values):
        if value is not None:
            try:
                rows.append(codec.json_to_array(value, dtype, name))
            except InvalidArgumentError as e:
                raise InvalidArgumentError(f"instance {index}: {e}") from None
            continue
        if dims is None or any(d is None for d in dims):
            raise InvalidArgumentError(
                f"instance {index} left out input '{name}', whose shape has unknown dimensions: "
                f"send it"
            )
        zeros = np.zeros(dims, dtype) if dtype != codec.STRING else np.full(dims, b"", object)
        rows.append(zeros)
    shapes = {r.shape for r in rows}
    if len(shapes) != 1:
        raise InvalidArgumentError(
            f"input '{name}' has examples of different shapes {sorted(shapes)[:2]} across instances"
        )
    return np.stack(rows) if rows[0].dtype != object else _stack_objects(rows)


def _stack_objects(rows):
    flat = np.empty(sum(r.size for r in rows), dtype=object)
    flat[:] = [x for row in rows for x in row.reshape(-1)]
    return flat.reshape((len(rows), *rows[0].shape))


class RestApi:
    """Routes REST requests; the HTTP stacks call `handle` (threads) or `handle_async`."""

    def __init__(self, predictor, fast_json=True):
        self.predictor = predictor
        self.repository = predictor.repository
        self.fast_json = fast_json

    def _route(self, method, path):
        """`(kind, name, version)` with kind in status/metadata/predict/monitoring."""
        url = urllib.parse.urlsplit(path)
        if method == "GET" and url.path.rstrip("/") == MONITORING_PATH:
            return "monitoring", None, None
        match = _URL.match(url.path)
        if not match:
            raise NotFoundError(f"Malformed request: {method} {url.path}")
        name = urllib.parse.unquote(match["name"])
        version = int(match["version"]) if match["version"] else None
        if match["label"]:
            raise NotFoundError(f"version labels are not supported (label '{match['label']}')")
        suffix = match["suffix"] or ""
        if method == "GET" and suffix == "":
            return "status", name, version
        if method == "GET" and suffix == "/metadata":
            return "metadata", name, version
        if method == "POST" and suffix == ":predict":
            return "predict", name, version
        if method == "POST" and suffix in (":classify", ":regress"):
            raise NotFoundError(f"{suffix[1:]} is not supported by this server; use :predict")
        raise NotFoundError(f"Malformed request: {method} {url.path}")

    def _get(self, kind, name, version):
        if kind == "monitoring":
            return 200, self.predictor.stats()
        if kind == "status":
            return 200, message_to_dict(status_response(self.repository, name, version))
        return 200, metadata_json(self.repository.get(name, version))

    def handle(self, method, path, read_body):
        """`(http_status, json_body)` of one request; `read_body()` returns the body bytes."""
        kind, name, version = self._route(method, path)
        if kind != "predict":
            return self._get(kind, name, version)
        body = read_body()
        with self.predictor.arrival():
            future, finish = self.start_predict(name, version, body)
        return 200, finish(future.result())

    async def handle_async(self, method, path, read_body):
        """`handle` for asyncio: `read_body` is a coroutine function; the call is awaited."""
        kind, name, version = self._route(method, path)
        if kind != "predict":
            return self._get(kind, name, version)
        body = await read_body()
        with self.predictor.arrival():
            if len(body) > _OFFLOAD_BYTES:
                loop = asyncio.get_running_loop()
                future, finish = await loop.run_in_executor(
                    None, self.start_predict, name, version, body)
            else:
                future, finish = self.start_predict(name, version, body)
        return 200, finish(await asyncio.wrap_future(future))

    def start_predict(self, name, version, body):
        """Decodes and validates a predict body and queues it: `(future, finish)`, where
        `finish(outputs)` is the response JSON."""
        request = self.parse_body(body)
        signature_name = request.get("signature_name") or DEFAULT_SIGNATURE
        model_version, signature = self.predictor.signature(name, version, signature_name)
        row_format = "instances" in request
        arrays = self.decode_inputs(signature, request)
        future = self.predictor.submit(model_version, signature, arrays)

        def finish(outputs):
            if row_format:
                return {"predictions": self._columns_to_rows(outputs)}
            if len(outputs) == 1:
                (only,) = outputs.items()
                return {"outputs": _to_json(*only)}
            return {"outputs": {k: _to_json(k, v) for k, v in outputs.items()}}

        return future, finish

    def parse_body(self, body):
        """The request object of a predict body; InvalidArgument for anything malformed."""
        request = _NOT_PARSED
        if self.fast_json:
            try:
                request = orjson.loads(body)  # ~7x faster than json on a 180 kB body of floats
            except orjson.JSONDecodeError:
                pass  # json accepts what orjson refuses: NaN, Infinity, 1e999 (checked later)
        if request is _NOT_PARSED:
            try:
                request = json.loads(body)
            except (UnicodeDecodeError, ValueError, RecursionError) as e:
                raise InvalidArgumentError(f"malformed JSON in request body: {e}"[:300]) from None
        if not isinstance(request, dict):
            raise InvalidArgumentError("request body must be a JSON object")
        signature_name = request.get("signature_name")
        if signature_name is not None and not isinstance(signature_name, str):
            raise InvalidArgumentError("'signature_name' must be a string")
        unknown_keys = sorted(set(request) - {"signature_name", "instances", "inputs"})
        if unknown_keys:
            raise InvalidArgumentError(f"unknown key '{unknown_keys[0][:100]}' in request body")
        if ("instances" in request) == ("inputs" in request):
            raise InvalidArgumentError(
                "request must have exactly one of 'instances' (row format) or 'inputs' "
                "(columnar format)"
            )
        return request

    @staticmethod
    def decode_inputs(signature, request):
        """`{input_name: np.ndarray}` of a parsed request (row or columnar format)."""
        specs = signature.input_specs
        nan_inputs = getattr(signature, "nan_inputs", frozenset())
        if "inputs" in request:
            columns = codec.columnar_inputs(request["inputs"], specs, signature.name)
            return {k: _decode(k, _null_to_nan(v) if k in nan_inputs else v, specs)
                    for k, v in columns.items()}
        optional = {n for f, data in omittable(signature).items() for n in [f, *data]}
        columns, rows = codec.rows_to_columns(request["instances"], specs, signature.name,
                                              optional)
        groups = dict(getattr(signature, "groups", ()))
        for name in nan_inputs & set(columns):
            # null, or a row leaving the cell out while sending its modality: a missing value
            group = next((g for g in groups.values() if name in g), (name,))
            members = [columns[k] for k in group if k in columns]
            if any(x is not None for x in columns[name]):
                columns[name] = [
                    v if v is not None or all(m[i] is None for m in members) else float("nan")
                    for i, v in enumerate(columns[name])]
        partial = {k for k, v in columns.items() if any(x is None for x in v)}
        arrays = {}
        for name, values in columns.items():
            if all(x is None for x in values):
                continue  # left out by every row: validation fills it in
            if name in partial and name in specs:
                arrays[name] = _row_column(name, values, specs[name])
            else:
                arrays[name] = _decode(name, values, specs)
        for flag, data in omittable(signature).items():
            _fill_row_flags(flag, data, columns, arrays, rows)
        return arrays

    @staticmethod
    def _columns_to_rows(outputs):
        batch_sizes = {v.shape[0] if v.ndim else None for v in outputs.values()}
        if len(batch_sizes) != 1 or None in batch_sizes:
            raise InvalidArgumentError(
                "outputs do not share a batch dimension; use the columnar 'inputs' format"
            )
        columns = {k: _to_json(k, v) for k, v in outputs.items()}
        (batch,) = batch_sizes
        if len(columns) == 1:
            return next(iter(columns.values()))
        return [{k: v[i] for k, v in columns.items()} for i in range(batch)]


def _decode(name, value, specs):
    if name not in specs:
        raise InvalidArgumentError(
            f"unknown input '{name[:100]}'; expected inputs: {sorted(specs)}")
    return codec.json_to_array(value, numpy_dtype(specs[name]), name)


def _fill_row_flags(flag, data, columns, arrays, rows):
    """Row format: rows that left a modality out get flag 0; a flag of 1 there is an error."""
    data_rows = [columns.get(k) for k in data if k in columns]
    if not data_rows:
        return
    left_out = [all(col[i] is None for col in data_rows) for i in range(rows)]
    if not any(left_out):
        return
    flags = columns.get(flag, [None] * rows)
    values = []
    for i, (omitted, value) in enumerate(zip(left_out, flags)):
        if value is None:
            values.append(0.0 if omitted else 1.0)
        else:
            if omitted and value != 0:
                raise InvalidArgumentError(
                    f"instance {i} left out '{data[0]}' but its '{flag}' is "
                    f"{json.dumps(value)[:50]}: send '{data[0]}' or set the flag to 0")
            values.append(value)
    arrays[flag] = codec.json_to_array(values, np.float32, flag)


def _to_json(name, array):
    return codec.array_to_json(array, text_strings=not name.endswith("_bytes"))


def error_body(error, method, path):
    """`(status, json)` for an exception raised while handling a request."""
    if isinstance(error, ServingError):
        return error.http_status, {"error": str(error)}
    logger.error("unexpected error handling %s %s", method, path, exc_info=error)
    return 500, {"error": f"internal error: {type(error).__name__}: {error}"[:1000]}


def encode_body(status, body):
    try:
        return status, json.dumps(body, allow_nan=True).encode("utf-8")
    except (TypeError, ValueError) as e:
        return 500, json.dumps({"error": f"could not encode response: {e}"}).encode()


# The standard library's threaded HTTP server.


class _RestHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "mmkeras-serving/0.2"
    timeout = 120  # Seconds an idle keep-alive connection may hold its thread.

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def log_message(self, format, *args):  # noqa: A002 (BaseHTTPRequestHandler's name)
        logger.debug("%s %s", self.address_string(), format % args)

    def _read_body(self):
        self._body_read = True
        length = _content_length(self.headers.get("Transfer-Encoding", ""),
                                 self.headers.get("Content-Length"))
        limit = self.server.max_payload_bytes
        if length > limit:
            self.close_connection = True
            remaining = min(length, limit * DRAIN_LIMIT_FACTOR)
            while remaining > 0:  # read and drop, so the client sees the 413, not a reset
                chunk = self.rfile.read(min(remaining, 1 << 20))
                if not chunk:
                    break
                remaining -= len(chunk)
            raise _too_large(length, limit)
        return self.rfile.read(length)

    def _dispatch(self, method):
        self._body_read = False
        try:
            status, body = self.server.api.handle(method, self.path, self._read_body)
        except Exception as e:  # Never let one request take the server down.
            status, body = error_body(e, method, self.path)
            if isinstance(e, (LengthRequiredError, PayloadTooLargeError)) or (
                    isinstance(e, InvalidArgumentError) and "Content-Length" in str(e)):
                self.close_connection = True
        status, payload = encode_body(status, body)
        if not self._body_read and (
            self.headers.get("Content-Length", "0") != "0" or "Transfer-Encoding" in self.headers
        ):
            self.close_connection = True  # An unread body would corrupt the next request.
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)


def _content_length(transfer_encoding, length_header):
    if "chunked" in transfer_encoding.lower():
        raise LengthRequiredError("chunked request bodies are not supported; send Content-Length")
    if length_header is None:
        raise LengthRequiredError("Content-Length header is required")
    try:
        length = int(length_header)
        if length < 0:
            raise ValueError(length_header)
    except ValueError:
        raise InvalidArgumentError(f"invalid Content-Length {length_header[:50]!r}") from None
    return length


def _too_large(length, limit):
    return PayloadTooLargeError(
        f"request body of {length} bytes exceeds the limit of {limit} bytes "
        f"(--max-payload-bytes)"
    )


class StdlibRestServer(http.server.ThreadingHTTPServer):
    """`ThreadingHTTPServer` serving a `RestApi` (one thread per connection)."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address, api, max_payload_bytes):
        self.api = api
        self.max_payload_bytes = max_payload_bytes
        super().__init__(address, _RestHandler)
        self._thread = None

    @property
    def port(self):
        return self.server_address[1]

    def start(self):
        self._thread = threading.Thread(
            target=self.serve_forever, name="rest", kwargs={"poll_interval": 0.2})
        self._thread.start()

    def stop(self):
        self.shutdown()
        self.server_close()


# aiohttp.


class AiohttpRestServer:
    """An aiohttp server (its own asyncio loop in one thread) serving a `RestApi`."""

    def __init__(self, address, api, max_payload_bytes):
        self.api = api
        self.max_payload_bytes = max_payload_bytes
        self.loop = asyncio.new_event_loop()
        app = web.Application(client_max_size=max_payload_bytes + 1)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False)
        host, port = address
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, host, port, backlog=1024, reuse_address=True)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        self._thread = None

    async def _read_body(self, request):
        length = _content_length(request.headers.get("Transfer-Encoding", ""),
                                 request.headers.get("Content-Length"))
        limit = self.max_payload_bytes
        if length > limit:
            remaining = min(length, limit * DRAIN_LIMIT_FACTOR)
            while remaining > 0:
                chunk = await request.content.read(min(remaining, 1 << 20))
                if not chunk:
                    break
                remaining -= len(chunk)
            raise _too_large(length, limit)
        return await request.read()

    async def _dispatch(self, request):
        method, path = request.method, request.raw_path
        close = False
        try:
            status, body = await self.api.handle_async(
                method, path, lambda: self._read_body(request))
        except Exception as e:  # Never let one request take the server down.
            status, body = error_body(e, method, path)
            close = status in (411, 413) or "Content-Length" in body.get("error", "")
        status, payload = encode_body(status, body)
        response = web.Response(status=status, body=payload, content_type="application/json")
        if close:
            response.force_close()
        return response

    def start(self):
        self._thread = threading.Thread(target=self.loop.run_forever, name="rest", daemon=True)
        self._thread.start()

    def stop(self):
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)


HTTP_STACKS = {"aiohttp": AiohttpRestServer, "stdlib": StdlibRestServer}
