"""Shared-representation autoencoder: presence-aware shared code, cross-modal reconstruction."""

import keras
import numpy as np
import pytest

from mmkeras.models.shared_autoencoder import ALIGNMENT
from mmkeras.models.shared_autoencoder import alignment_loss
from mmkeras.models.shared_autoencoder import build_shared_autoencoder
from mmkeras.models.shared_autoencoder import code_alignment_loss
from mmkeras.models.shared_autoencoder import code_model
from mmkeras.models.shared_autoencoder import subset_training_model


def _encoder(name, shape):
    x = keras.Input(shape, name=name)
    h = keras.layers.Dense(16, activation="relu")(keras.layers.Flatten()(x))
    return keras.Model(x, h, name=f"{name}_encoder")


def _data(n=256, seed=0):
    # Both modalities are rendered from one class label: a code from either one alone can
    # reconstruct the other (up to the within-class noise).
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, size=n)
    image_protos = rng.random((4, 8, 8, 1))
    audio_protos = rng.normal(size=(4, 6))
    image = np.clip(image_protos[labels] + 0.05 * rng.normal(size=(n, 8, 8, 1)), 0, 1)
    audio = audio_protos[labels] + 0.05 * rng.normal(size=(n, 6))
    ones = np.ones(n, "float32")
    x = {"image": image.astype("float32"), "audio": audio.astype("float32"),
         "image_present": ones, "audio_present": ones}
    y = {"image_reconstruction": x["image"], "audio_reconstruction": x["audio"]}
    return x, y, labels


def test_code_is_the_mean_of_present_modalities_codes():
    model = build_shared_autoencoder(
        {"image": _encoder("image", (8, 8, 1)), "audio": _encoder("audio", (6,))},
        {"image": (8, 8, 1), "audio": (6,)}, code_dim=3,
    )
    x, _, _ = _data(4)
    coder = code_model(model)
    only = {m: coder(dict(x, **{f"{o}_present": np.zeros(4, "float32")})) for m, o in (("image", "audio"), ("audio", "image"))}
    both = coder(x)
    np.testing.assert_allclose(np.asarray(both), (np.asarray(only["image"]) + np.asarray(only["audio"])) / 2, rtol=1e-5, atol=1e-6)
    assert set(model.output_names) == {"image_reconstruction", "audio_reconstruction"}
    with pytest.raises(ValueError, match="divisible by 4"):
        build_shared_autoencoder({"image": _encoder("image", (6, 6, 1))}, {"image": (6, 6, 1)})


@pytest.mark.large
def test_cross_modal_reconstruction_beats_the_mean_and_round_trips(tmp_path):
    keras.utils.set_random_seed(0)
    model = build_shared_autoencoder(
        {"image": _encoder("image", (8, 8, 1)), "audio": _encoder("audio", (6,))},
        {"image": (8, 8, 1), "audio": (6,)}, code_dim=4, hidden=32,
    )
    model.compile(keras.optimizers.Adam(0.01), loss={"image_reconstruction": "mse", "audio_reconstruction": "mse"})
    x, y, _ = _data()
    model.fit(x, y, epochs=40, batch_size=32, verbose=0)
    image_only = dict(x, audio_present=np.zeros(len(x["audio"]), "float32"))
    audio_from_image = model.predict(image_only, verbose=0)["audio_reconstruction"]
    mean_baseline = np.mean((x["audio"].mean(0) - x["audio"]) ** 2)
    assert np.mean((audio_from_image - x["audio"]) ** 2) < 0.3 * mean_baseline
    path = tmp_path / "ae.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_allclose(
        restored.predict(image_only, verbose=0)["audio_reconstruction"], audio_from_image, rtol=1e-4, atol=1e-5
    )


def test_code_alignment_loss_closed_form():
    a = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]], "float32")
    # l2: squared distance over the codes' spread (here every code is at distance 1 from the
    # centre 0, so the spread is 1).
    b = a[[1, 0, 3, 2]]
    np.testing.assert_allclose(np.asarray(code_alignment_loss(a, a, "l2")), np.zeros(4), atol=1e-6)
    np.testing.assert_allclose(np.asarray(code_alignment_loss(a, b, "l2")), np.full(4, 2.0), rtol=1e-5)
    # Shrinking both codes does not lower it.
    np.testing.assert_allclose(
        np.asarray(code_alignment_loss(0.1 * a, 0.1 * b, "l2")), np.full(4, 2.0), rtol=1e-3
    )
    # infonce centres both on their joint batch mean (3 here) and normalises: row i's logits
    # against b_j are cos(a_i, b_j) / t =
    # [1, 0, -1, 0] / t (in some order), the same in both directions.
    t = 0.5
    expected = -np.log(np.exp(1 / t) / (np.exp(1 / t) + 2 + np.exp(-1 / t)))
    np.testing.assert_allclose(
        np.asarray(code_alignment_loss(a + 3.0, a + 3.0, "infonce", temperature=t)), np.full(4, expected), rtol=1e-5
    )
    # Every row of a matched to the wrong b: log-softmax of the 0 logit.
    wrong = -np.log(1.0 / (np.exp(1 / t) + 2 + np.exp(-1 / t)))
    np.testing.assert_allclose(np.asarray(code_alignment_loss(a, b, "infonce", temperature=t)), np.full(4, wrong), rtol=1e-5)
    with pytest.raises(ValueError, match="alignment method"):
        code_alignment_loss(a, a, "cosine")


