"""The AV-sync task through the one driver, end to end on a tiny real dataset, 2 CPU replicas.

Kept cheap: the tiny `hold` dataset of tests/datasets/av_sync_test.py (shared through the
session's data root), offsets -2..2, a model of a few hundred weights, one step per epoch,
and the bad-key check in process (it exits before TensorFlow is needed). The second command
asks for one more epoch: the driver resumes from its backup of the first.
"""

import json
import os
import subprocess
import sys

import pytest

from mmkeras.datasets import av_sync
from tests.conftest import REPO
from training import train

pytestmark = pytest.mark.large

TINY = dict(train=12, validation=4, test=6, seed=0)  # as tests/datasets/av_sync_test.py
HOLD = dict(visual="hold", jitter_frames=0.5)
CONFIG = "training/configs/av_sync/av_sync.yaml"


def _run(args):
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", "training.train", *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=900)


def test_av_sync_task_with_two_replicas_and_resume(data_root, tmp_path):
    dataset = av_sync.prepare(data_root=data_root, verbose=False, **TINY, **HOLD)
    model_dir = tmp_path / "av_sync"
    sets = [
        "trainer.steps_per_epoch=1", "trainer.verbose=0",
        "data.batch_size=4", "runtime.cpu_replicas=2", f"data.data_dir={dataset}",
        "av_sync.max_offset=2", "av_sync.video_filters=[2]", "av_sync.frame_units=4",
        "av_sync.audio_filters=[4]", "av_sync.embedding_dim=4", "av_sync.num_mel_bins=8",
    ]
    args = ["--config", CONFIG, "--model-dir", str(model_dir),
            *[a for s in sets for a in ("--set", s)]]
    first = _run([*args, "--set", "trainer.epochs=1"])
    assert first.returncode == 0, first.stderr[-4000:]
    result = _run([*args, "--set", "trainer.epochs=2"])
    assert result.returncode == 0, result.stderr[-4000:]
    assert "resumed from" in result.stdout and "after epoch 1" in result.stdout
    report = json.loads((model_dir / "report.json").read_text())
    assert report["task"] == "av_sync" and report["epochs"] == 2
    assert report["epochs_this_run"] == 1 and report["runs"] == 2
    assert report["replicas"] == 2 and report["strategy"] == "MirroredStrategy"
    assert report["best_validation"]["monitor"] == "val_loss"
    assert report["test_examples"] == 6 and report["offset"]["evaluations"] == 6 * 5
    assert report["offset"]["chance_exact"] == pytest.approx(1 / 5)
    assert report["offset"]["chance_within_1"] == pytest.approx(13 / 25)
    assert sum(map(sum, report["offset"]["confusion_matrix"])) == 30
    assert 0.0 <= report["sync"]["auc"] <= 1.0 and report["sync"]["positives"] == 6
    for baseline in ("energy_baseline", "frame_difference_baseline"):
        assert set(report[baseline]) == {"offset", "sync"}, baseline
        assert report[baseline]["offset"]["evaluations"] == 30
        assert 0.0 <= report[baseline]["sync"]["auc"] <= 1.0
    meta = json.loads((dataset / "dataset.json").read_text())
    assert report["dataset"]["checksum"] == meta["checksum"]
    assert (report["dataset"]["visual"], report["dataset"]["jitter_frames"]) == ("hold", 0.5)
    assert report["data_problems"]["test"] == {"rows": 6, "skipped": 0}
    assert report["fit_cpu_seconds"] > 0
    for name in ("model.keras", "config.yaml", "history.csv", "report.json",
                 "checkpoints/best.keras", "checkpoints/best.json",
                 "backup/training_metadata.json", "learning_curves.png"):
        assert (model_dir / name).is_file(), name
    assert len((model_dir / "history.csv").read_text().splitlines()) == 1 + 2
    assert "offset accuracy: exact" in result.stdout and "chance 0.2000" in result.stdout
    assert "frame-difference baseline (nothing learned)" in result.stdout
    assert "dataset: visual hold, jitter 0.5 frame" in result.stdout


def test_av_sync_bad_key_exits_2(tmp_path, capsys):
    code = train.main(["--config", CONFIG, "--model-dir", str(tmp_path / "bad"),
                       "--set", "av_sync.max_ofset=3"])
    assert code == 2 and "av_sync.max_ofset" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
