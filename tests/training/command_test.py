"""The `mmkeras` command: every subcommand's --help shows an example and its options; bad
input ends in one line and exit status 2."""

import importlib
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO
from training import command

HELP_SUBCOMMANDS = ("train", "evaluate", "predict", "export", "serve", "explain")


@pytest.mark.parametrize("name", HELP_SUBCOMMANDS)
def test_help_shows_an_example_and_the_options(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        command.main([name, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"example:\n  {command.SUBCOMMANDS[name].example}")
    assert "usage:" in out and "--help" in out
    assert f"mmkeras {name}" in out.split("usage:")[0]


def test_train_with_config_is_the_experiment_trainer(capsys):
    with pytest.raises(SystemExit):
        command.main(["train", "--config", "x.yaml", "--help"])
    assert "--worker-index" in capsys.readouterr().out


def test_prepare_and_tune(capsys):
    with pytest.raises(SystemExit) as exit_info:
        command.main(["prepare", "openmoji", "--help"])
    assert exit_info.value.code == 0 and "usage:" in capsys.readouterr().out
    assert command.main(["prepare", "imagenet"]) == 2
    assert "unknown dataset 'imagenet'" in capsys.readouterr().err
    try:
        importlib.import_module("training.tune")
    except ModuleNotFoundError:
        assert command.main(["tune", "--help"]) == 2
        assert "'mmkeras tune' is not available" in capsys.readouterr().err
    else:
        with pytest.raises(SystemExit):
            command.main(["tune", "--help"])


def test_usage_and_unknown_subcommand(capsys):
    assert command.main([]) == 2
    assert command.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in command.SUBCOMMANDS:
        assert f"\n  {name}" in out
    assert command.main(["trian"]) == 2
    assert capsys.readouterr().err == (
        "error: unknown subcommand 'trian'; use one of " + ", ".join(command.SUBCOMMANDS) + "\n")


def test_bad_table_is_one_line_and_exit_2(tmp_path):
    """Through `python -m mmkeras` as a user runs it: a misspelled split value."""
    table = tmp_path / "t.csv"
    table.write_text("text,split,label\n" + "".join(
        f"item number {i},{'trian' if i == 3 else 'train'},{'ab'[i % 2]}\n" for i in range(30)))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the command's own default, as a user has it
    result = subprocess.run(
        [sys.executable, "-m", "mmkeras", "train", "--data", str(table), "--target", "label",
         "--model-dir", str(tmp_path / "run")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: {table}, line 5, column 'split': split 'trian' is none of train / validation / "
        "test (or val, dev, test, ...)"]
    assert "[schema]" in result.stdout  # the inferred schema was printed first
    result = subprocess.run(
        [sys.executable, "-m", "mmkeras", "predict", "--model-dir", str(tmp_path / "run"),
         "--data", str(table), "--out", str(tmp_path / "p.csv")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'run'} has no schema.json: predict reads a model directory written "
        "by 'mmkeras train --data' (after training finished)"]
