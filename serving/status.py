"""TF Serving's model status and metadata messages, built once for both front ends."""

from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import get_model_status_pb2


def message_to_dict(message):
    """A proto as TF Serving's REST JSON (proto field names, default values included)."""
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, including_default_value_fields=True
    )


def status_response(repository, model_name, version=None):
    """Builds a `GetModelStatusResponse` for a model (all versions, or one)."""
    response = get_model_status_pb2.GetModelStatusResponse()
    states = get_model_status_pb2.ModelVersionStatus.State
    for status in repository.statuses(model_name, version):
        entry = response.model_version_status.add()
        entry.version = status.version
        entry.state = states.Value(status.state)
        enum = entry.status.DESCRIPTOR.fields_by_name["error_code"].enum_type
        entry.status.error_code = enum.values_by_name[status.error_code].number
        entry.status.error_message = status.error_message
    return response


def metadata_response(model_version):
    """Builds a `GetModelMetadataResponse` with the SignatureDefMap packed as TF Serving does."""
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = model_version.model_name
    response.model_spec.version.value = model_version.version
    response.metadata["signature_def"].Pack(model_version.signature_def_map)
    return response


def metadata_json(model_version):
    """REST form of the metadata: the Any in `metadata` is shown as its SignatureDefMap JSON."""
    return {
        "model_spec": message_to_dict(metadata_response(model_version).model_spec),
        "metadata": {"signature_def": message_to_dict(model_version.signature_def_map)},
    }
