"""The captioning task through the one driver: a tiny end-to-end run on real OpenMoji (best
checkpoint, resume from the backup, the vocabulary reloaded by `--evaluate-only`), and the
command line."""

import json
import os
import subprocess
import sys

import pytest
import yaml

from mmkeras.configs import load_config
from mmkeras.data import caption_vocabulary as cv
from tests.conftest import REPO
from training import train
from training import trainer
from training.tasks import captioning

pytest.importorskip("cairosvg")

CONFIG = "training/configs/openmoji/captioning.yaml"
TINY = [
    "trainer.verbose=0", "data.batch_size=16", "data.image_shape=[16,16,3]",
    "model.image_encoder.type=cnn", "model.image_encoder.filters=[8]",
    "model.image_encoder.embedding_dim=16", "captioning.hidden_dim=16",
    "captioning.num_layers=1", "captioning.num_heads=2", "captioning.intermediate_dim=32",
    "captioning.min_count=1", "captioning.max_words=6", "captioning.beam_width=2",
    "captioning.samples=5", "captioning.constant_candidates=20",
]


@pytest.fixture(scope="session")
def openmoji_tiny(data_root):
    from mmkeras.datasets import openmoji

    return openmoji.prepare(size=16, per_class=10, data_root=data_root, verbose=False)


def test_sample_rows():
    assert captioning.sample_rows(10, 3) == [0, 4, 9] and captioning.sample_rows(2, 5) == [0, 1]


def test_tiny_run_resume_and_evaluate_only(openmoji_tiny, tmp_path, capsys):
    model_dir = tmp_path / "captioner"
    sets = [*TINY, f"data.data_dir={openmoji_tiny}"]
    trainer.train(load_config(CONFIG, [*sets, "trainer.epochs=1"]), model_dir)
    report = trainer.train(load_config(CONFIG, [*sets, "trainer.epochs=2"]), model_dir)
    assert "resumed from" in capsys.readouterr().out
    for name in ("config.yaml", "model.keras", "caption_vocab.txt", "history.csv",
                 "report.json", "samples.md", "checkpoints/best.keras", "checkpoints/best.json",
                 "backup/training_metadata.json", "learning_curves.png"):
        assert (model_dir / name).is_file(), name
    assert report["task"] == "captioning" and report["epochs"] == 2 and report["runs"] == 2
    assert report["best_validation"]["monitor"] == "val_loss"
    assert report["best_epoch"] == report["best_validation"]["epoch"]
    vocab = cv.load_vocabulary(model_dir)
    assert vocab[:4] == list(cv.SPECIAL_TOKENS) and "flag" in vocab and ":" in vocab
    assert report["vocabulary_size"] == len(vocab)
    assert report["test_set"]["images"] == 22
    assert report["data_problems"]["test"]["skipped"] == 0
    rows = [*report["bleu"].values(), *report["baselines"].values()]
    assert set(report["bleu"]) == {"greedy", "beam2"} and len(rows) == 6
    for row in rows:
        for n in range(1, 5):
            assert 0.0 <= row[f"bleu{n}"] <= 1.0
    assert len(report["samples"]) == 5
    assert (model_dir / "samples.md").read_text().count("\n| ") == 6  # header + 5 rows
    assert yaml.safe_load((model_dir / "config.yaml").read_text())["captioning"]["beam_width"] == 2

    # Evaluate-only reloads the saved vocabulary (a changed min_count cannot rebuild another)
    # and the model of record: the same captions, the same BLEU.
    again = trainer.train(
        load_config(CONFIG, [*sets, "trainer.epochs=2", "captioning.min_count=5"]),
        model_dir, evaluate_only=True)
    assert again["vocabulary_size"] == len(vocab)
    assert again["bleu"] == report["bleu"] and again["samples"] == report["samples"]


def test_unknown_config_key_exits_2(tmp_path, capsys):
    code = train.main(["--config", CONFIG, "--model-dir", str(tmp_path / "x"),
                       "--set", "captioning.beam=3"])
    assert code == 2 and "captioning.beam" in capsys.readouterr().err


@pytest.mark.large
def test_two_cpu_replicas_through_the_old_alias(openmoji_tiny, tmp_path):
    """MirroredStrategy over 2 logical CPUs (a subprocess: devices are set before TF starts),
    by the README's command line (`training.train_captioning`, an alias of `training.train`)."""
    model_dir = tmp_path / "two_replicas"
    # Keras builds the model on the first batch averaged over the replicas, so that batch must
    # split evenly: 10 (11 validation images would give 6 + 5 with a batch of 16).
    sets = [*TINY, "trainer.epochs=1", "data.batch_size=10", "runtime.cpu_replicas=2",
            f"data.data_dir={openmoji_tiny}"]
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, "-m", "training.train_captioning", "--config", CONFIG,
         "--model-dir", str(model_dir), *[x for s in sets for x in ("--set", s)]],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads((model_dir / "report.json").read_text())
    assert report["replicas"] == 2 and report["strategy"] == "MirroredStrategy"
    assert "greedy" in result.stdout and "nearest train image (pixels)" in result.stdout
