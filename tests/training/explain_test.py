"""Explanations: the flattened model equals the nested one, integrated gradients are complete,
Saliency / Grad-CAM++ (tf-keras-vis) give image-sized maps, and `python -m training.explain`
writes its files for the tiny trained multi-input model."""

import json
import re

import keras
import numpy as np
import pytest

from mmkeras import layers
from mmkeras.configs import load_config
from mmkeras.explain import flatten_model
from mmkeras.explain import image_gradcam_plus_plus
from mmkeras.explain import image_saliency
from mmkeras.explain import integrated_gradients
from mmkeras.explain import presence_ablation
from mmkeras.explain.saliency import last_conv_layer
from mmkeras.explain.saliency import seed_inputs
from mmkeras.models import build_classifier
from tests.models.fusion_classifier_test import TINY as MODEL_TINY
from tests.training.train_export_integration_test import _run

TINY = MODEL_TINY + ["model.image_encoder.filters=[4, 6]", "model.missing.imputation=learned"]


@pytest.fixture(scope="module")
def model_and_example():
    keras.utils.set_random_seed(0)
    config = load_config(None, TINY)
    model = build_classifier(config.model, config.data)
    rng = np.random.default_rng(0)
    example = {"image": rng.uniform(0, 1, (1, 28, 28, 1)).astype("float32"),
               "audio": (0.3 * rng.normal(size=(1, 2000))).astype("float32"),
               "image_present": np.ones(1, "float32"), "audio_present": np.ones(1, "float32")}
    return model, example


def test_flattened_model_matches_and_exposes_the_encoder_convolutions(model_and_example):
    model, example = model_and_example
    probs = np.asarray(model(example))
    same = flatten_model(model, linear_output=False)
    np.testing.assert_allclose(np.asarray(same(seed_inputs(same, example))), probs, atol=1e-6)
    logits = flatten_model(model)
    np.testing.assert_allclose(
        keras.ops.softmax(logits(seed_inputs(logits, example))), probs, atol=1e-6)
    assert [t.name for t in logits.inputs] == [t.name for t in model.inputs]
    assert last_conv_layer(logits, "image_encoder_") == "image_encoder_conv1"
    # The copy is independent: its weights are copies.
    logits.get_layer("image_encoder_conv1").kernel.assign(
        np.zeros(logits.get_layer("image_encoder_conv1").kernel.shape))
    np.testing.assert_allclose(np.asarray(model(example)), probs)


def test_saliency_and_gradcam_plus_plus_are_image_sized(model_and_example):
    model, example = model_and_example
    flat = flatten_model(model)
    target = int(np.asarray(model(example)).argmax())
    saliency = image_saliency(flat, example, target)
    cam, layer = image_gradcam_plus_plus(flat, example, target)
    assert layer == "image_encoder_conv1"
    for heat in (saliency, cam):
        assert heat.shape == (1, 28, 28)
        assert np.isfinite(heat).all() and heat.min() >= 0 and heat.max() <= 1 + 1e-6


def test_integrated_gradients_are_complete_and_ablation_uses_flags(model_and_example):
    model, example = model_and_example
    # The image path alone (audio baseline = the audio itself): complete to ~1%.
    image_only = integrated_gradients(model, example, target=3, steps=32, batch_size=33,
                                      baselines={"audio": example["audio"]})
    assert image_only["totals"]["audio"] == 0.0
    delta = image_only["prediction"] - image_only["baseline_prediction"]
    assert abs(delta) > 1e-5
    assert image_only["completeness_error"] <= 0.02 * abs(delta)
    # Both modalities: the log-mel path is harder to integrate; the error is reported.
    both = integrated_gradients(model, example, target=3, steps=16)
    assert both["attributions"]["image"].shape == (28, 28, 1)
    assert both["attributions"]["audio"].shape == (2000,)
    assert np.isfinite(both["attributions"]["audio"]).all()
    assert both["completeness_error"] == pytest.approx(abs(
        sum(both["totals"].values()) - (both["prediction"] - both["baseline_prediction"])))
    ablation = presence_ablation(model, example, target=3)
    without_audio = dict(example, audio_present=np.zeros(1, "float32"),
                         audio=np.zeros((1, 2000), "float32"))
    assert ablation["without"]["audio"] == pytest.approx(
        float(np.asarray(model(without_audio))[0, 3]), abs=1e-6)
    assert ablation["only"]["image"] == ablation["without"]["audio"]  # two modalities


