"""The training command line as a user runs it: one line for a bad input, no TensorFlow log
noise, `--debug` and `--verbose` to get the details back."""

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO

CONFIG = "training/configs/avmnist/early_fusion.yaml"
# A line of TensorFlow's C++ log: "2026-01-01 12:00:00.000000: I tensorflow/..."
TF_LOG = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] ", re.M)
TINY = ["trainer.verbose=2", "data.batch_size=16", "runtime.cpu_replicas=1",
        "model.image_encoder.filters=[8]", "model.audio_encoder.filters=[8]",
        "model.head_units=[16]"]


def _train(model_dir, sets, *flags):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "training.train", "--config", CONFIG, "--model-dir",
         str(model_dir), *[x for s in sets for x in ("--set", s)], *flags],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )


@pytest.mark.parametrize("override, key", [
    ("data.batch_size=-4", "data.batch_size"),
    ("data.batch_size=0", "data.batch_size"),
    ("trainer.epochs=0", "trainer.epochs"),
    ("trainer.learning_rate=-0.001", "trainer.learning_rate"),
    ("data.bad_input=ignore", "data.bad_input"),
])
def test_bad_value_is_one_line_before_the_model_dir_exists(tmp_path, override, key):
    result = _train(tmp_path / "run", [override])
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and f"'{key}'" in result.stderr
    assert not (tmp_path / "run").exists()


def _break_png(root):
    """Drops the IEND chunk of the first training image (Pillow still reads it)."""
    import csv

    with open(root / "manifest.csv", newline="") as f:
        line, row = next((i, r) for i, r in enumerate(csv.DictReader(f), start=2)
                         if r["split"] == "train")
    path = root / row["image"]
    path.write_bytes(path.read_bytes()[:-12])
    return line, path


def test_corrupt_file_is_one_line_naming_file_and_row(avmnist_copy, tmp_path):
    line, path = _break_png(avmnist_copy)
    sets = TINY + [f"data.data_dir={avmnist_copy}"]
    result = _train(tmp_path / "run", sets)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr  # no traceback, no TensorFlow start-up log
    assert str(path) in lines[0] and f"line {line}" in lines[0] and "image" in lines[0]
    assert "TensorFlow cannot decode image" in lines[0]

    debug = _train(tmp_path / "run", sets, "--debug", "--verbose")
    assert debug.returncode == 2
    assert "Traceback" in debug.stderr and TF_LOG.search(debug.stderr)


@pytest.mark.large
def test_training_output_is_quiet(avmnist_copy, tmp_path):
    _break_png(avmnist_copy)
    result = _train(tmp_path / "run", TINY + [f"data.data_dir={avmnist_copy}",
                                             "trainer.epochs=1", "data.bad_input=skip"])
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert not TF_LOG.search(output), output
    assert "Local rendezvous" not in output and "UserWarning" not in output, output
    assert "skipped 1 rows" in result.stdout
