"""`serving.codec`, the JSON <-> tensor encoding shared by the server and the client:
round trips and refusals, with Hypothesis generating arrays and arbitrary JSON."""

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from serving import codec
from serving.errors import InvalidArgumentError

NUMERIC = [np.float16, np.float32, np.float64, np.int8, np.int32, np.int64, np.uint8,
           np.uint16, np.bool_]
# Sides >= 1: an empty JSON list carries no inner dimensions (nor does TF Serving's JSON).
SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=3),
    max_leaves=25,
)


def _wire(value):
    return json.loads(json.dumps(value, allow_nan=True))


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(NUMERIC).flatmap(lambda d: hnp.arrays(d, SHAPES)))
def test_numeric_round_trip(array):
    back = codec.json_to_array(_wire(codec.array_to_json(array)), array.dtype, "x")
    assert back.shape == array.shape
    if array.dtype == np.float16:  # sent as float32 values: exact in float16 again
        np.testing.assert_array_equal(back, array)
    else:
        assert back.dtype == array.dtype
        np.testing.assert_array_equal(back, array)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=20), min_size=0, max_size=6))
def test_bytes_round_trip_as_b64_and_text(items):
    array = np.empty(len(items), dtype=object)
    array[:] = items
    for text_strings in (False, True):
        encoded = _wire(codec.array_to_json(array, text_strings=text_strings))
        back = codec.json_to_array(encoded, codec.STRING, "x")
        assert back.shape == array.shape and list(back) == items
    assert all(isinstance(v, dict) for v in codec.array_to_json(array, text_strings=False))


@settings(max_examples=300, deadline=None)
@given(JSON, st.sampled_from(NUMERIC + [object]))
def test_arbitrary_json_is_an_array_or_a_clear_refusal(value, dtype):
    try:
        array = codec.json_to_array(value, dtype, "some_input")
    except InvalidArgumentError as e:
        assert "some_input" in str(e)
        return
    assert array.dtype == np.dtype(dtype)


def test_refusals_name_the_input_and_value():
    cases = [
        ([1.0, "a"], np.float32, "expects float32 values, got str"),
        ([1.0, None], np.float32, "got NoneType"),
        ([True, False], np.float32, "got bool"),
        ([1.5], np.int32, "got float 1.5"),
        ([2 ** 40], np.int32, "outside the range of int32"),
        ([10 ** 400], np.float32, "outside the range"),
        ([[1.0], [1.0, 2.0]], np.float32, "ragged"),
        ([[1.0], 2.0], np.float32, "ragged"),
        ([{"b64": "!!"}], object, "invalid base64"),
        ([3], object, "expects strings"),
        ([1], np.complex64, "no JSON encoding"),
    ]
    for value, dtype, fragment in cases:
        with pytest.raises(InvalidArgumentError, match="input 'x'") as info:
            codec.json_to_array(value, dtype, "x")
        assert fragment in str(info.value), (value, str(info.value))


def test_deep_nesting_is_refused_not_a_recursion_error():
    value = 0.0
    for _ in range(5000):
        value = [value]
    for dtype in (np.float32, object):
        with pytest.raises(InvalidArgumentError, match="input 'x' is nested deeper than 32"):
            codec.json_to_array(value, dtype, "x")


def test_rows_and_columns():
    names = {"image": None, "audio": None, "audio_present": None}
    columns, rows = codec.rows_to_columns(
        [{"image": 1, "audio": 2, "audio_present": 1}, {"image": 3}], names, "s",
        optional={"audio", "audio_present"})
    assert rows == 2 and columns["audio"] == [2, None] and columns["image"] == [1, 3]
    with pytest.raises(InvalidArgumentError, match="instance 1"):
        codec.rows_to_columns([{"image": 1}, {"audio": 2}], names, "s")
    assert codec.columnar_inputs([1, 2], {"x": None}, "s") == {"x": [1, 2]}
    with pytest.raises(InvalidArgumentError, match="keyed by input name"):
        codec.columnar_inputs([1, 2], names, "s")
