"""Request checks shared by the REST and gRPC front ends, run before anything reaches a model.

`validate(signature, arrays)` takes decoded numpy inputs and returns them ready to call, or
raises `InvalidArgumentError` with one line naming the input (and, for values, the example):
- names: every input the signature has, nothing else; a modality may be left out (below);
- dtype and shape: against the signature's `TensorSpec`s (rank and every fixed dimension);
- batch: every input's leading dimension is the same (the message names the inputs and sizes);
- values: floats must be finite (NaN and Inf are refused unless `allow_non_finite`);
  presence flags (`<m>_present`) must be exactly 0 or 1.

Raw table columns (`serve_raw` of a tabular model, described by the export's
`assets.extra/raw_inputs.json`): NaN marks a missing number there (imputed in the graph), so
NaN is accepted in those inputs (JSON `null` over REST), Inf is not; and the columns form the
tabular modality's group, left out together with `tabular_present` as below.

Omitted modalities: when a signature has an input `<m>_present`, a request may leave out
`<m>` (and `<m>_bytes`, for `serve_raw`) together with the flag, or send the flag as 0; the
input is then filled with zeros of its dtype and shape (`b""` for strings) and the flag with 0,
exactly what a client marking the modality missing would send. Leaving the data out while the
flag says 1 is an error; sending the data without its flag means present (flag 1).
"""

import numpy as np
import tensorflow as tf

from serving.errors import InvalidArgumentError

PRESENT_SUFFIX = "_present"  # the suffix of presence-flag inputs (`mmkeras.features`)
_BYTES_SUFFIX = "_bytes"


def numpy_dtype(spec):
    """The numpy dtype of a TensorSpec (object for strings)."""
    return np.dtype(object) if spec.dtype == tf.string else np.dtype(spec.dtype.as_numpy_dtype)


def omittable(signature):
    """`{flag_input: [data inputs]}` of the modalities a request may leave out.

    The data inputs of a flag `<m>_present` are `<m>` and `<m>_bytes` when the signature has them.
    """
    specs = signature.input_specs
    result = {}
    for name in specs:
        if name.endswith(PRESENT_SUFFIX):
            modality = name[: -len(PRESENT_SUFFIX)]
            data = [k for k in (modality, modality + _BYTES_SUFFIX) if k in specs]
            if data:
                result[name] = data
    for flag, data in getattr(signature, "groups", ()):  # a raw signature's table columns
        result[flag] = list(data)
    return result


def optional_inputs(signature):
    """Every input a request may leave out (data inputs and flags of omittable modalities)."""
    return {name for flag, data in omittable(signature).items() for name in [flag, *data]}


def check_input_names(signature, names):
    """Raises InvalidArgument for inputs the signature doesn't have, or required ones missing."""
    expected = set(signature.input_specs)
    names = set(names)
    unknown = sorted(names - expected)
    if unknown:
        raise InvalidArgumentError(
            f"unknown input '{unknown[0]}' for signature '{signature.name}'; "
            f"expected inputs: {sorted(expected)}"
        )
    missing = sorted(expected - names - optional_inputs(signature))
    if missing:
        raise InvalidArgumentError(
            f"missing input '{missing[0]}' for signature '{signature.name}'; "
            f"expected inputs: {sorted(expected)}"
        )
    for flag, data in omittable(signature).items():
        sent = [k for k in data if k in names]
        if sent and len(sent) != len(data):
            absent = sorted(set(data) - set(sent))[0]
            raise InvalidArgumentError(
                f"missing input '{absent}' for signature '{signature.name}' (sent with "
                f"'{sent[0]}'); expected inputs: {sorted(expected)}"
            )


def check_shape(input_name, spec, shape):
    """Raises InvalidArgument unless `shape` fits the TensorSpec's rank and fixed dims."""
    expected = spec.shape
    if expected.rank is None:
        return
    shown = [d if d is not None else -1 for d in expected.as_list()]
    if len(shape) != expected.rank:
        raise InvalidArgumentError(
            f"input '{input_name}' has rank {len(shape)} (shape {list(shape)}) but the "
            f"signature expects rank {expected.rank} (shape {shown})"
        )
    for axis, (got, want) in enumerate(zip(shape, expected.as_list())):
        if want is not None and got != want:
            raise InvalidArgumentError(
                f"input '{input_name}' has size {got} on axis {axis} (shape {list(shape)}) "
                f"but the signature expects {want} (shape {shown})"
            )


def check_array(input_name, spec, array):
    """Checks a decoded numpy array's dtype and shape against the TensorSpec."""
    if array.dtype == object or array.dtype.kind in "SU":
        dtype = tf.string
    else:
        try:
            dtype = tf.as_dtype(array.dtype)
        except TypeError:
            raise InvalidArgumentError(
                f"input '{input_name}' has dtype {array.dtype}, which TensorFlow does not take"
            ) from None
    if dtype != spec.dtype:
        raise InvalidArgumentError(
            f"input '{input_name}' has dtype {dtype.name} but the signature expects "
            f"{spec.dtype.name}"
        )
    check_shape(input_name, spec, array.shape)


