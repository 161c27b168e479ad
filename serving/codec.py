"""TF Serving's REST JSON encoding of tensors, both ways; used by the server and the client.

Numbers travel as (nested) JSON lists; binary strings as `{"b64": "..."}` objects; text as JSON
strings. `json_to_array` turns a JSON value into a numpy array of a given dtype and raises
`InvalidArgumentError` naming the input for anything that does not fit (ragged lists, nulls,
strings for numbers, booleans for numbers, numbers out of range, bad base64). `array_to_json`
turns an array back into JSON-ready lists. `rows_to_columns` and `columnar_inputs` read the
request's row (`instances`) and columnar (`inputs`) formats.

Only numpy and the standard library are imported, so the client needs no TensorFlow; string
tensors are numpy object arrays of `bytes`.
"""

import base64
import binascii
import json

import numpy as np

from serving.errors import InvalidArgumentError

STRING = np.dtype(object)  # the numpy dtype of string tensors
_NUMERIC_KINDS = "biuf"
_MAX_RANK = 32  # numpy's limit
_SHOWN = 50  # characters of an offending JSON value quoted in a message


def _shown(value):
    try:
        text = json.dumps(value, allow_nan=True)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    return text[:_SHOWN]


def nested_shape(value, input_name):
    """`(shape, flat leaves)` of a nested JSON list; InvalidArgument when it is ragged.

    Iterative, so that deeply nested JSON cannot exhaust Python's recursion limit.
    """
    if not isinstance(value, list):
        return (), [value]
    shape = []
    level = [value]
    while True:
        lists = [isinstance(item, list) for item in level]
        if not all(lists):
            if any(lists):
                raise InvalidArgumentError(
                    f"input '{input_name}' is a ragged nested list: lists and values mixed at "
                    f"depth {len(shape)}"
                )
            return tuple(shape), level
        sizes = {len(item) for item in level}
        if len(sizes) != 1:
            raise InvalidArgumentError(
                f"input '{input_name}' is a ragged nested list: lists of lengths "
                f"{sorted(sizes)[:2]} at depth {len(shape)}"
            )
        (size,) = sizes
        shape.append(size)
        if len(shape) > _MAX_RANK:
            raise InvalidArgumentError(
                f"input '{input_name}' is nested deeper than {_MAX_RANK} levels"
            )
        if size == 0:
            return tuple(shape), []
        level = [x for item in level for x in item]


def _decode_string_leaf(leaf, input_name):
    if isinstance(leaf, str):
        return leaf.encode("utf-8", "surrogatepass")
    if isinstance(leaf, dict) and set(leaf) == {"b64"} and isinstance(leaf["b64"], str):
        try:
            return base64.b64decode(leaf["b64"], validate=True)
        except (binascii.Error, ValueError) as e:
            raise InvalidArgumentError(f"input '{input_name}': invalid base64: {e}") from None
    raise InvalidArgumentError(
        f"input '{input_name}' expects strings (or {{\"b64\": ...}} objects) for dtype "
        f"string, got {type(leaf).__name__} {_shown(leaf)}"
    )


def _type_error(input_name, dtype, leaf):
    return InvalidArgumentError(
        f"input '{input_name}' expects {np.dtype(dtype).name} values, got "
        f"{type(leaf).__name__} {_shown(leaf)}"
    )


def json_to_array(value, dtype, input_name):
    """A JSON value (nested lists) as a numpy array of `dtype` (`STRING` for strings).

    Raises:
        InvalidArgumentError: naming `input_name`, when the value does not fit the dtype or is
            not a regular (non-ragged) nested list.
    """
    dtype = np.dtype(dtype)
    if dtype == STRING:
        shape, leaves = nested_shape(value, input_name)
        flat = np.empty(len(leaves), dtype=object)
        flat[:] = [_decode_string_leaf(leaf, input_name) for leaf in leaves]
        return flat.reshape(shape)
    if dtype.kind not in _NUMERIC_KINDS:
        raise InvalidArgumentError(
            f"input '{input_name}' has dtype {dtype.name}, which has no JSON encoding"
        )
    return _json_to_numeric(value, dtype, input_name)


def _json_to_numeric(value, dtype, input_name):
    fast = _fast_numeric(value, dtype)
    if fast is not None:
        return fast
    shape, leaves = nested_shape(value, input_name)
    for leaf in leaves:
        if isinstance(leaf, bool) != (dtype.kind == "b") or not isinstance(leaf, (int, float)):
            raise _type_error(input_name, dtype, leaf)
    if not leaves:
        return np.zeros(shape, dtype=dtype)
    if dtype.kind == "b":
        return np.asarray(leaves, dtype=bool).reshape(shape)
    if dtype.kind in "iu":
        for leaf in leaves:
            if isinstance(leaf, float) and not (leaf == leaf and abs(leaf) != float("inf")
                                                and leaf == int(leaf)):
                raise _type_error(input_name, dtype, leaf)
        info = np.iinfo(dtype)
        if min(leaves) < info.min or max(leaves) > info.max:
            raise InvalidArgumentError(
                f"input '{input_name}' has values outside the range of {dtype.name}"
            )
        return np.asarray([int(leaf) for leaf in leaves], dtype=dtype).reshape(shape)
    try:
        flat = np.asarray(leaves, dtype=np.float64)
    except OverflowError:  # an integer too large for a float
        raise InvalidArgumentError(
            f"input '{input_name}' has values outside the range of {dtype.name}"
        ) from None
    with np.errstate(over="ignore"):
        return flat.astype(dtype).reshape(shape)


