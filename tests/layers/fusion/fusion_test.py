"""One parameterized test for the whole family of fusion layers (like keras's `merging_test.py`).

Every row of `CASES` (layer class, constructor arguments, kind of input) runs through the same
checks: output shape against `compute_output_shape`, presence masks (a missing modality's values,
even NaN, never change the output; all-missing rows are finite), `get_config`/`from_config`, a
`.keras` round trip, one `train_on_batch` step, gradients to every modality (and none to a
missing one), mixed precision, and TFLite: every case sits in ONE exported model that is
converted once with builtin ops only and compared to Keras in LiteRT.

To add a fusion method: write its file in `mmkeras/layers/fusion/`, export it from the package
`__init__.py` files, and add one `Case(...)` row below. Input kinds:
- "vector": `(batch, dim)` vectors of different sizes;
- "same": `(batch, dim)` vectors of one size (for `same_dims` layers);
- "probs": `(batch, classes)` probability vectors (decision-level layers);
- "sequence": `(batch, steps, dim)` sequences of different sizes.

Run: `.venv/bin/python -m pytest tests/layers/fusion/fusion_test.py -q`.
"""

import dataclasses
import functools

import keras
import numpy as np
import pytest
import tensorflow as tf

from mmkeras import layers
from mmkeras.api_export import PUBLIC_API
from mmkeras.features import presence_key

BATCH = 3
STEPS = 3
MODALITIES = ("audio", "image", "text")
DIMS = {
    "vector": {"audio": 4, "image": 6, "text": 5},
    "same": {"audio": 4, "image": 4, "text": 4},
    "probs": {"audio": 4, "image": 4, "text": 4},
    "sequence": {"audio": 4, "image": 6, "text": 5},
}
# Row 0: all present; row 1: audio missing; row 2: nothing present.
PRESENCE = {
    "audio": np.array([1.0, 0.0, 0.0], "float32"),
    "image": np.array([1.0, 1.0, 0.0], "float32"),
    "text": np.array([1.0, 1.0, 0.0], "float32"),
}


@dataclasses.dataclass(frozen=True, eq=False)
class Case:
    cls: type
    kwargs: dict
    kind: str
    name: str = ""
    differentiable: bool = True

    @property
    def id(self):
        return self.name or self.cls.__name__