def test_subset_model_decodes_every_modality_from_every_subset_with_the_same_weights():
    model = build_shared_autoencoder(
        {"image": _encoder("image", (8, 8, 1)), "audio": _encoder("audio", (6,))},
        {"image": (8, 8, 1), "audio": (6,)}, code_dim=3,
    )
    trainee = subset_training_model(model, alignment="l2")
    assert set(trainee.output_names) == {
        f"{m}_from_{s}" for m in ("image", "audio") for s in ("image", "audio", "audio_image")
    } | {ALIGNMENT}
    assert len(trainee.trainable_weights) == len(model.trainable_weights)
    x, _, _ = _data(5)
    out = trainee({"image": x["image"], "audio": x["audio"]})
    zeros = np.zeros(5, "float32")
    for subset, flags in (("audio_image", {}), ("image", {"audio_present": zeros}), ("audio", {"image_present": zeros})):
        ref = model(dict(x, **flags))
        for m in ("image", "audio"):
            np.testing.assert_allclose(
                np.asarray(out[f"{m}_from_{subset}"]), np.asarray(ref[f"{m}_reconstruction"]), rtol=1e-5, atol=1e-6
            )
    coder = code_model(model)
    codes = {m: np.asarray(coder(dict(x, **{f"{o}_present": zeros}))) for m, o in (("image", "audio"), ("audio", "image"))}
    np.testing.assert_allclose(
        np.asarray(out[ALIGNMENT]), np.asarray(code_alignment_loss(codes["image"], codes["audio"], "l2")), rtol=1e-4, atol=1e-6
    )
    np.testing.assert_allclose(np.asarray(alignment_loss(None, out[ALIGNMENT])), np.asarray(out[ALIGNMENT]))


@pytest.mark.large
def test_subset_training_with_alignment_shares_the_code():
    keras.utils.set_random_seed(0)
    model = build_shared_autoencoder(
        {"image": _encoder("image", (8, 8, 1)), "audio": _encoder("audio", (6,))},
        {"image": (8, 8, 1), "audio": (6,)}, code_dim=4, hidden=32,
    )
    trainee = subset_training_model(model, alignment="l2")
    x, y, labels = _data()
    targets = {f"{m}_from_{s}": y[f"{m}_reconstruction"] for m in ("image", "audio") for s in ("image", "audio", "audio_image")}
    targets[ALIGNMENT] = np.zeros(len(labels), "float32")
    losses = {k: "mse" for k in targets}
    losses[ALIGNMENT] = alignment_loss
    trainee.compile(keras.optimizers.Adam(0.01), loss=losses, loss_weights={k: 0.01 if k == ALIGNMENT else 1.0 for k in targets})
    before = float(np.mean(np.asarray(trainee({"image": x["image"], "audio": x["audio"]})[ALIGNMENT])))
    trainee.fit({"image": x["image"], "audio": x["audio"]}, targets, epochs=40, batch_size=32, verbose=0)
    out = trainee.predict({"image": x["image"], "audio": x["audio"]}, verbose=0)
    assert float(np.mean(out[ALIGNMENT])) < 0.5 * before
    for m, other in (("audio", "image"), ("image", "audio")):
        mean_baseline = np.mean((x[m].mean(0) - x[m]) ** 2)
        assert np.mean((out[f"{m}_from_{other}"] - x[m]) ** 2) < 0.3 * mean_baseline
    # The single-modality codes are interchangeable: a nearest-class-mean rule fitted on
    # image-only codes labels audio-only codes.
    zeros = np.zeros(len(labels), "float32")
    coder = code_model(model)
    image_codes = np.asarray(coder(dict(x, audio_present=zeros)))
    audio_codes = np.asarray(coder(dict(x, image_present=zeros)))
    centroids = np.stack([image_codes[labels == c].mean(0) for c in range(4)])
    predicted = np.argmin(((audio_codes[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    assert np.mean(predicted == labels) > 0.9