def _fast_numeric(value, dtype):
    """numpy's own conversion when it gives a regular numeric array that fits `dtype`, else
    None (the slow path then finds the offending element for the message)."""
    try:
        raw = np.asarray(value)
    except (ValueError, TypeError, RecursionError, OverflowError):
        return None
    if raw.size == 0 or raw.dtype.kind not in _NUMERIC_KINDS:
        return None
    if dtype.kind == "b":
        return raw if raw.dtype.kind == "b" else None
    if raw.dtype.kind == "b":
        return None
    if dtype.kind == "f":
        with np.errstate(over="ignore"):
            return raw.astype(dtype)
    if raw.dtype.kind == "f":
        return None
    info = np.iinfo(dtype)
    if raw.min() < info.min or raw.max() > info.max:
        return None
    return raw.astype(dtype)


def array_to_json(array, text_strings=True):
    """A numpy array as JSON-ready nested lists.

    Args:
        text_strings: send string elements that are valid UTF-8 as JSON text (the server's
            outputs); when False every `bytes` element becomes `{"b64": ...}` (the client's
            inputs, so binary data survives). `str` elements are always text.
    """
    array = np.asarray(array)
    if array.dtype == STRING or array.dtype.kind in "SU":

        def encode(item):
            if isinstance(item, str):
                return item
            item = bytes(item)
            if text_strings:
                try:
                    return item.decode("utf-8")
                except UnicodeDecodeError:
                    pass
            return {"b64": base64.b64encode(item).decode("ascii")}

        flat = np.empty(array.size, dtype=object)
        flat[:] = [encode(item) for item in array.reshape(-1)]
        return flat.reshape(array.shape).tolist()
    if array.dtype.kind == "c":
        raise ValueError(f"complex dtype {array.dtype.name} has no JSON encoding")
    half = array.dtype.kind == "f" and array.dtype.itemsize < 4
    if array.dtype.kind not in _NUMERIC_KINDS or half:
        array = array.astype(np.float32)  # float16 / bfloat16
    return array.tolist()


def to_array(value):
    """Client-side: a Python/numpy value as an array; `str` elements become UTF-8 `bytes`."""
    if isinstance(value, (bytes, str)):
        value = [value]
    array = np.asarray(value)
    if array.dtype.kind in "SU" or array.dtype == STRING:
        converted = np.empty(array.size, dtype=object)
        converted[:] = [
            bytes(x) if isinstance(x, (bytes, np.bytes_)) else str(x).encode("utf-8")
            for x in array.reshape(-1)
        ]
        array = converted.reshape(array.shape)
    return array


def is_named(value, input_names):
    """True when `value` is an `{input_name: value}` object rather than a `{"b64": ...}` value."""
    return isinstance(value, dict) and not (set(value) == {"b64"} and "b64" not in input_names)


def columnar_inputs(inputs, input_names, signature_name):
    """The `inputs` of a columnar request as `{input_name: JSON value}`."""
    if is_named(inputs, input_names):
        return inputs
    if len(input_names) != 1:
        raise InvalidArgumentError(
            f"'inputs' must be an object keyed by input name; signature '{signature_name}' "
            f"has inputs {sorted(input_names)}"
        )
    return {next(iter(input_names)): inputs}


def rows_to_columns(instances, input_names, signature_name, optional=()):
    """The `instances` of a row-format request as `({input_name: [row values]}, rows)`.

    Rows may leave out inputs named in `optional` (an omitted modality and its flag); those
    columns hold `None` for the rows that left them out. Any other difference in names between
    rows is an error naming the row.
    """
    if not isinstance(instances, list) or not instances:
        raise InvalidArgumentError("'instances' must be a non-empty list")
    named = [is_named(row, input_names) for row in instances]
    if not any(named):
        if len(input_names) != 1:
            raise InvalidArgumentError(
                f"each instance must be an object keyed by input name; signature "
                f"'{signature_name}' has inputs {sorted(input_names)}"
            )
        return {next(iter(input_names)): instances}, len(instances)
    if not all(named):
        index = named.index(False)
        raise InvalidArgumentError(
            f"instances mix named objects and bare values (instance {index} is "
            f"{_shown(instances[index])})"
        )
    optional = set(optional)
    required = set(instances[0]) - optional
    keys = set()
    for index, row in enumerate(instances):
        if set(row) - optional != required:
            different = sorted(required.symmetric_difference(set(row) - optional))[0]
            raise InvalidArgumentError(
                f"instance {index} has different input names than instance 0 "
                f"(input '{different}')"
            )
        keys.update(row)
    return {k: [row.get(k) for row in instances] for k in keys}, len(instances)
