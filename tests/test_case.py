"""Shared checks for mmkeras layers (the shape of keras-hub's `TestCase.run_layer_test`).

`run_layer_test(cls, init_kwargs, args, kwargs)` builds the layer and runs, in order:
1. config round trip: `from_config(get_config())` gives the same config, and the registered
   name deserializes through `keras.layers.deserialize` to the same class;
2. an eager call: outputs finite, shapes as expected, weight counts as expected;
3. a symbolic call in a functional model whose outputs match the eager call's shapes;
4. a `.keras` round trip of that model: same outputs at inference, loaded without
   `custom_objects` (the class is registered by importing `mmkeras`);
5. a training step (`tf.GradientTape` + SGD on the mean square distance of every float output to 1): every
   trainable weight gets a finite gradient and at least one weight moves;
6. mixed precision: the layer built with `dtype="mixed_float16"` keeps float32 variables,
   computes finite outputs and trains one step.

Tensors are given as numpy arrays anywhere in `args` / `kwargs` (nested dicts allowed); in the
symbolic call each becomes a `keras.Input` of the same shape (batch dimension free) and dtype.
"""

import keras
import numpy as np
import tensorflow as tf

import mmkeras  # noqa: F401  (registers every serializable class)


def _is_array(value):
    return isinstance(value, np.ndarray)


def _map_arrays(fn, structure):
    if _is_array(structure):
        return fn(structure)
    if isinstance(structure, dict):
        return {k: _map_arrays(fn, v) for k, v in structure.items()}
    if isinstance(structure, (list, tuple)):
        return type(structure)(_map_arrays(fn, v) for v in structure)
    return structure


def _leaves(structure):
    out = []
    _map_arrays(out.append, structure)
    return out


def _flat_outputs(outputs):
    """Outputs as a flat list of tensors (a tensor, a tuple/list, or a dict sorted by key)."""
    if isinstance(outputs, dict):
        return [t for key in sorted(outputs) for t in _flat_outputs(outputs[key])]
    if isinstance(outputs, (list, tuple)):
        return [t for item in outputs for t in _flat_outputs(item)]
    return [outputs]


def _symbolic(structure):
    return _map_arrays(
        lambda a: keras.Input(shape=a.shape[1:], dtype=str(a.dtype)), structure
    )


def _float_outputs(outputs):
    return [t for t in _flat_outputs(outputs) if "float" in str(t.dtype)]


def _train_step(layer, args, kwargs, call_kwargs):
    """One SGD step; returns (gradients, weights before, weights after)."""
    before = [np.array(w.numpy()) for w in layer.trainable_weights]
    tensors_args = _map_arrays(tf.constant, args)
    tensors_kwargs = _map_arrays(tf.constant, kwargs)
    with tf.GradientTape() as tape:
        outputs = layer(*tensors_args, **tensors_kwargs, **call_kwargs, training=True)
        loss = tf.add_n(
            [tf.reduce_mean(tf.square(tf.cast(t, tf.float32) - 1.0)) for t in _float_outputs(outputs)]
        )
        loss = loss + tf.add_n([tf.cast(x, tf.float32) for x in layer.losses] or [0.0])
    grads = tape.gradient(loss, layer.trainable_variables)
    keras.optimizers.SGD(0.5).apply_gradients(
        [(g, v) for g, v in zip(grads, layer.trainable_variables) if g is not None]
    )
    after = [np.array(w.numpy()) for w in layer.trainable_weights]
    return grads, before, after