def _first_example(mask):
    """The example (leading index) of the first True element of `mask`, and its full index."""
    index = np.unravel_index(int(np.argmax(mask.reshape(-1))), mask.shape)
    return (int(index[0]) if index else None), tuple(int(i) for i in index)


def _where(index):
    example, full = index
    if example is None:
        return "(a scalar)"
    return f"example {example}" + (f" (element {list(full[1:])})" if len(full) > 1 else "")


def check_values(input_name, array, allow_non_finite=False):
    """Non-finite floats (unless allowed) and presence flags other than 0 and 1."""
    if array.dtype.kind not in "biuf":
        return
    if array.dtype.kind == "f" and array.size:
        finite = np.isfinite(array)
        if not finite.all() and (not allow_non_finite or input_name.endswith(PRESENT_SUFFIX)):
            where = _first_example(~finite)
            value = array[where[1]]
            raise InvalidArgumentError(
                f"input '{input_name}' {_where(where)} is {value}: non-finite values are "
                f"refused (start the server with --allow-non-finite to accept them)"
                if not input_name.endswith(PRESENT_SUFFIX)
                else f"input '{input_name}' {_where(where)} is {value}; presence flags must "
                f"be 0 or 1"
            )
    if input_name.endswith(PRESENT_SUFFIX) and array.size:
        bad = (array != 0) & (array != 1)
        if bad.any():
            where = _first_example(bad)
            raise InvalidArgumentError(
                f"input '{input_name}' {_where(where)} is {array[where[1]]}; presence flags "
                f"must be 0 or 1"
            )


def check_no_infinity(input_name, array):
    """A column where NaN means missing (a raw table column) still refuses +-Inf."""
    if array.dtype.kind == "f" and array.size and np.isinf(array).any():
        where = _first_example(np.isinf(array))
        raise InvalidArgumentError(
            f"input '{input_name}' {_where(where)} is {array[where[1]]}: infinite values are "
            f"refused (NaN or null marks a missing value)")


def batch_size(signature, arrays):
    """The common leading dimension of the inputs; InvalidArgument naming them when they differ.

    None when no input has a leading batch dimension (every spec is a scalar or of unknown rank).
    """
    sizes = {}
    for name, array in sorted(arrays.items()):
        spec = signature.input_specs.get(name)
        if spec is None or spec.shape.rank in (None, 0) or array.ndim == 0:
            continue
        if spec.shape.as_list()[0] is not None:
            continue  # a fixed leading dimension is not a batch dimension
        sizes[name] = int(array.shape[0])
    if len(set(sizes.values())) > 1:
        shown = ", ".join(f"'{k}' {v}" for k, v in sizes.items())
        raise InvalidArgumentError(
            f"inputs of signature '{signature.name}' disagree on the batch size (leading "
            f"dimension): {shown}"
        )
    return next(iter(sizes.values()), None)


def _zeros(signature, name, batch):
    spec = signature.input_specs[name]
    dims = spec.shape.as_list() if spec.shape.rank is not None else None
    if not dims or any(d is None for d in dims[1:]):
        raise InvalidArgumentError(
            f"input '{name}' was left out but its shape {dims} has unknown dimensions, so it "
            f"cannot be filled in: send it"
        )
    shape = [batch, *dims[1:]]
    if spec.dtype == tf.string:
        array = np.empty(shape, dtype=object)
        array.fill(b"")
        return array
    return np.zeros(shape, dtype=numpy_dtype(spec))


def fill_omitted(signature, arrays, batch):
    """Adds zeros (and flag 0) for the omittable modalities a request left out."""
    arrays = dict(arrays)
    for flag, data in omittable(signature).items():
        if any(k in arrays for k in data):
            if flag not in arrays and batch is not None:  # data sent: present
                arrays[flag] = np.ones([batch], dtype=numpy_dtype(signature.input_specs[flag]))
            continue
        if flag in arrays:
            present = arrays[flag]
            if present.size and np.any(present != 0):
                where = _first_example(present != 0)
                raise InvalidArgumentError(
                    f"input '{data[0]}' was left out but '{flag}' {_where(where)} is "
                    f"{present[where[1]]}: send '{data[0]}' or set the flag to 0"
                )
        if batch is None:
            raise InvalidArgumentError(
                f"input '{data[0]}' was left out and no other input gives the batch size: "
                f"send '{flag}' (zeros) or another input"
            )
        for name in data:
            arrays[name] = _zeros(signature, name, batch)
        if flag not in arrays:
            arrays[flag] = _zeros(signature, flag, batch)
    return arrays


def validate(signature, arrays, allow_non_finite=False):
    """Checks a request's decoded inputs and fills omitted modalities; returns
    `(arrays, batch_size)` ready for `signature.function` (batch_size None: no batch axis)."""
    check_input_names(signature, arrays)
    for name, array in arrays.items():
        check_array(name, signature.input_specs[name], array)
    batch = batch_size(signature, arrays)
    nan_inputs = getattr(signature, "nan_inputs", frozenset())
    for name, array in arrays.items():
        if name in nan_inputs:
            check_no_infinity(name, array)
        else:
            check_values(name, array, allow_non_finite)
    arrays = fill_omitted(signature, arrays, batch)
    return arrays, batch
