"""Request validation and the REST predict path in-process on a real export: Hypothesis sends
arbitrary bytes, JSON, shapes and dtypes; nothing may crash or be answered with a 500."""

import json

import numpy as np
import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from serving import rest
from serving import validation
from serving.errors import InvalidArgumentError
from serving.errors import ServingError
from serving.model_repository import ModelRepository
from serving.predictor import Predictor

pytestmark = pytest.mark.large  # a trained and exported model

NAME = "avmnist_early_fusion"
PATH = f"/v1/models/{NAME}:predict"
SIGNATURES = ["serving_default", "serve_raw", "serve_examples"]
INPUT_NAMES = ["image", "audio", "image_present", "audio_present", "image_bytes", "audio_bytes",
               "examples", "bogus"]
DTYPES = [np.float16, np.float32, np.float64, np.int32, np.int64, np.uint8, np.bool_, object]
PROPERTY = settings(max_examples=120, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=6)
    | st.builds(lambda b: {"b64": b}, st.text(max_size=12)),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(INPUT_NAMES) | st.text(max_size=4), inner, max_size=4),
    max_leaves=30,
)


@pytest.fixture(scope="module")
def api(real_export):
    repository = ModelRepository(str(real_export.savedmodel_root))
    repository.refresh()
    predictor = Predictor(repository, batcher=None)
    yield rest.RestApi(predictor)
    predictor.stop()


def _status(api, body):
    """The HTTP status the server would answer `body` with (and the JSON it would send)."""
    try:
        status, payload = api.handle("POST", PATH, lambda: body)
    except Exception as e:  # what the HTTP stacks do with an exception
        status, payload = rest.error_body(e, "POST", PATH)
    status, encoded = rest.encode_body(status, payload)
    json.loads(encoded)
    return status, payload


@PROPERTY
@given(st.binary(max_size=3000))
def test_arbitrary_bytes_are_never_a_500(api, body):
    status, payload = _status(api, body)
    assert status in (200, 400, 404), payload


@PROPERTY
@given(JSON)
def test_arbitrary_json_is_never_a_500(api, value):
    status, payload = _status(api, json.dumps(value, allow_nan=True).encode())
    assert status in (200, 400, 404), payload


@st.composite
def requests(draw):
    """A request with the signature's input names (or some others) and arbitrary values."""
    signature = draw(st.sampled_from(SIGNATURES))
    names = draw(st.lists(st.sampled_from(INPUT_NAMES), min_size=0, max_size=5, unique=True))
    inputs = {}
    for name in names:
        kind = draw(st.sampled_from(["json", "array", "b64"]))
        if kind == "json":
            inputs[name] = draw(JSON)
        elif kind == "b64":
            inputs[name] = [{"b64": __import__("base64").b64encode(b).decode()}
                            for b in draw(st.lists(st.binary(max_size=40), max_size=3))]
        else:
            dtype = draw(st.sampled_from([np.float32, np.float64, np.int64, np.bool_]))
            shape = draw(st.sampled_from([(1,), (2,), (1, 8000), (2, 8000), (1, 28, 28, 1),
                                          (2, 28, 28, 1), (1, 28, 28), (3, 4)]))
            inputs[name] = draw(hnp.arrays(dtype, shape, elements=hnp.from_dtype(
                np.dtype(dtype), allow_nan=True, allow_infinity=True)
                if dtype != np.float64 else st.floats(-1e3, 1e3))).tolist()
    key = draw(st.sampled_from(["inputs", "instances"]))
    body = {"signature_name": signature, key: inputs if key == "inputs" else [inputs]}
    return json.dumps(body, allow_nan=True).encode()


@PROPERTY
@given(requests())
def test_arbitrary_inputs_are_never_a_500(api, body):
    status, payload = _status(api, body)
    assert status in (200, 400, 404), payload
    if status == 400:
        assert payload["error"] and len(payload["error"]) < 2000


@PROPERTY
@given(st.dictionaries(
    st.sampled_from(["image", "audio", "image_present", "audio_present", "extra"]),
    st.sampled_from(DTYPES).flatmap(lambda d: hnp.arrays(
        d, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=3))
        if d is not object else hnp.arrays(object, (2,), elements=st.binary(max_size=4))),
    max_size=5))
def test_validation_of_any_arrays_refuses_clearly_or_runs(api, arrays):
    """What the gRPC front end hands over (TensorProtos of any dtype and shape)."""
    model_version, signature = api.predictor.signature(NAME, None, "serving_default")
    try:
        outputs = api.predictor.predict(model_version, signature, arrays)
    except InvalidArgumentError as e:
        assert str(e)
        return
    except ServingError as e:  # pragma: no cover - shown on failure
        raise AssertionError(f"not a 400: {type(e).__name__}: {e}") from e
    assert outputs["probabilities"].shape[1] == 10


def test_omittable_modalities_of_the_real_signatures(api):
    mv = api.repository.get(NAME)
    assert validation.omittable(mv.signature("serving_default")) == {
        "image_present": ["image"], "audio_present": ["audio"]}
    assert validation.omittable(mv.signature("serve_raw")) == {
        "image_present": ["image_bytes"], "audio_present": ["audio_bytes"]}
    assert validation.omittable(mv.signature("serve_examples")) == {}


def test_fill_and_flag_checks(api):
    signature = api.repository.get(NAME).signature("serving_default")
    image = np.ones((2, 28, 28, 1), np.float32)
    arrays, batch = validation.validate(signature, {"image": image})
    assert batch == 2
    samples = signature.input_specs["audio"].shape[-1]  # the window (speech recipe: 3 s)
    np.testing.assert_array_equal(arrays["audio"], np.zeros((2, samples), np.float32))
    np.testing.assert_array_equal(arrays["audio_present"], [0, 0])
    np.testing.assert_array_equal(arrays["image_present"], [1, 1])  # data sent: present
    with pytest.raises(InvalidArgumentError, match="no other input gives the batch size"):
        validation.validate(signature, {})
    with pytest.raises(InvalidArgumentError, match="'image_present' example 1 is 2.0"):
        validation.validate(signature, {"image": image,
                                        "image_present": np.array([1, 2], np.float32)})
    raw = api.repository.get(NAME).signature("serve_raw")
    arrays, _ = validation.validate(raw, {"audio_present": np.zeros(3, np.float32)})
    assert list(arrays["audio_bytes"]) == [b""] * 3 and list(arrays["image_bytes"]) == [b""] * 3
