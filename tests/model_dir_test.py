"""`mmkeras.model_dir`: the atomic writers, stale-temporary cleanup, and reading a directory."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from mmkeras import model_dir


def _dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_writers_replace_whole_files_and_leave_no_temporary(tmp_path):
    path = tmp_path / "sub" / "report.json"
    model_dir.write_json(path, {"a": np.float32(0.5), "n": np.int64(3), "v": np.arange(2)})
    assert json.loads(path.read_text()) == {"a": 0.5, "n": 3, "v": [0, 1]}
    model_dir.write_json(path, {"b": 1}, indent=None)
    assert path.read_text() == '{"b": 1}'
    model_dir.write_bytes(tmp_path / "x.bin", b"\x00\x01")
    model_dir.write_text(tmp_path / "x.txt", "é")
    assert (tmp_path / "x.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "x.txt").read_bytes() == "é".encode("utf-8")
    assert not [p for p in tmp_path.rglob(".tmp-*")]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "model.keras"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk full"):
        with model_dir.atomic_file(path) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("disk full")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["model.keras"]


def test_stale_temporaries_of_dead_processes_only_are_removed(tmp_path):
    dead = _dead_pid()
    stale = [tmp_path / f".tmp-{dead}-export", tmp_path / f".tmp-4-{dead}",
             tmp_path / f".tmp-{dead}-model.tflite", tmp_path / f".tmp-main-head-{dead}"]
    for path in stale[:2] + stale[3:]:
        path.mkdir()
    stale[2].write_bytes(b"half")
    live = tmp_path / f".tmp-{os.getppid()}-export"  # the pytest runner's parent: running
    live.mkdir()
    kept = tmp_path / "1"
    kept.mkdir()
    removed = model_dir.remove_stale_temporaries([tmp_path, tmp_path / "missing"])
    assert sorted(removed) == sorted(stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, "1"])


def test_load_model_dir_reads_config_and_model(tmp_path):
    import keras

    from mmkeras.configs import load_config
    from mmkeras.configs import save_config
    from tests.conftest import REPO

    config = load_config(REPO / "training/configs/avmnist/early_fusion.yaml")
    save_config(config, tmp_path / model_dir.CONFIG_FILE)
    x = keras.Input((3,), name="image")
    keras.Model(x, keras.layers.Dense(2)(x)).save(tmp_path / model_dir.MODEL_FILE)
    loaded_config, model = model_dir.load_model_dir(tmp_path)
    assert loaded_config.model.name == config.model.name
    assert model.output_shape == (None, 2)
    with pytest.raises(FileNotFoundError, match="multitask.keras"):
        model_dir.load_multitask_model(tmp_path)
