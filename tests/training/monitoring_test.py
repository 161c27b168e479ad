"""TensorBoard monitoring: the documented tags exist in the event files, the Projector files
are consistent, fusion weights are logged when the fusion layer exposes them (and skipped
otherwise), and hparams sessions of different fusion types stay separate."""

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mmkeras.configs import load_config
from mmkeras.models import build_classifier
from tests.models.fusion_classifier_test import TINY
from training.callbacks import HParamsLogger
from training.monitoring import MultimodalMonitor
from training.monitoring import make_monitor
from training.monitoring import sprite_image
from training.monitoring import tag_missing
from training.monitoring import tag_noise

N = 16


def _events(run_dir):
    acc = EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
    acc.Reload()
    return acc


def _value(event):
    from tensorboard.util import tensor_util

    return float(tensor_util.make_ndarray(event.tensor_proto))


def _plugin(acc, tag):
    return acc.SummaryMetadata(tag).plugin_data.plugin_name


def _sample(n=N):
    rng = np.random.default_rng(0)
    x = {"image": rng.uniform(0, 1, (n, 28, 28, 1)).astype("float32"),
         "audio": rng.normal(size=(n, 2000)).astype("float32"),
         "image_present": np.ones(n, "float32"), "audio_present": np.ones(n, "float32")}
    return x, rng.integers(0, 10, n)


NOISE = {"audio": ("white_noise", "time_mask"), "image": ("gaussian", "salt_and_pepper",
                                                            "occlusion")}
LEVELS = (0, 0.25, 0.5, 0.75, 1.0)


def _expected_tags(modalities=("audio", "image")):
    tags = {"robustness/curve", "robustness/noise_curve", "contribution/all_present"}
    for m in modalities:
        tags.add(f"contribution/{m}")
        tags.update(tag_missing(m, rate) for rate in LEVELS)
        tags.update(tag_noise(m, kind, level) for kind in NOISE[m] for level in LEVELS)
    return tags


def _check_projector(run_dir, n, epochs):
    from google.protobuf import text_format
    from tensorboard.plugins.projector import ProjectorConfig

    config = text_format.Parse((run_dir / "projector_config.pbtxt").read_text(), ProjectorConfig())
    assert [e.tensor_path for e in config.embeddings] == [
        f"fused_epoch_{e:03d}.tsv" for e in epochs]
    for entry in config.embeddings:
        tensor = np.loadtxt(run_dir / entry.tensor_path, delimiter="\t", ndmin=2)
        assert tensor.shape[0] == n and np.isfinite(tensor).all()
        assert entry.metadata_path == "metadata.tsv" and entry.sprite.image_path == "sprite.png"
        assert list(entry.sprite.single_image_dim) == [28, 28]
    rows = (run_dir / "metadata.tsv").read_text().splitlines()
    assert rows[0] == "label\tpredicted\taudio_present\timage_present" and len(rows) == n + 1
    from PIL import Image

    side = int(np.ceil(np.sqrt(n)))
    assert Image.open(run_dir / "sprite.png").size == (28 * side, 28 * side)


@pytest.mark.parametrize("fusion", ["attention", "concat"])
def test_monitor_logs_documented_tags(fusion, tmp_path, capsys):
    config = load_config(None, TINY + [f"model.fusion.type={fusion}"])
    model = build_classifier(config.model, config.data)
    x, y = _sample()
    monitor = MultimodalMonitor(tmp_path, x, y, every=2)
    monitor.set_model(model)
    monitor.on_epoch_end(0)  # logged (first epoch)
    monitor.on_epoch_end(2)  # not logged (every 2: epochs 2, 4, ...)
    monitor.on_epoch_end(3)
    monitor.on_train_end()
    acc = _events(tmp_path / "monitor")
    tags = set(acc.Tags()["tensors"])
    expected = _expected_tags()
    if fusion == "concat":
        assert not any(t.startswith("fusion/") for t in tags)
        assert "exposes no modality weights" in capsys.readouterr().out
    else:
        expected |= {"fusion/weights", "fusion/mean_weight_audio", "fusion/mean_weight_image"}
        weights = [_value(acc.Tensors(f"fusion/mean_weight_{m}")[-1]) for m in ("audio", "image")]
        assert sum(weights) == pytest.approx(1.0, abs=1e-5)  # softmax weights, all present
    assert expected <= tags
    assert _plugin(acc, "robustness/curve") == "images"
    assert [e.step for e in acc.Tensors("contribution/image")] == [0, 3]
    clean = _value(acc.Tensors(tag_missing("image", 0))[0])
    assert clean == _value(acc.Tensors("contribution/all_present")[0])
    assert _plugin(acc, "robustness/noise_curve") == "images"
    # Severity 0 is the clean sample; full occlusion of every image equals a black image.
    assert _value(acc.Tensors(tag_noise("image", "occlusion", 0))[0]) == clean
    blacked = dict(x, image=np.zeros_like(x["image"]))
    black_accuracy = float(np.mean(np.argmax(model.predict(blacked, verbose=0), -1) == y))
    assert _value(acc.Tensors(tag_noise("image", "occlusion", 1.0))[0]) == pytest.approx(
        black_accuracy)
    without_image = _value(acc.Tensors(tag_missing("image", 1.0))[0])
    assert _value(acc.Tensors("contribution/image")[0]) == pytest.approx(clean - without_image)
    _check_projector(tmp_path / "monitor", N, epochs=[1, 4])