def test_explain_command_writes_its_files(missing_run):
    out = missing_run / "explain_k2"
    result = _run(["training.explain", "--model-dir", str(missing_run), "--index", "2",
                   "--out", str(out), "--steps", "16"])
    assert "[explain]" in result.stdout
    summary = json.loads((out / "explain.json").read_text())
    expected = {"report.html", "explain.json", "input_image.png", "input_audio.png",
                "saliency_image.png", "gradcam_plus_plus_image.png",
                "integrated_gradients_image.png", "integrated_gradients_audio.png",
                "modality_contributions.png"}
    assert set(summary["files"]) == expected
    for name in expected:
        assert (out / name).stat().st_size > 200, name
    page = (out / "report.html").read_text()
    assert set(re.findall(r"src='([^']+)'", page)) == {n for n in expected if n.endswith(".png")}
    assert summary["gradcam_layer"] == "image_encoder_conv0"
    assert summary["target"] == summary["predicted"]
    assert sorted(summary["presence_ablation"]["contribution"]) == ["audio", "image"]


def test_explain_rejects_an_index_out_of_range(missing_run, capsys):
    from training.explain import main

    assert main(["--model-dir", str(missing_run), "--index", "100000"]) == 2
    assert "out of range" in capsys.readouterr().err


FUSION_TYPES = sorted(layers.FUSION_LAYERS) + sorted(layers.DECISION_FUSION_LAYERS)


@pytest.mark.parametrize("fusion", FUSION_TYPES)
def test_attribution_over_the_fusion_family(fusion):
    """Integrated gradients are complete and presence ablation reads the flags, whatever the
    fusion layer (not only concat)."""
    keras.utils.set_random_seed(0)
    sequence = layers.FUSION_LAYERS.get(fusion) is not None and (
        layers.FUSION_LAYERS[fusion].input_kind == "sequence")
    imputation = "none" if sequence else "learned"  # sequence fusions mask tokens themselves
    args = ["model.fusion.args={output_dim: 8}"] if fusion in ("bilinear", "low_rank_tensor") else []
    config = load_config(None, TINY + [f"model.fusion.type={fusion}",
                                       f"model.missing.imputation={imputation}", *args])
    model = build_classifier(config.model, config.data)
    rng = np.random.default_rng(1)
    example = {"image": rng.uniform(0, 1, (1, 28, 28, 1)).astype("float32"),
               "audio": (0.3 * rng.normal(size=(1, 2000))).astype("float32"),
               "image_present": np.ones(1, "float32"), "audio_present": np.ones(1, "float32")}
    target = int(np.asarray(model(example)).argmax())
    # The image path alone: audio held at its value, so the attributions must sum to the change.
    image_only = integrated_gradients(model, example, target=target, steps=128, batch_size=129,
                                      baselines={"audio": example["audio"]})
    assert image_only["totals"]["audio"] == 0.0
    assert np.isfinite(image_only["attributions"]["image"]).all()
    delta = image_only["prediction"] - image_only["baseline_prediction"]
    assert image_only["completeness_error"] <= 0.02 * abs(delta) + 1e-6
    ablation = presence_ablation(model, example, target=target)
    for m in ("audio", "image"):
        dropped = dict(example, **{f"{m}_present": np.zeros(1, "float32")})
        dropped[m] = np.zeros_like(example[m])
        assert ablation["without"][m] == pytest.approx(
            float(np.asarray(model(dropped))[0, target]), abs=1e-6)
        assert ablation["contribution"][m] == pytest.approx(
            ablation["all_present"] - ablation["without"][m])
