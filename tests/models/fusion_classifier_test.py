import dataclasses

import numpy as np
import keras
import pytest

from mmkeras.configs import load_config
from mmkeras.models import build_classifier
from mmkeras.models import build_encoder

TINY = [
    "model.image_encoder.filters=[4]",
    "model.image_encoder.embedding_dim=8",
    "model.audio_encoder.filters=[4]",
    "model.audio_encoder.embedding_dim=8",
    "model.audio_encoder.num_mel_bins=16",
    "model.head_units=[8]",
    "data.audio_samples=2000",
]

VARIANTS = {
    "early_fusion": ["model.fusion.type=concat"],
    "mean_fusion": ["model.fusion.type=mean"],
    "late_mean": ["model.fusion.type=late"],
    "late_geometric": ["model.fusion.type=late", "model.fusion.args={combiner: geometric}"],
    "image_only": ["model.modalities=[image]"],
    # Attention fusions over the encoders' own token sequences / feature maps (the default,
    # pooled embeddings, is built by the avmnist configs below).
    "mult_sequence": [
        "model.fusion.type=cross_modal_attention",
        "model.fusion.args={embed_dim: 8, num_heads: 2, token_source: sequence}",
    ],
    "transformer_feature_map": [
        "model.fusion.type=transformer",
        "model.fusion.args={embed_dim: 8, num_heads: 2, token_source: feature_map}",
    ],
    "audio_only": ["model.modalities=[audio]"],
}


def _inputs(model, batch=3, seed=0):
    rng = np.random.default_rng(seed)
    x = {}
    for tensor in model.inputs:
        shape = (batch, *tensor.shape[1:])
        if tensor.name.endswith("_present"):
            x[tensor.name] = np.ones(shape, "float32")
        else:
            x[tensor.name] = rng.uniform(-1, 1, shape).astype("float32")
    return x


def _build(variant):
    keras.utils.set_random_seed(0)  # tiny ReLU encoders can be all-dead for some inits
    config = load_config(None, TINY + VARIANTS[variant])
    return config, build_classifier(config.model, config.data)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_builds_named_inputs_and_probabilities(variant):
    config, model = _build(variant)
    names = sorted(t.name for t in model.inputs)
    expected = sorted(m for m in config.model.modalities) + sorted(
        f"{m}_present" for m in config.model.modalities
    )
    assert names == sorted(expected)
    probs = np.asarray(model(_inputs(model)))
    assert probs.shape == (3, 10)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_keras_file_round_trip(variant, tmp_path):
    _, model = _build(variant)
    x = _inputs(model)
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(np.asarray(again(x)), np.asarray(model(x)), atol=1e-6)


@pytest.mark.parametrize("variant", ["early_fusion", "mean_fusion", "late_mean", "late_geometric"])
def test_missing_modality_is_ignored_and_finite(variant):
    _, model = _build(variant)
    x = _inputs(model)
    x["audio_present"] = np.array([1.0, 0.0, 0.0], "float32")
    y = _inputs(model, seed=1)
    x2 = dict(x, audio=y["audio"])  # change the (missing) audio of rows 1 and 2
    a, b = np.asarray(model(x)), np.asarray(model(x2))
    assert np.isfinite(a).all()
    np.testing.assert_allclose(a[1:], b[1:], atol=1e-6)
    assert np.abs(a[0] - b[0]).max() > 0  # row 0 has audio: it must matter


def test_all_modalities_missing_is_finite():
    _, model = _build("late_mean")
    x = _inputs(model)
    x["audio_present"][:] = 0
    x["image_present"][:] = 0
    probs = np.asarray(model(x))
    np.testing.assert_allclose(probs, 0.1, atol=1e-6)  # uniform


