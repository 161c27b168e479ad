"""DualEncoder: training with each pair loss, saving, and the retrieval training script."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from mmkeras import losses
from mmkeras.models import DualEncoder
from tests.conftest import REPO


def _tower(name, dim):
    x = keras.Input((dim,), name=name)
    return keras.Model(x, keras.layers.Dense(8, activation="tanh")(x), name=f"{name}_encoder")


def _paired_data(n=128, seed=0):
    # Two views of a shared 3-d latent: a learnable alignment.
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 3))
    image = latent @ rng.normal(size=(3, 6)) + 0.05 * rng.normal(size=(n, 6))
    audio = latent @ rng.normal(size=(3, 4)) + 0.05 * rng.normal(size=(n, 4))
    return {"image": image.astype("float32"), "audio": audio.astype("float32")}


@pytest.mark.parametrize(
    "loss,kwargs",
    [("clip", {}), ("siglip", {"temperature": 0.1, "logit_bias": -10.0}),
     ("cca", {"normalize": False}), ("kernel_alignment", {})],
)
def test_training_lowers_each_pair_loss(loss, kwargs):
    keras.utils.set_random_seed(0)
    model = DualEncoder({"image": _tower("image", 6), "audio": _tower("audio", 4)},
                        embedding_dim=3, **kwargs)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=loss)
    x = _paired_data()
    history = model.fit(x, epochs=15, batch_size=64, verbose=0).history
    assert history["loss"][-1] < history["loss"][0]
    assert set(history) == (
        {"loss"} if loss in ("cca", "kernel_alignment") else {"loss", "temperature"})
    if loss == "siglip":
        assert len(model.logit_scale.trainable_weights) == 2  # scale and bias are learned


def test_embeddings_are_normalised_and_model_round_trips(tmp_path):
    model = DualEncoder({"image": _tower("image", 6), "audio": _tower("audio", 4)},
                        embedding_dim=5, projection_units=[7], temperature=0.05)
    model.compile(optimizer="adam", loss=losses.SigLIPLoss())
    x = _paired_data(32)
    model.fit(x, epochs=1, batch_size=16, verbose=0)
    out = model.predict(x, verbose=0)
    assert set(out) == {"image_embedding", "audio_embedding"}
    np.testing.assert_allclose(np.linalg.norm(out["audio_embedding"], axis=1), 1.0, rtol=1e-5)
    path = tmp_path / "dual.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored, DualEncoder)
    assert isinstance(restored.pair_loss, losses.SigLIPLoss)  # the compile config is kept
    again = restored.predict(x, verbose=0)
    for key in out:
        np.testing.assert_allclose(again[key], out[key], rtol=1e-5, atol=1e-6)
    assert float(restored.logit_scale.scale()) == pytest.approx(float(model.logit_scale.scale()))
    with pytest.raises(ValueError, match="two encoders"):
        DualEncoder({"image": _tower("image", 6)})


def test_scatter_alignment_penalty_is_added_and_kept_on_reload(tmp_path):
    """`scatter_alignment` adds the subspace projection's penalty on the batch's embeddings
    to the model's losses (zero when both modalities spread alike), and round-trips."""
    from mmkeras.layers.subspace_projection import scatter_alignment_penalty

    keras.utils.set_random_seed(0)
    model = DualEncoder({"image": _tower("image", 6), "audio": _tower("audio", 4)},
                        embedding_dim=3, scatter_alignment=2.0)
    x = _paired_data(32)
    out = model(x)
    expected = 2.0 * float(scatter_alignment_penalty(
        [out["audio_embedding"], out["image_embedding"]], normalize=True))
    assert len(model.losses) == 1 and float(model.losses[0]) == pytest.approx(expected, rel=1e-5)
    assert expected > 0
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="clip")
    before = float(scatter_alignment_penalty(list(model(x).values()), normalize=True))
    model.fit(x, epochs=20, batch_size=32, verbose=0)
    after = float(scatter_alignment_penalty(list(model(x).values()), normalize=True))
    assert after < before
    path = tmp_path / "dual.keras"
    model.save(path)
    assert keras.saving.load_model(path).scatter_alignment == 2.0
    with pytest.raises(ValueError, match="scatter_alignment"):
        DualEncoder({"image": _tower("image", 6), "audio": _tower("audio", 4)},
                    scatter_alignment=-1.0)


@pytest.mark.large
def test_train_retrieval_script_on_real_slice_with_two_replicas(avmnist_small, tmp_path):
    """The CLI end to end on the small real AV-MNIST slice, under MirroredStrategy(2 CPUs)."""
    model_dir = tmp_path / "dual"
    sets = [
        "trainer.epochs=1", "trainer.verbose=0", "data.batch_size=32", "runtime.cpu_replicas=2",
        "model.image_encoder.filters=[8]", "model.audio_encoder.filters=[8]",
        "model.image_encoder.embedding_dim=16", "model.audio_encoder.embedding_dim=16",
        "cross_modal.embedding_dim=8", f"data.data_dir={avmnist_small}",
        "cross_modal.eval_cca_train_examples=120",
    ]
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, "-m", "training.train", "--config",
         "training/configs/avmnist/dual_encoder.yaml", "--model-dir", str(model_dir),
         *[a for s in sets for a in ("--set", s)]],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads((model_dir / "report.json").read_text())
    assert report["replicas"] == 2 and report["strategy"] == "MirroredStrategy"
    for direction in ("image_to_audio", "audio_to_image"):
        for level in ("instance", "class"):
            assert set(report["retrieval"][direction][level]["ours"]) >= {"R@1", "R@5", "R@10", "median_rank"}
            assert "random" in report["retrieval"][direction][level]
    assert set(report["clustering"]) == {"image", "audio", "fused"}
    assert (model_dir / "model.keras").is_file() and (model_dir / "config.yaml").is_file()
    assert "image_to_audio" in result.stdout