def run_layer_test(
    cls,
    init_kwargs,
    args=(),
    kwargs=None,
    call_kwargs=None,
    expected_output_shape=None,
    expected_num_trainable_weights=None,
    expected_num_non_trainable_weights=None,
    run_training_check=True,
    run_precision_check=True,
    run_saving_check=True,
    tmp_path=None,
):
    """Runs the checks of the module docstring on `cls(**init_kwargs)(*args, **kwargs)`.

    Args:
        cls: the layer class.
        init_kwargs: constructor arguments.
        args: positional call arguments (numpy arrays or nested dicts of them).
        kwargs: keyword call arguments holding tensors (become `keras.Input`s symbolically).
        call_kwargs: keyword call arguments that are not tensors (e.g. `training`), passed as is.
        expected_output_shape: the eager output's shape, or a list of shapes for a flat list /
            tuple / dict (sorted by key) of outputs.
        expected_num_trainable_weights: count of trainable weights after the call.
        expected_num_non_trainable_weights: count of non-trainable weights after the call.
        run_training_check: run the gradient step (needs at least one trainable weight).
        run_precision_check: run the `mixed_float16` checks.
        run_saving_check: run the `.keras` round trip (needs `tmp_path`).
        tmp_path: a directory for the `.keras` file.

    Returns:
        The eager outputs.
    """
    kwargs = dict(kwargs or {})
    call_kwargs = dict(call_kwargs or {})
    args = tuple(args)

    # 1. Config round trip and registered deserialization.
    layer = cls(**init_kwargs)
    config = layer.get_config()
    revived = cls.from_config(config)
    assert revived.get_config() == config, f"{cls.__name__}: get_config/from_config differ"
    deserialized = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(deserialized) is cls, f"{cls.__name__} does not deserialize by its registered name"

    # 2. Eager call.
    outputs = layer(*args, **kwargs, **call_kwargs)
    flat = _flat_outputs(outputs)
    for tensor in flat:
        value = np.asarray(keras.ops.convert_to_numpy(tensor))
        if value.dtype.kind == "f":
            assert np.isfinite(value).all(), f"{cls.__name__}: non-finite output"
    if expected_output_shape is not None:
        shapes = [tuple(t.shape) for t in flat]
        expected = (
            [tuple(expected_output_shape)]
            if expected_output_shape and isinstance(expected_output_shape[0], int)
            else [tuple(s) for s in expected_output_shape]
        )
        assert shapes == expected, f"{cls.__name__}: output shapes {shapes} != {expected}"
    if expected_num_trainable_weights is not None:
        assert len(layer.trainable_weights) == expected_num_trainable_weights, (
            f"{cls.__name__}: {len(layer.trainable_weights)} trainable weights"
        )
    if expected_num_non_trainable_weights is not None:
        assert len(layer.non_trainable_weights) == expected_num_non_trainable_weights, (
            f"{cls.__name__}: {len(layer.non_trainable_weights)} non-trainable weights"
        )

    # 3. Symbolic call in a functional model.
    sym_args, sym_kwargs = _symbolic(args), _symbolic(kwargs)
    sym_outputs = cls(**init_kwargs)(*sym_args, **sym_kwargs, **call_kwargs)
    for sym, eager in zip(_flat_outputs(sym_outputs), flat):
        sym_shape, eager_shape = tuple(sym.shape), tuple(eager.shape)
        assert len(sym_shape) == len(eager_shape), f"{cls.__name__}: symbolic rank differs"
        for s, e in zip(sym_shape, eager_shape):
            assert s is None or s == e, f"{cls.__name__}: symbolic {sym_shape} vs {eager_shape}"
    model = keras.Model(inputs={"args": sym_args, "kwargs": sym_kwargs}, outputs=sym_outputs)

    # 4. `.keras` round trip.
    if run_saving_check:
        assert tmp_path is not None, "run_saving_check needs tmp_path"
        inputs = {"args": args, "kwargs": kwargs}
        reference = _flat_outputs(model(inputs, training=False))
        path = str(tmp_path / f"{cls.__name__}.keras")
        model.save(path)
        loaded = keras.saving.load_model(path)
        for a, b in zip(reference, _flat_outputs(loaded(inputs, training=False))):
            np.testing.assert_allclose(
                keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), atol=1e-5,
                err_msg=f"{cls.__name__}: .keras round trip changed the outputs",
            )

    # 5. A training step.
    if run_training_check:
        assert layer.trainable_weights, f"{cls.__name__} has no trainable weights to train"
        grads, before, after = _train_step(layer, args, kwargs, call_kwargs)
        for g, v in zip(grads, layer.trainable_variables):
            assert g is not None, f"{cls.__name__}: no gradient reaches {v.path}"
            assert np.isfinite(keras.ops.convert_to_numpy(g)).all(), f"non-finite grad {v.path}"
        assert any(not np.allclose(b, a) for b, a in zip(before, after)), (
            f"{cls.__name__}: a training step moved no weight"
        )

    # 6. Mixed precision.
    if run_precision_check:
        mixed = cls(**init_kwargs, dtype="mixed_float16")
        mixed_outputs = mixed(*args, **kwargs, **call_kwargs)
        for weight in mixed.weights:
            assert "float32" in str(weight.dtype) or "float" not in str(weight.dtype), (
                f"{cls.__name__}: variable {weight.path} is {weight.dtype} under mixed_float16"
            )
        for tensor in _float_outputs(mixed_outputs):
            assert np.isfinite(keras.ops.convert_to_numpy(tf.cast(tensor, tf.float32))).all()
        if run_training_check:
            grads, _, _ = _train_step(mixed, args, kwargs, call_kwargs)
            assert all(g is not None for g in grads)

    return outputs
