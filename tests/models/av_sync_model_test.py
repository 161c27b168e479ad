"""AVSyncModel and SyncOffsetScores: closed-form offset scores, shapes, saving, training."""

import math

import keras
import numpy as np
import pytest

from mmkeras.api_export import PUBLIC_API
from mmkeras.models.av_sync_model import AVSyncModel
from mmkeras.layers.sync_offset_scores import SyncOffsetScores

SMALL = dict(frames=6, max_offset=2, video_filters=(4,), frame_units=8, audio_filters=(8,),
             num_mel_bins=16, embedding_dim=8)


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _expected(v, a, s, scale):
    steps = v.shape[1]
    sims = np.stack([np.mean(np.sum(_unit(v) * _unit(a[:, k:k + steps]), -1), -1)
                     for k in range(2 * s + 1)], -1)
    logits = scale * sims
    others = np.delete(logits, s, axis=-1)
    sync = logits[:, s] - np.log(np.sum(np.exp(others), -1)) + math.log(2 * s)
    return logits, sync


@pytest.mark.parametrize("true_offset", [0, -3, 2])
def test_offset_scores_closed_form(true_offset):
    """Audio embeddings equal to the video's at one offset score exactly `scale` there (cosine
    1 at every step), the maximum; every logit and the sync logit match numpy."""
    rng = np.random.default_rng(0)
    s, steps, dim = 3, 7, 5
    v = rng.normal(size=(4, steps, dim)).astype("float32")
    a = rng.normal(size=(4, steps + 2 * s, dim)).astype("float32")
    k = s + true_offset
    a[:, k:k + steps] = 2.5 * v  # the length does not matter: cosine similarity
    layer = SyncOffsetScores(max_offset=s, temperature=0.2)
    logits, sync = (np.asarray(t) for t in layer(v, a))
    assert logits.shape == (4, 2 * s + 1) and sync.shape == (4,)
    np.testing.assert_allclose(logits[:, k], 5.0, rtol=1e-5)
    assert (np.argmax(logits, -1) == k).all()
    expected_logits, expected_sync = _expected(v, a, s, scale=5.0)
    np.testing.assert_allclose(logits, expected_logits, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(sync, expected_sync, rtol=1e-4, atol=1e-4)
    if true_offset == 0:
        assert (sync > 0).all()  # in sync: the balanced log-odds are positive


def test_offset_scores_uniform_logits_give_zero_sync_logit_and_config():
    layer = SyncOffsetScores(max_offset=2, temperature=0.5, max_scale=10.0)
    v = np.ones((2, 3, 4), "float32")
    a = np.ones((2, 7, 4), "float32")  # every offset equally good
    logits, sync = layer(v, a)
    np.testing.assert_allclose(logits, 2.0, rtol=1e-6)
    np.testing.assert_allclose(sync, 0.0, atol=1e-5)  # log(1/4) + log 4
    restored = SyncOffsetScores.from_config(layer.get_config())
    assert restored.get_config() == layer.get_config()
    assert PUBLIC_API["mmkeras.layers.SyncOffsetScores"] is SyncOffsetScores
    with pytest.raises(ValueError, match="expected video steps 3"):
        layer(v, np.ones((2, 6, 4), "float32"))
    with pytest.raises(ValueError, match="max_offset"):
        SyncOffsetScores(max_offset=0)


def _inputs(n=4, seed=0):
    rng = np.random.default_rng(seed)
    return {"video": rng.uniform(size=(n, 6, 28, 28, 1)).astype("float32"),
            "audio": (0.1 * rng.normal(size=(n, 10 * 640))).astype("float32")}


def test_model_shapes_round_trip_and_training_step(tmp_path):
    keras.utils.set_random_seed(0)
    model = AVSyncModel(**SMALL)
    assert model.offsets == [-2, -1, 0, 1, 2]
    x = _inputs()
    out = model(x)
    assert out["offset_logits"].shape == (4, 5) and out["sync_logit"].shape == (4,)
    assert model.get_layer("audio_embedding").output.shape[1] == 6 + 2 * 2

    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss={"offset_logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True)},
    )
    y = {"offset_logits": np.array([2, 0, 4, 1]), "sync_logit": np.array([1, 0, 0, 0], "float32")}
    before = [w.numpy().copy() for w in model.trainable_weights]
    history = model.fit(x, y, epochs=3, batch_size=4, verbose=0).history
    assert np.isfinite(history["loss"]).all()
    assert any(not np.allclose(b, w.numpy()) for b, w in zip(before, model.trainable_weights))

    path = tmp_path / "av_sync.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored, AVSyncModel) and restored.get_config() == model.get_config()
    again, now = restored.predict(x, verbose=0), model.predict(x, verbose=0)
    for key in now:
        np.testing.assert_allclose(again[key], now[key], rtol=1e-5, atol=1e-5)
    assert PUBLIC_API["mmkeras.models.AVSyncModel"] is AVSyncModel
    with pytest.raises(ValueError, match="mel_hop"):
        AVSyncModel(frame_samples=640, mel_hop=100)