CASES = [
    Case(layers.ConcatFusion, {}, "vector"),
    Case(layers.ConcatFusion, {"append_presence": True}, "vector", "ConcatFusion_presence"),
    Case(layers.MeanFusion, {}, "same"),
    Case(layers.ProductFusion, {}, "same"),
    Case(layers.ProductFusion, {"log_domain": True}, "same", "ProductFusion_log"),
    Case(layers.ProductFusion, {"normalize": "l2"}, "same", "ProductFusion_l2"),
    Case(layers.ProductFusion, {"normalize": None, "offset": 0.0}, "same", "ProductFusion_plain"),
    Case(layers.WeightedSumFusion, {}, "same"),
    Case(
        layers.WeightedSumFusion,
        {"normalize": "none", "learn_weights": False, "initial_weights": [0.2, 0.3, 0.5]},
        "same",
        "WeightedSumFusion_fixed",
    ),
    Case(layers.BilinearFusion, {"output_dim": 6, "rank": 3}, "vector"),
    Case(layers.StackingFusion, {"hidden_units": [8, 6], "dropout": 0.1}, "vector"),
    Case(layers.AttentionFusion, {"units": 8}, "same"),
    Case(
        layers.AttentionFusion,
        {"units": 8, "output_dim": 6, "return_weights": True},
        "vector",
        "AttentionFusion_weights",
    ),
    Case(
        layers.AttentionFusion,
        {"units": 8, "normalize": False, "score_initializer": "glorot_uniform", "temperature": 2.0},
        "same",
        "AttentionFusion_unnormalised",
    ),
    Case(layers.GatedFusion, {"units": 6}, "vector"),
    Case(
        layers.GatedFusion,
        {"units": 6, "gate_activation": "sigmoid"},
        "vector",
        "GatedFusion_sigmoid",
    ),
    Case(layers.TensorFusion, {}, "vector"),
    Case(layers.LowRankTensorFusion, {"output_dim": 6, "rank": 3}, "vector"),
    Case(
        layers.LowRankTensorFusion,
        {"output_dim": 6, "rank": 3, "normalize": None, "unimodal_init": False},
        "vector",
        "LowRankTensorFusion_plain",
    ),
    Case(layers.GraphFusion, {"units": 6, "num_steps": 2}, "vector"),
    Case(layers.CrossModalAttentionFusion, {"embed_dim": 8, "num_heads": 2}, "sequence"),
    Case(
        layers.CrossModalAttentionFusion,
        {"embed_dim": 8, "num_heads": 2, "pooling": "attention", "vector_tokens": 2,
         "num_layers": 1, "dropout": 0.1},
        "vector",
        "CrossModalAttentionFusion_vectors",
    ),
    Case(
        layers.CrossModalAttentionFusion,
        {"embed_dim": 8, "num_heads": 2, "pooling": "last", "self_attention_layers": 0,
         "positional_embedding": False, "conv_kernel_size": 1},
        "sequence",
        "CrossModalAttentionFusion_last",
    ),
    Case(
        layers.CrossModalAttentionFusion,
        {"embed_dim": 8, "num_heads": 2, "architecture": "legacy"},
        "sequence",
        "CrossModalAttentionFusion_legacy",
    ),
    Case(layers.TransformerFusion, {"embed_dim": 8, "num_heads": 2, "num_layers": 2}, "sequence"),
    Case(
        layers.TransformerFusion,
        {"embed_dim": 8, "num_heads": 2, "num_layers": 1, "pooling": "attention",
         "vector_tokens": 2},
        "vector",
        "TransformerFusion_vectors",
    ),
    Case(
        layers.TransformerFusion,
        {"embed_dim": 8, "num_heads": 2, "use_cls_token": False, "positional_embedding": "none"},
        "sequence",
        "TransformerFusion_meanpool",
    ),
    Case(layers.LateFusion, {"combiner": "mean"}, "probs", "LateFusion_mean"),
    Case(layers.LateFusion, {"combiner": "geometric"}, "probs", "LateFusion_geometric"),
    Case(layers.DecisionFusion, {"combiner": "mean"}, "probs", "DecisionFusion_mean"),
    Case(layers.DecisionFusion, {"combiner": "weighted"}, "probs", "DecisionFusion_weighted"),
    Case(layers.DecisionFusion, {"combiner": "product"}, "probs", "DecisionFusion_product"),
    Case(layers.DecisionFusion, {"combiner": "vote"}, "probs", "DecisionFusion_vote", False),
    Case(layers.DecisionFusion, {"combiner": "stacking"}, "probs", "DecisionFusion_stacking"),
    Case(
        layers.DecisionFusion,
        {"combiner": "stacking", "stacking_input": "probs", "meta_initializer": "glorot_uniform"},
        "probs",
        "DecisionFusion_stacking_probs",
    ),
]
CASE_PARAMS = [pytest.param(case, id=case.id) for case in CASES]


def test_every_fusion_layer_has_a_case():
    covered = {case.cls for case in CASES}
    registered = set(layers.FUSION_LAYERS.values()) | set(layers.DECISION_FUSION_LAYERS.values())
    registered |= {
        cls
        for cls in PUBLIC_API.values()
        if isinstance(cls, type)
        and issubclass(cls, layers.BaseFusion)
        and cls is not layers.BaseFusion
    }
    assert registered <= covered, f"no test case for {registered - covered}"


# ---------------------------------------------------------------------------- helpers


@functools.lru_cache(maxsize=None)
def _inputs(kind, seed=0):
    rng = np.random.default_rng(seed)
    data = {}
    for name, dim in DIMS[kind].items():
        shape = (BATCH, STEPS, dim) if kind == "sequence" else (BATCH, dim)
        x = rng.normal(size=shape).astype("float32")
        if kind == "probs":
            x = np.exp(2 * x) / np.exp(2 * x).sum(-1, keepdims=True)
        data[name] = x
    return data


def inputs(kind, seed=0):
    return {name: x.copy() for name, x in _inputs(kind, seed).items()}


