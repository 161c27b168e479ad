"""TF Serving's gRPC API (`tensorflow_serving.apis`) over a `Predictor`.

`PredictionService.Predict` and `GetModelMetadata`, and `ModelService.GetModelStatus`.
`model_spec.name`, `model_spec.version` and `model_spec.signature_name` (default
`serving_default`) are honoured; version labels are not supported. Bad requests abort with
INVALID_ARGUMENT (the same checks and messages as REST, `serving/validation.py`), unknown
models/versions/signatures with NOT_FOUND, messages over the size limit with
RESOURCE_EXHAUSTED. Predict requests go through the same `Predictor` (and batcher) as REST.
"""

import logging
from concurrent import futures

import grpc
import tensorflow as tf
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from serving.errors import DEFAULT_SIGNATURE
from serving.errors import InvalidArgumentError
from serving.errors import NotFoundError
from serving.errors import ServingError
from serving.status import metadata_response
from serving.status import status_response

logger = logging.getLogger("serving.grpc")


def tensor_proto_to_array(input_name, proto):
    try:
        return tf.make_ndarray(proto)
    except Exception as e:  # any malformed proto is the client's
        raise InvalidArgumentError(
            f"input '{input_name}' is not a valid TensorProto: {type(e).__name__}: {e}"[:300]
        ) from None


def _abort(context, error):
    if isinstance(error, ServingError):
        code = getattr(grpc.StatusCode, error.grpc_code)
        message = str(error)
    else:
        logger.error("unexpected error in gRPC handler", exc_info=error)
        code = grpc.StatusCode.INTERNAL
        message = f"internal error: {type(error).__name__}: {error}"[:1000]
    context.abort(code, message)


def _version_from_spec(model_spec):
    if model_spec.version_label:
        raise NotFoundError(
            f"version labels are not supported (label '{model_spec.version_label}')"
        )
    return model_spec.version.value if model_spec.HasField("version") else None


def _guarded(method):
    """Runs a handler body; any exception aborts the call with its status (never a crash)."""

    def wrapper(self, request, context):
        error = None
        try:
            response = method(self, request)
        except Exception as e:
            error = e
        if error is not None:
            _abort(context, error)
        return response

    wrapper.__name__ = method.__name__
    return wrapper


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """`PredictionService` over a `Predictor`: Predict and GetModelMetadata."""

    def __init__(self, predictor):
        self.predictor = predictor
        self.repository = predictor.repository

    @_guarded
    def Predict(self, request):  # noqa: N802 (gRPC method name)
        spec = request.model_spec
        model_version, signature = self.predictor.signature(
            spec.name, _version_from_spec(spec), spec.signature_name or DEFAULT_SIGNATURE)
        for name in request.inputs:
            if name not in signature.input_specs:
                raise InvalidArgumentError(
                    f"unknown input '{name[:100]}' for signature '{signature.name}'; "
                    f"expected inputs: {sorted(signature.input_specs)}"
                )
        arrays = {name: tensor_proto_to_array(name, proto)
                  for name, proto in request.inputs.items()}
        for name in request.output_filter:
            if name not in signature.output_specs:
                raise InvalidArgumentError(
                    f"output_filter names unknown output '{name[:100]}'; signature "
                    f"'{signature.name}' has outputs {sorted(signature.output_specs)}"
                )
        outputs = self.predictor.predict(model_version, signature, arrays)
        wanted = set(request.output_filter) or set(outputs)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = model_version.model_name
        response.model_spec.version.value = model_version.version
        response.model_spec.signature_name = signature.name
        for name, value in outputs.items():
            if name in wanted:
                response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
        return response

    @_guarded
    def GetModelMetadata(self, request):  # noqa: N802 (gRPC method name)
        fields = list(request.metadata_field)
        if not fields:
            raise InvalidArgumentError(
                "GetModelMetadataRequest must specify at least one metadata_field"
            )
        unsupported = [f for f in fields if f != "signature_def"]
        if unsupported:
            raise InvalidArgumentError(
                f"Metadata field {unsupported[0][:100]} is not supported (only signature_def)"
            )
        spec = request.model_spec
        return metadata_response(self.repository.get(spec.name, _version_from_spec(spec)))


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """`ModelService.GetModelStatus` (model reloading via gRPC is not supported)."""

    def __init__(self, repository):
        self.repository = repository

    @_guarded
    def GetModelStatus(self, request):  # noqa: N802 (gRPC method name)
        spec = request.model_spec
        return status_response(self.repository, spec.name, _version_from_spec(spec))


def build_grpc_server(predictor, host, port, max_message_bytes, workers=8):
    """Creates (not starts) the gRPC server; returns `(server, bound_port)`."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc"),
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ],
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(predictor), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        ModelServicer(predictor.repository), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if not bound:
        raise RuntimeError(f"could not bind gRPC port {host}:{port}")
    return server, bound
