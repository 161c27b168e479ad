"""The errors of the serving package and the default signature name, shared by every module.

`ServingError` is what a server answers a client with (each subclass carries its HTTP status
and gRPC status-code name) and what `serving.client` raises when a server refuses a request
(then `.code` is the HTTP status or the `grpc.StatusCode` the server sent). This module imports
nothing beyond the standard library, so the client stays free of TensorFlow.
"""

DEFAULT_SIGNATURE = "serving_default"  # the signature TF Serving uses when a request names none


class ServingError(Exception):
    """A request refused by a server.

    Args:
        message: what was wrong, naming the input (and example) when there is one.
        code: the status a client received (HTTP status or `grpc.StatusCode`); by default the
            class's `http_status`.
    """

    http_status = 500
    grpc_code = "INTERNAL"

    def __init__(self, message, code=None):
        super().__init__(message if code is None else f"{code}: {message}")
        self.message = message
        self.code = self.http_status if code is None else code


class InvalidArgumentError(ServingError):
    """The client's request is malformed: HTTP 400, gRPC INVALID_ARGUMENT."""

    http_status = 400
    grpc_code = "INVALID_ARGUMENT"


class NotFoundError(ServingError):
    """Unknown model, version or signature: HTTP 404, gRPC NOT_FOUND."""

    http_status = 404
    grpc_code = "NOT_FOUND"


class LengthRequiredError(ServingError):
    """A REST body without Content-Length: HTTP 411."""

    http_status = 411
    grpc_code = "INVALID_ARGUMENT"


class PayloadTooLargeError(ServingError):
    """A body or message over the size limit: HTTP 413, gRPC RESOURCE_EXHAUSTED."""

    http_status = 413
    grpc_code = "RESOURCE_EXHAUSTED"