def with_missing_replaced(kind, value):
    """The inputs with every missing modality's rows replaced by `value` (noise if None)."""
    data = inputs(kind)
    noise = inputs(kind, seed=1)
    for name, flags in PRESENCE.items():
        missing = flags == 0
        data[name][missing] = 100.0 * noise[name][missing] if value is None else value
    return data


def flat(outputs):
    return [np.asarray(o) for o in keras.tree.flatten(outputs)]


def assert_all_close(a, b, atol=1e-5):
    for x, y in zip(flat(a), flat(b), strict=True):
        np.testing.assert_allclose(x, y, atol=atol, rtol=1e-5)


def make_layer(case, **overrides):
    return case.cls(**{**case.kwargs, **overrides})


def make_model(case, layer=None, prefix=""):
    """A functional model: modality inputs + presence inputs -> the fusion layer's output."""
    layer = layer or make_layer(case, name="fusion")
    model_inputs, modality, presence = symbolic_inputs(case.kind, prefix)
    return keras.Model(model_inputs, layer(modality, presence=presence))


def symbolic_inputs(kind, prefix="", presence=None):
    modality = {}
    for name, dim in DIMS[kind].items():
        shape = (STEPS, dim) if kind == "sequence" else (dim,)
        modality[name] = keras.Input(shape, name=f"{prefix}{name}")
    if presence is None:
        presence = {name: keras.Input((), name=presence_key(name)) for name in MODALITIES}
    model_inputs = {f"{prefix}{name}": x for name, x in modality.items()}
    model_inputs.update({presence_key(name): p for name, p in presence.items()})
    return model_inputs, modality, presence


def model_feed(kind, data=None, prefix=""):
    data = inputs(kind) if data is None else data
    feed = {f"{prefix}{name}": x for name, x in data.items()}
    feed.update({presence_key(name): p for name, p in PRESENCE.items()})
    return feed


@functools.lru_cache(maxsize=None)
def built_model(case):
    """One model per case, shared by the tests that only read it."""
    return make_model(case)