def test_sprite_draws_rgb_images_in_a_square_grid():
    images = np.zeros((5, 4, 6, 3), "float32")
    images[1, ..., 2] = 1.0  # the second image is blue
    sprite = sprite_image(images)
    assert sprite.shape == (3 * 4, 3 * 6, 3) and sprite.dtype == np.uint8
    assert (sprite[:4, 6:12] == [0, 0, 255]).all() and sprite[:4, :6].max() == 0
    assert sprite_image(np.ones((4, 2, 2, 1), "float32")).shape == (4, 4)


def test_monitor_sprite_is_the_first_image_feature_whatever_its_name(tmp_path):
    """Own data names image features after their columns: the sprite follows the type."""
    import tensorflow as tf

    config = load_config(None, TINY + ["model.modalities=[photo,audio]",
                                       "data.modality_types={photo: image}",
                                       "trainer.monitor_every=1"])
    x, y = _sample(4)
    x["photo"], x["photo_present"] = x.pop("image"), x.pop("image_present")
    monitor = make_monitor(config, tmp_path, tf.data.Dataset.from_tensors((x, y)))
    assert monitor.sprite_modality == "photo" and len(monitor.y) == 4
    config = load_config(None, TINY + ["model.modalities=[audio]", "trainer.monitor_every=1"])
    assert make_monitor(config, tmp_path, tf.data.Dataset.from_tensors((x, y))).sprite_modality is None


def test_static_fusion_weights_of_a_weighted_sum():
    from mmkeras import layers
    from mmkeras.explain.fusion import static_fusion_weights

    layer = layers.WeightedSumFusion(initial_weights=np.log([0.25, 0.75]))
    layer({"audio": np.ones((1, 2)), "image": np.ones((1, 2))})
    assert static_fusion_weights(layer) == pytest.approx({"audio": 0.25, "image": 0.75})
    assert static_fusion_weights(layers.ConcatFusion()) is None


def test_trainer_wires_the_monitor(missing_run, avmnist_small):
    """`trainer.monitor_every=1` in the tiny run: tags for both epochs, the Projector files."""
    import json

    acc = _events(missing_run / "logs" / "monitor")
    tags = set(acc.Tags()["tensors"])
    assert _expected_tags() <= tags
    assert [e.step for e in acc.Tensors("contribution/audio")] == [0, 1]
    counts = json.loads((avmnist_small / "dataset.json").read_text())["counts"]
    sample = min(48, counts["validation"]["pairs"])  # trainer.monitor_examples=48
    _check_projector(missing_run / "logs" / "monitor", sample, epochs=[1, 2])


def _session(run_dir):
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = _events(run_dir)
    tag = "_hparams_/session_start_info"
    content = acc.SummaryMetadata(tag).plugin_data.content
    return plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info


def test_hparams_sessions_of_different_fusions_stay_side_by_side(missing_run, tmp_path):
    info = _session(missing_run / "logs" / "hparams")
    assert info.hparams["model.fusion.type"].string_value == "concat"
    assert info.hparams["model.missing.dropout"].string_value == "audio=0.3,image=0.3"
    assert info.hparams["model.missing.imputation"].string_value == "mean"
    assert info.group_name.startswith("avmnist_early_fusion_modality_dropout-")
    # Same experiment name, different fusion type: different groups (rows) in the dashboard;
    # the same values again: the same group.
    groups = []
    for run, fusion in [("a", "concat"), ("b", "attention"), ("c", "concat")]:
        logger = HParamsLogger(tmp_path / run, {"model.fusion.type": fusion}, trial_id="exp")
        logger.on_train_begin()
        groups.append(_session(tmp_path / run / "hparams").group_name)
    assert groups[0] != groups[1] and groups[0] == groups[2]