def test_one_training_step_reaches_both_encoders():
    _, model = _build("early_fusion")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    encoders = {m: model.get_layer(f"{m}_encoder") for m in ("image", "audio")}
    before = {m: [np.array(w) for w in e.trainable_weights] for m, e in encoders.items()}
    model.train_on_batch(_inputs(model), np.array([0, 1, 2]))
    for m, encoder in encoders.items():
        moved = [np.abs(b - np.array(w)).max() > 0 for b, w in zip(before[m], encoder.trainable_weights)]
        assert any(moved), f"{m} encoder did not train"


def test_unknown_fusion_and_modality_are_rejected():
    with pytest.raises(ValueError, match="'model.fusion.type' must be one of .* got 'nonsense'"):
        load_config(None, TINY + ["model.fusion.type=nonsense"])
    config = load_config(None, TINY)
    config.model.fusion.type = "nonsense"  # past the config checks: the builder still refuses
    with pytest.raises(ValueError, match="nonsense"):
        build_classifier(config.model, config.data)
    with pytest.raises(ValueError, match="smell"):
        build_encoder("smell", config.model)


def test_token_source_reaches_the_fusion_layer():
    _, model = _build("mult_sequence")
    # Audio: one token per time step of the last feature map; image: one per 14x14 cell.
    steps = {
        m: model.get_layer(f"{m}_encoder").output["tokens"].shape[1] for m in ("image", "audio")
    }
    assert steps["image"] == 14 * 14 and 1 < steps["audio"] < 20
    _, model = _build("transformer_feature_map")
    assert "audio_tokens" in [layer.name for layer in model.layers]
    config = load_config(None, TINY + ["model.fusion.args={token_source: sequence}"])
    with pytest.raises(ValueError, match="token_source applies to fusions"):
        build_classifier(config.model, config.data)
    config = load_config(None, TINY + [
        "model.fusion.type=transformer", "model.fusion.args={token_source: frames}"])
    with pytest.raises(ValueError, match="token_source must be one of"):
        build_classifier(config.model, config.data)


def test_audio_encoder_takes_waveforms():
    config = load_config(None, TINY)
    encoder = build_encoder("audio", config.model, config.data)
    assert encoder.input_shape == (None, 2000)
    assert encoder(np.zeros((2, 2000), "float32")).shape == (2, 8)


CONFIG_DIR = __import__("pathlib").Path(__file__).resolve().parents[2] / "training" / "configs" / "avmnist"


CLASSIFIER_CONFIGS = [
    p for p in sorted(CONFIG_DIR.glob("*.yaml")) if "cross_modal:" not in p.read_text()
]


@pytest.mark.parametrize("path", CLASSIFIER_CONFIGS, ids=lambda p: p.stem)
def test_every_avmnist_config_builds_and_handles_missing_audio(path):
    config = load_config(path, TINY)
    # Transfer configs name trained model directories (tests/training/transfer_test.py loads
    # encoders from one); here the model is built as it would be before loading.
    model_config = dataclasses.replace(config.model, init_from=[])
    model = build_classifier(model_config, config.data)
    x = _inputs(model)
    if "audio_present" in x:
        x["audio_present"][1] = 0.0
    probs = model(x)
    if isinstance(probs, dict):  # model.tasks: the main head (tests/models/multitask_test.py)
        probs = probs["probabilities"]
    probs = np.asarray(probs)
    assert probs.shape == (3, 10) and np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-4)


def test_audio_features_do_not_depend_on_batch_mates():
    """One example's prediction is the same alone and beside a much louder example."""
    config = load_config(None, TINY + ["model.modalities=[audio]"])
    model = build_classifier(config.model, config.data)
    rng = np.random.default_rng(0)
    quiet = (0.001 * rng.standard_normal((1, 2000))).astype("float32")
    loud = rng.uniform(-1, 1, (1, 2000)).astype("float32")
    ones = np.ones((1,), "float32")
    alone = np.asarray(model({"audio": quiet, "audio_present": ones}))
    batch = np.asarray(model({"audio": np.concatenate([quiet, loud]),
                              "audio_present": np.ones((2,), "float32")}))
    np.testing.assert_allclose(alone[0], batch[0], atol=1e-6)