# ---------------------------------------------------------------------------- family tests


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_output_shape(case):
    layer = make_layer(case)
    data = inputs(case.kind)
    outputs = layer(data, presence=PRESENCE)
    input_shapes = {name: (None,) + x.shape[1:] for name, x in data.items()}
    expected = layer.compute_output_shape(input_shapes)
    symbolic = built_model(case).outputs
    if isinstance(outputs, dict):
        assert sorted(outputs) == sorted(expected)
        expected = [expected[key] for key in sorted(expected)]
    else:
        expected = [expected]
    for output, shape, tensor in zip(flat(outputs), expected, symbolic, strict=True):
        assert output.shape == (BATCH,) + tuple(shape[1:])
        assert tuple(tensor.shape) == tuple(shape)


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_missing_modalities_do_not_reach_the_output(case):
    layer = make_layer(case)
    reference = layer(inputs(case.kind), presence=PRESENCE)
    for output in flat(reference):
        assert np.all(np.isfinite(output)), "NaN/inf with missing modalities"
    for value in (None, np.nan):
        changed = layer(with_missing_replaced(case.kind, value), presence=PRESENCE)
        assert_all_close(changed, reference, atol=1e-6)
    # Presence flags of all ones behave like no flags at all.
    ones = {name: np.ones(BATCH, "float32") for name in MODALITIES}
    assert_all_close(layer(inputs(case.kind), presence=ones), layer(inputs(case.kind)))


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_config_round_trip(case):
    layer = make_layer(case)
    data = inputs(case.kind)
    expected = layer(data, presence=PRESENCE)
    config = layer.get_config()
    clone = case.cls.from_config(config)
    assert clone.get_config() == config
    clone(data, presence=PRESENCE)
    clone.set_weights(layer.get_weights())
    assert_all_close(clone(data, presence=PRESENCE), expected, atol=1e-6)


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_keras_file_round_trip(case, tmp_path):
    model = built_model(case)
    feed = model_feed(case.kind)
    path = str(tmp_path / "model.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert type(restored.get_layer("fusion")) is case.cls
    # Eager inference calls: `predict` would trace each model once more for nothing checked here.
    assert_all_close(restored(feed, training=False), model(feed, training=False), atol=1e-6)


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_train_step(case):
    model_inputs, modality, presence = symbolic_inputs(case.kind)
    fused = make_layer(case)(modality, presence=presence)
    if isinstance(fused, dict):
        fused = fused["fused"]
    model = keras.Model(model_inputs, keras.layers.Dense(2)(fused))
    model.compile(optimizer="sgd", loss="mse")
    loss = model.train_on_batch(model_feed(case.kind), np.ones((BATCH, 2), "float32"))
    assert np.isfinite(loss)


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_gradients_reach_every_modality(case):
    layer = make_layer(case)
    data = {name: tf.constant(x) for name, x in inputs(case.kind).items()}
    rng = np.random.default_rng(2)
    weights = [rng.normal(size=o.shape).astype("float32") for o in flat(layer(data))]

    def gradients(presence):
        with tf.GradientTape() as tape:
            tape.watch(data)
            outputs = keras.tree.flatten(layer(data, presence=presence))
            total = sum(tf.reduce_sum(o * w) for o, w in zip(outputs, weights))
        grads = tape.gradient(total, data)
        return {
            name: np.zeros(data[name].shape) if g is None else g.numpy()
            for name, g in grads.items()
        }

    all_present = gradients(None)
    with_missing = gradients(PRESENCE)
    for name in MODALITIES:
        assert np.all(np.isfinite(all_present[name])) and np.all(np.isfinite(with_missing[name]))
        # A missing modality gets no gradient.
        assert not np.any(with_missing[name][PRESENCE[name] == 0])
        if case.differentiable:
            assert np.any(all_present[name] != 0), f"no gradient reaches '{name}'"


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_mixed_precision(case):
    layer = make_layer(case, dtype="mixed_float16")
    outputs = layer(inputs(case.kind), presence=PRESENCE)
    for output in keras.tree.flatten(outputs):
        assert keras.backend.standardize_dtype(output.dtype) == "float16"
        assert np.all(np.isfinite(np.asarray(output, "float32")))


# ---------------------------------------------------------------------------- TFLite


def _output_key(case, key=None):
    return case.id if key is None else f"{case.id}__{key}"


@pytest.fixture(scope="module")
def tflite_results(tmp_path_factory):
    """Every case in one model, exported and converted once: `(keras outputs, LiteRT outputs)`."""
    from ai_edge_litert.interpreter import Interpreter

    presence = {name: keras.Input((), name=presence_key(name)) for name in MODALITIES}
    model_inputs = {presence_key(name): p for name, p in presence.items()}
    modality_inputs = {}
    for kind in DIMS:
        kind_inputs, modality_inputs[kind], _ = symbolic_inputs(kind, f"{kind}_", presence)
        model_inputs.update(kind_inputs)
    outputs = {}
    for case in CASES:
        fused = make_layer(case, name=case.id)(modality_inputs[case.kind], presence=presence)
        if isinstance(fused, dict):
            outputs.update({_output_key(case, key): value for key, value in fused.items()})
        else:
            outputs[_output_key(case)] = fused
    model = keras.Model(model_inputs, outputs)

    feed = {presence_key(name): p for name, p in PRESENCE.items()}
    for kind in DIMS:
        feed.update({f"{kind}_{name}": x for name, x in inputs(kind).items()})
    # Eager inference (not `predict`, which traces the whole model once more just for this).
    expected = {key: np.asarray(value) for key, value in model(feed, training=False).items()}

    export_dir = str(tmp_path_factory.mktemp("fusion_export") / "saved_model")
    model.export(export_dir, format="tf_saved_model", verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(export_dir, signature_keys=["serve"])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    interpreter = Interpreter(model_content=converter.convert())
    runner = interpreter.get_signature_runner("serve")
    return expected, runner(**feed)


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_tflite_builtins_match_keras(case, tflite_results):
    expected, actual = tflite_results
    keys = [key for key in expected if key == case.id or key.startswith(f"{case.id}__")]
    assert keys
    for key in keys:
        np.testing.assert_allclose(actual[key], expected[key], atol=1e-4)


# ---------------------------------------------------------------------------- semantics


def test_weighted_sum_with_fixed_weights_is_the_closed_form():
    data = inputs("same")
    w = np.array([0.2, 0.3, 0.5], "float32")
    raw = layers.WeightedSumFusion(normalize="none", learn_weights=False, initial_weights=w)
    expected = sum(w_m * data[name] for w_m, name in zip(w, MODALITIES))
    np.testing.assert_allclose(raw(data), expected, rtol=1e-6)
    assert not raw.trainable_weights

    soft = layers.WeightedSumFusion(initial_weights=np.log(w))  # softmax(log w) = w
    np.testing.assert_allclose(soft(data), expected, rtol=1e-5)
    # Audio missing in row 1: softmax renormalised over image and text.
    renorm = w[1:] / w[1:].sum()
    row1 = renorm[0] * data["image"][1] + renorm[1] * data["text"][1]
    fused = np.asarray(soft(data, presence=PRESENCE))
    np.testing.assert_allclose(fused[1], row1, rtol=1e-5)
    np.testing.assert_allclose(fused[2], 0.0)


def test_product_fusion_closed_forms():
    data = inputs("same")
    plain = dict(normalize=None, offset=0.0)
    prod = data["audio"] * data["image"] * data["text"]
    np.testing.assert_allclose(layers.ProductFusion(**plain)(data), prod, rtol=1e-5)
    logs = layers.ProductFusion(log_domain=True, epsilon=0.0, **plain)(data)
    np.testing.assert_allclose(logs, np.log(np.abs(prod)), rtol=1e-4, atol=1e-5)
    fused = np.asarray(layers.ProductFusion(**plain)(data, presence=PRESENCE))
    np.testing.assert_allclose(fused[1], data["image"][1] * data["text"][1], rtol=1e-5)
    np.testing.assert_allclose(fused[2], 1.0)


def _layer_norm(x):
    return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-3)


def test_product_fusion_default_is_the_product_of_normalised_factors_plus_one():
    """`prod_m (LN(X_m) + 1)`: the unimodal terms survive beside the interactions."""
    data = inputs("same")
    expected = np.prod([_layer_norm(data[m]) + 1.0 for m in MODALITIES], axis=0)
    np.testing.assert_allclose(layers.ProductFusion()(data), expected, rtol=1e-4, atol=1e-5)
    fused = np.asarray(layers.ProductFusion()(data, presence=PRESENCE))
    row1 = (_layer_norm(data["image"][1]) + 1.0) * (_layer_norm(data["text"][1]) + 1.0)
    np.testing.assert_allclose(fused[1], row1, rtol=1e-4, atol=1e-5)
    # "l2": each factor at unit RMS, no weights.
    l2 = layers.ProductFusion(normalize="l2", offset=0.0)
    rms = {m: data[m] / np.sqrt((data[m] ** 2).mean(-1, keepdims=True)) for m in MODALITIES}
    np.testing.assert_allclose(l2(data), np.prod(list(rms.values()), axis=0), rtol=1e-4)
    assert not l2.weights


def test_low_rank_tensor_fusion_starts_from_unimodal_terms():
    """With `unimodal_init` the constant row of every factor is 1 and the rank weights
    1/rank, so each output is `bias + mean_r prod_m (1 + LN(X_m) w_m^(r))`."""
    data = inputs("vector")
    layer = layers.LowRankTensorFusion(output_dim=5, rank=3)
    fused = np.asarray(layer(data))
    for factor in layer.factors:
        np.testing.assert_array_equal(np.asarray(factor)[-1], 1.0)
    np.testing.assert_allclose(np.asarray(layer.rank_weights), 1 / 3)
    product = 1.0
    for name, factor in zip(layer.modality_names, layer.factors):
        z = np.concatenate([_layer_norm(data[name]), np.ones((BATCH, 1))], -1)
        product = product * (z @ np.asarray(factor)).reshape(BATCH, 3, 5)
    np.testing.assert_allclose(fused, product.mean(1), rtol=1e-4, atol=1e-5)


def test_stacking_starts_as_the_product_of_experts():
    """Log-probability stacking with the identity start equals the product combiner until it
    trains (with missing modalities too)."""
    data = inputs("probs")
    stacking = layers.DecisionFusion(combiner="stacking")
    product = layers.DecisionFusion(combiner="product")
    np.testing.assert_allclose(stacking(data), product(data), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        stacking(data, presence=PRESENCE), product(data, presence=PRESENCE), rtol=1e-4, atol=1e-6
    )


def test_configs_saved_before_the_new_options_load_the_earlier_behaviour():
    """A config without the new keys (written by the earlier layers) gets the earlier form,
    so `.keras` files saved before them still load with matching weights."""
    old = {
        layers.CrossModalAttentionFusion: ({"embed_dim": 8, "num_heads": 2},
                                           {"architecture": "legacy"}),
        layers.TransformerFusion: ({"embed_dim": 8, "num_heads": 2},
                                   {"positional_embedding": "none"}),
        layers.AttentionFusion: ({"units": 8}, {"normalize": False}),
        layers.ProductFusion: ({}, {"normalize": None, "offset": 0.0}),
        layers.LowRankTensorFusion: ({"output_dim": 4},
                                     {"normalize": None, "unimodal_init": False}),
        layers.DecisionFusion: ({"combiner": "stacking"}, {"stacking_input": "probs"}),
    }
    for cls, (kwargs, expected) in old.items():
        layer = cls.from_config({"name": "fusion", "trainable": True, "dtype": "float32", **kwargs})
        config = layer.get_config()
        assert {key: config[key] for key in expected} == expected, cls.__name__
    attention = layers.AttentionFusion.from_config({"units": 8})
    assert attention.get_config()["score_initializer"]["class_name"] == "GlorotUniform"


def test_tensor_fusion_output_dim_is_product_of_dims_plus_one():
    data = inputs("vector")
    fused = np.asarray(layers.TensorFusion()(data, presence=PRESENCE))
    assert fused.shape == (BATCH, (4 + 1) * (6 + 1) * (5 + 1))
    # Row 2 (nothing present): only the product of the appended ones survives.
    np.testing.assert_allclose(fused[2], np.eye(fused.shape[-1])[-1])
    # Unimodal terms survive: the last 6 entries are [text; 1] times the two appended ones.
    np.testing.assert_allclose(fused[0, -6:-1], data["text"][0], rtol=1e-6)


def test_attention_fusion_starts_at_uniform_weights():
    """The zero-initialised scorer gives every present modality the same weight at the start,
    whatever the embeddings' scales (the stabilised default)."""
    data = inputs("same")
    data["audio"] = 100.0 * data["audio"]
    weights = np.asarray(layers.AttentionFusion(units=8, return_weights=True)(data)["weights"])
    np.testing.assert_allclose(weights, 1 / 3, rtol=1e-6)


def test_attention_fusion_weights_sum_to_one_over_present_modalities():
    layer = layers.AttentionFusion(
        units=8, return_weights=True, normalize=False, score_initializer="glorot_uniform"
    )
    out = layer(inputs("same"), presence=PRESENCE)
    weights = np.asarray(out["weights"])
    assert weights.shape == (BATCH, len(MODALITIES))
    np.testing.assert_allclose(weights[:2].sum(-1), 1.0, rtol=1e-6)
    assert weights[1, 0] == 0.0  # audio is missing in row 1
    np.testing.assert_array_equal(weights[2], 0.0)  # nothing present in row 2
    data = inputs("same")
    stacked = np.stack([data[name] for name in MODALITIES], axis=1)
    np.testing.assert_allclose(out["fused"], np.einsum("bm,bmd->bd", weights, stacked), rtol=1e-5)


def test_majority_vote_on_a_known_example():
    probs = {
        "audio": np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.5, 0.5, 0.0]], "float32"),
        "image": np.array([[0.9, 0.05, 0.05], [0.1, 0.1, 0.8], [0.1, 0.1, 0.8]], "float32"),
        "text": np.array([[0.2, 0.7, 0.1], [0.3, 0.6, 0.1], [0.1, 0.1, 0.8]], "float32"),
    }
    layer = layers.DecisionFusion(combiner="vote", tie_break=0.0)
    # Row 2: audio's own top classes tie, so it splits its vote.
    expected = [[2 / 3, 1 / 3, 0.0], [0.0, 2 / 3, 1 / 3], [1 / 6, 1 / 6, 2 / 3]]
    np.testing.assert_allclose(layer(probs), expected, rtol=1e-6)
    # Audio missing in row 1 leaves one vote each for classes 1 and 2; nothing present: uniform.
    fused = np.asarray(layer(probs, presence=PRESENCE))
    np.testing.assert_allclose(fused[1], [0.0, 0.5, 0.5], rtol=1e-6)
    np.testing.assert_allclose(fused[2], [1 / 3] * 3, rtol=1e-6)

    # With the default tie break the tied row 1 goes to the class of higher mean probability
    # (image 0.8 + text 0.1 for class 2 against 0.1 + 0.6 for class 1), nothing else moves.
    t = 1e-3
    broken = np.asarray(layers.DecisionFusion(combiner="vote")(probs, presence=PRESENCE))
    mean = (probs["image"][1] + probs["text"][1]) / 2
    np.testing.assert_allclose(broken[1], ([0.0, 0.5, 0.5] + t * mean) / (1 + t), rtol=1e-5)
    assert broken[1].argmax() == 2
    np.testing.assert_allclose(broken.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(broken.argmax(-1)[[0]], [0])


def test_majority_vote_trains_through_the_mean_relaxation():
    probs = {name: tf.constant(x) for name, x in inputs("probs").items()}
    layer = layers.DecisionFusion(combiner="vote")
    soft = layer(probs, training=True)
    expected = sum(probs.values()) / len(probs)
    np.testing.assert_allclose(soft, expected, rtol=1e-6)
    with tf.GradientTape() as tape:
        tape.watch(probs)
        total = tf.reduce_sum(layer(probs, training=True)[:, 0])
    grads = tape.gradient(total, probs)
    assert all(np.any(g.numpy() != 0) for g in grads.values())


def test_product_of_experts_is_the_normalised_product():
    data = inputs("probs")
    prod = data["audio"] * data["image"] * data["text"]
    fused = layers.DecisionFusion(combiner="product")(data)
    np.testing.assert_allclose(fused, prod / prod.sum(-1, keepdims=True), rtol=1e-4)


def test_bilinear_fusion_pairs_are_factorised_bilinear_forms():
    layer = layers.BilinearFusion(output_dim=2, rank=3)
    data = inputs("vector")
    fused = np.asarray(layer(data))
    factors = {}
    expected = np.asarray(layer.bias)[None]
    for name, fk, lk in zip(layer.modality_names, layer.factor_kernels, layer.linear_kernels):
        factors[name] = (data[name] @ np.asarray(fk)).reshape(BATCH, 2, 3)
        expected = expected + data[name] @ np.asarray(lk)
    names = layer.modality_names
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            expected = expected + (factors[names[i]] * factors[names[j]]).sum(-1)
    np.testing.assert_allclose(fused, expected, rtol=1e-4, atol=1e-5)


def test_pooled_vectors_are_length_one_sequences():
    """A `(batch, dim)` input is the `(batch, 1, dim)` sequence (same weights, same output)."""
    vectors = inputs("vector")
    as_sequences = {name: x[:, None, :] for name, x in vectors.items()}
    for cls in (layers.TransformerFusion, layers.CrossModalAttentionFusion):
        extra = {"conv_kernel_size": 1} if cls is layers.CrossModalAttentionFusion else {}
        layer = cls(embed_dim=8, num_heads=2, **extra)
        expected = layer(vectors, presence=PRESENCE)
        clone = cls.from_config(layer.get_config())
        clone(as_sequences, presence=PRESENCE)
        clone.set_weights([
            np.reshape(w, c.shape) for w, c in zip(layer.get_weights(), clone.weights)
        ])
        assert_all_close(clone(as_sequences, presence=PRESENCE), expected, atol=1e-5)


def test_legacy_cross_modal_attention_rejects_vectors():
    with pytest.raises(ValueError, match="rank 3"):
        layers.CrossModalAttentionFusion(embed_dim=8, architecture="legacy")(inputs("vector"))
