"""End to end on a small real AV-MNIST slice: train (2 replicas) -> report -> resume.

The export of a trained model directory (CLI, parity, `saved_model_cli`, a second export being a
new version) is checked once, on tests/serving/export_test.py's model.

The commands run as subprocesses, exactly as a user types them, because logical CPU devices
must be configured before TensorFlow starts.
"""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.large

TINY = [
    "trainer.epochs=2",
    "trainer.verbose=0",
    "data.batch_size=16",
    "runtime.cpu_replicas=2",
    "model.image_encoder.filters=[8]",
    "model.audio_encoder.filters=[8]",
    "model.image_encoder.embedding_dim=16",
    "model.audio_encoder.embedding_dim=16",
    "model.head_units=[16]",
]


def _run(args, check=True):
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=900,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{args} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


@pytest.fixture(scope="session")
def trained_dir(avmnist_small, tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("run") / "early_fusion"
    sets = [x for s in TINY + [f"data.data_dir={avmnist_small}"] for x in ("--set", s)]
    _run(["training.train", "--config", "training/configs/avmnist/early_fusion.yaml",
          "--model-dir", str(model_dir), *sets])
    return model_dir


def test_report_and_artifacts(trained_dir, avmnist_small):
    report = json.loads((trained_dir / "report.json").read_text())
    dataset = json.loads((avmnist_small / "dataset.json").read_text())
    assert report["replicas"] == 2 and report["strategy"] == "MirroredStrategy"
    assert report["epochs"] == 2
    assert 0.0 <= report["test"]["accuracy"] <= 1.0
    assert report["test"]["examples"] == dataset["counts"]["test"]["pairs"]
    assert len(report["test"]["per_class_accuracy"]) == 10
    assert report["dataset"]["checksum"] == dataset["checksum"]
    assert report["samples_per_second"] > 0 and report["wall_seconds"] > 0
    assert report["config"]["runtime"]["cpu_replicas"] == 2
    for name in ["model.keras", "config.yaml", "history.csv", "learning_curves.png",
                 "confusion_matrix.png", "checkpoints/best.keras", "checkpoints/best.json"]:
        assert (trained_dir / name).is_file(), name
    events = {p.parent.name for p in (trained_dir / "logs").rglob("events.out.tfevents.*")}
    assert {"train", "validation", "hparams"} <= events


def test_tensorboard_scalars_are_logged(trained_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(trained_dir / "logs" / "validation"), size_guidance={"tensors": 0})
    acc.Reload()
    tags = acc.Tags()["tensors"]
    assert "epoch_accuracy" in tags and "epoch_loss" in tags
    assert len(acc.Tensors("epoch_accuracy")) == 2


def test_rerun_resumes_instead_of_retraining(trained_dir, avmnist_small):
    """The same command again finds all epochs done in the backup and trains none."""
    sets = [x for s in TINY + [f"data.data_dir={avmnist_small}"] for x in ("--set", s)]
    _run(["training.train", "--config", "training/configs/avmnist/early_fusion.yaml",
          "--model-dir", str(trained_dir), *sets])
    report = json.loads((trained_dir / "report.json").read_text())
    assert report["epochs_this_run"] == 0 and report["epochs"] == 2


def test_unknown_config_key_is_rejected_by_the_cli(tmp_path):
    result = _run(["training.train", "--config", "training/configs/avmnist/early_fusion.yaml",
                   "--model-dir", str(tmp_path / "x"), "--set", "trainer.epochz=1"], check=False)
    assert result.returncode == 2
    assert "trainer.epochz" in result.stderr


def test_corrupt_file_stops_training_naming_file_and_row(avmnist_copy, tmp_path):
    import csv

    with open(avmnist_copy / "manifest.csv", newline="") as f:
        row = next(r for r in csv.DictReader(f) if r["split"] == "train")
    (avmnist_copy / row["image"]).write_bytes(b"\x89PNG\r\n\x1a\n broken")
    # One device: this test is about bad input, not distribution.
    one_device = TINY + ["runtime.distribution=default", "runtime.cpu_replicas=1"]
    sets = [x for s in one_device + [f"data.data_dir={avmnist_copy}"] for x in ("--set", s)]
    result = _run(["training.train", "--config", "training/configs/avmnist/early_fusion.yaml",
                   "--model-dir", str(tmp_path / "bad"), *sets], check=False)
    assert result.returncode != 0
    assert row["image"] in result.stderr and "line 2" in result.stderr

    skip = _run(["training.train", "--config", "training/configs/avmnist/early_fusion.yaml",
                 "--model-dir", str(tmp_path / "skip"), *sets, "--set", "data.bad_input=skip",
                 "--set", "trainer.epochs=1"])
    report = json.loads((tmp_path / "skip" / "report.json").read_text())
    assert report["data_problems"]["train"]["skipped"] == 1
    assert "skipped 1 rows" in skip.stdout
