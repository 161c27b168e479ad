"""A local model server speaking TF Serving's REST and gRPC contract over exported SavedModels.

The real `tensorflow_model_server` serves the very same artifacts; this module exists for
machines where it cannot be installed (tests, laptops, CI). Run either one against the TF
Serving layout `<base>/<model_name>/<version>/saved_model.pb`:

    # this server
    python -m serving.server --model-base-path /abs/BASE --model-name NAME \
        --rest-port 8501 --grpc-port 8500
    # the real one (same URLs, same protos, same JSON)
    tensorflow_model_server --rest_api_port=8501 --port=8500 \
        --model_name=NAME --model_base_path=/abs/BASE/NAME

`--model-base-path` may be the model's own directory (as TF Serving expects) or the directory
holding several model directories; see `serving/model_repository.py` for the exact rule,
the version policy (all versions found stay loaded unless `--num-versions N`) and how new
versions are picked up every `--poll-seconds` without a restart. With port 0 the OS picks a
free port. When both endpoints listen, one line is printed on stdout:

    READY rest=<port> grpc=<port>

Logs go to stderr. SIGTERM or SIGINT stops the server.

The pieces: `serving/rest.py` (routes, the aiohttp and standard-library HTTP stacks),
`serving/grpc_service.py` (gRPC services), `serving/codec.py` (JSON <-> tensors, shared with
the client), `serving/validation.py` (request checks, omitted modalities),
`serving/batching.py` (signature calls and the batcher), `serving/predictor.py` (the predict
path both front ends share), `serving/status.py` (status and metadata protos).

Every malformed request gets HTTP 400 / gRPC INVALID_ARGUMENT naming the input (and the
example, for values and undecodable bytes): unknown or missing inputs, wrong dtype, rank or
fixed dimension, ragged or null JSON, bad base64, inputs disagreeing on the batch size, NaN or
Inf (unless `--allow-non-finite`), presence flags other than 0 and 1, bytes the model's
decoders refuse. A modality with a presence flag may be left out (filled with zeros, flag 0).

Batching (on by default; `--no-enable-batching` runs each request alone): concurrent requests
to the same model version and signature are merged into one call of at most
`--max-batch-size` examples, waiting at most `--batch-timeout-micros` for company (default 0:
a batch holds the requests that arrived while the previous call ran, plus those still being
decoded, for at most 2 ms, so a lone client waits for nobody). `GET /monitoring/batching` shows
the counters.
"""

import argparse
import logging
import signal
import sys
import threading

from mmkeras import errors
from serving.batching import DEFAULT_MAX_BATCH_SIZE
from serving.batching import DEFAULT_TIMEOUT_MICROS
from serving.batching import Batcher
from serving.errors import DEFAULT_SIGNATURE  # noqa: F401 (re-exported for callers)
from serving.errors import ServingError  # noqa: F401 (re-exported for callers)
from serving.grpc_service import build_grpc_server
from serving.model_repository import ModelRepository
from serving.predictor import Predictor
from serving.rest import HTTP_STACKS
from serving.rest import RestApi

logger = logging.getLogger("serving.server")

DEFAULT_MAX_PAYLOAD_BYTES = 64 * 1024 * 1024


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m serving.server",
        description="Serve TF-Serving-layout SavedModels over TF Serving's REST and gRPC APIs.",
    )
    parser.add_argument(
        "--model-base-path",
        required=True,
        help="<base>/<model_name> holding version dirs, or <base> holding model dirs",
    )
    parser.add_argument("--model-name", default=None, help="serve only this model")
    parser.add_argument("--rest-port", type=int, default=8501, help="0 picks a free port")
    parser.add_argument("--grpc-port", type=int, default=8500, help="0 picks a free port")
    parser.add_argument(
        "--host", default="127.0.0.1", help="interface to bind (0.0.0.0 for all)"
    )
    parser.add_argument(
        "--poll-seconds", type=float, default=2.0, help="version poll interval; 0 disables"
    )
    parser.add_argument(
        "--num-versions", type=int, default=0, help="keep the newest N versions (0: all)"
    )
    parser.add_argument(
        "--max-payload-bytes",
        type=int,
        default=DEFAULT_MAX_PAYLOAD_BYTES,
        help="largest REST body / gRPC message accepted",
    )
    parser.add_argument("--grpc-workers", type=int, default=8)
    parser.add_argument(
        "--enable-batching", action=argparse.BooleanOptionalAction, default=True,
        help="merge concurrent requests to the same signature into one call (default: on)",
    )
    parser.add_argument(
        "--max-batch-size", type=int, default=DEFAULT_MAX_BATCH_SIZE,
        help="most examples in one merged call",
    )
    parser.add_argument(
        "--batch-timeout-micros", type=int, default=DEFAULT_TIMEOUT_MICROS,
        help="longest a request waits for others to join its batch (0: no waiting)",
    )
    parser.add_argument(
        "--allow-non-finite", action="store_true",
        help="accept NaN and Inf in float inputs (refused with 400 by default)",
    )
    parser.add_argument(
        "--http-stack", choices=sorted(HTTP_STACKS), default="aiohttp",
        help="REST server: aiohttp (default) or the standard library's ThreadingHTTPServer",
    )
    parser.add_argument("--log-level", default="INFO")
    errors.add_flags(parser)
    args = parser.parse_args(argv)
    if args.max_batch_size < 1:
        parser.error(f"--max-batch-size must be at least 1, got {args.max_batch_size}")
    if args.batch_timeout_micros < 0:
        parser.error(f"--batch-timeout-micros must be >= 0, got {args.batch_timeout_micros}")
    return args


@errors.command_line
def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    repository = ModelRepository(
        args.model_base_path, model_name=args.model_name, num_versions=args.num_versions
    )
    repository.refresh()
    if not repository.model_names():
        logger.warning("no models under %s yet; waiting for them", args.model_base_path)

    batcher = None
    if args.enable_batching:
        batcher = Batcher(args.max_batch_size, args.batch_timeout_micros)
    predictor = Predictor(repository, batcher, allow_non_finite=args.allow_non_finite,
                          workers=args.grpc_workers)
    api = RestApi(predictor, fast_json=args.http_stack != "stdlib")
    rest_server = HTTP_STACKS[args.http_stack]((args.host, args.rest_port), api,
                                               args.max_payload_bytes)
    grpc_server, grpc_port = build_grpc_server(
        predictor, args.host, args.grpc_port, args.max_payload_bytes, args.grpc_workers
    )
    grpc_server.start()
    rest_server.start()
    repository.start_polling(args.poll_seconds)

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    print(f"READY rest={rest_server.port} grpc={grpc_port}", flush=True)
    logger.info(
        "serving %s: REST (%s) on %s:%d, gRPC on %s:%d; batching %s",
        repository.model_names(), args.http_stack, args.host, rest_server.port, args.host,
        grpc_port,
        f"on (max {args.max_batch_size} examples, timeout {args.batch_timeout_micros} us)"
        if batcher else "off",
    )
    while not stop.wait(1.0):
        pass
    logger.info("shutting down")
    repository.stop()
    rest_server.stop()
    grpc_server.stop(grace=2).wait()
    predictor.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
