"""`python -m training.tune` end to end on the small real AV-MNIST slice: two tiny trials write
`tuning.json`, `best.yaml` (which `training.train` accepts) and HParams logs; a search killed
in the middle of a trial, re-run with the same command, resumes that trial from its last epoch
and does not redo the finished ones; the time limit stops a running trial and is reported.

Subprocesses, as a user runs them (and so that one can be killed)."""

import json

import pytest
import yaml

from tests.training import cluster_utils as cu
from training import train as train_cli

pytestmark = pytest.mark.large

SPACE = {
    "trainer.learning_rate": {"type": "float", "min": 1.0e-4, "max": 1.0e-2, "log": True},
    "model.fusion.type": {"type": "choice", "values": ["concat", "gated"]},
    "model.fusion.args.units": {"type": "int", "min": 8, "max": 16, "step": 8,
                                "when": {"model.fusion.type": ["gated"]}},
}
TINY = cu.TINY + ["trainer.epochs=2", "trainer.steps_per_epoch=3", "runtime.cpu_replicas=1"]


def _experiment(tmp_path, **tuning):
    raw = yaml.safe_load(open(cu.REPO / cu.EARLY))
    raw["tuning"] = {"algorithm": "random", "max_trials": 2, "objective": "val_accuracy",
                     "space": SPACE, **tuning}
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _tune(config, model_dir, overrides, log):
    process = cu.spawn(["-m", "training.tune", "--config", str(config), "--model-dir",
                        str(model_dir), *cu.sets(overrides)], log)
    return process


def _runs(trial_dir):
    return json.loads((trial_dir / "wall_time.json").read_text())["runs"]


def test_tune_writes_results_resumes_and_best_trains(avmnist_small, tmp_path):
    config = _experiment(tmp_path)
    search = tmp_path / "search"
    overrides = TINY + [f"data.data_dir={avmnist_small}"]
    first = _tune(config, search, overrides, tmp_path / "first.log")
    cu.wait_all([first], timeout=600)

    summary = json.loads((search / "tuning.json").read_text())
    assert [t["status"] for t in summary["trials"]] == ["COMPLETED", "COMPLETED"]
    for trial in summary["trials"]:
        assert set(trial["values"]) >= {"trainer.learning_rate", "model.fusion.type"}
        assert ("model.fusion.args.units" in trial["values"]) == (
            trial["values"]["model.fusion.type"] == "gated")
        assert trial["epochs"] == 2 and trial["seconds"] > 0
        assert 0.0 <= trial["objective"] <= 1.0
        trial_dir = search / "trials" / trial["trial_id"]
        saved = yaml.safe_load((trial_dir / "config.yaml").read_text())
        assert saved["trainer"]["learning_rate"] == pytest.approx(
            trial["values"]["trainer.learning_rate"])
        assert saved["model"]["fusion"]["type"] == trial["values"]["model.fusion.type"]
        assert list((trial_dir / "logs" / "tuning").glob("events.out.tfevents.*"))
        assert (trial_dir / "model.keras").is_file()
    best = max(summary["trials"], key=lambda t: t["objective"])
    assert summary["best_objective"] == best["objective"]
    assert summary["best_values"] == best["values"]

    # best.yaml: the experiment with the best values and no tuning section; train accepts it.
    best_yaml = yaml.safe_load((search / "best.yaml").read_text())
    assert "tuning" not in best_yaml
    assert best_yaml["trainer"]["learning_rate"] == pytest.approx(
        best["values"]["trainer.learning_rate"])
    assert best_yaml["model"]["fusion"]["type"] == best["values"]["model.fusion.type"]
    # The training command's own entry point, in this process (a TensorFlow start saved).
    assert train_cli.main(["--config", str(search / "best.yaml"), "--model-dir",
                           str(tmp_path / "best_run"), "--set", "trainer.epochs=1"]) == 0
    assert cu.report(tmp_path / "best_run")["config"]["model"]["fusion"]["type"] == \
        best["values"]["model.fusion.type"]

    # A third trial, killed after its first epoch; the same command resumes it.
    more = overrides + ["tuning.max_trials=3", "trainer.epochs=3"]
    killed = _tune(config, search, more, tmp_path / "killed.log")
    trial_dir = search / "trials" / "2"

    def one_epoch():
        from training.callbacks import AtomicBackupAndRestore

        return AtomicBackupAndRestore.saved_epoch(trial_dir / "backup") >= 1

    cu.wait_for(one_epoch, [killed], timeout=600, what="trial 2's first epoch")
    cu.kill(killed)
    assert not (trial_dir / "report.json").exists()
    resumed = _tune(config, search, more, tmp_path / "resumed.log")
    cu.wait_all([resumed], timeout=600)
    log = resumed.log_path.read_text()
    assert "[tune] trial 2:" in log and f"resumed from {trial_dir / 'backup'}" in log
    assert "[tune] trial 0:" not in log and "[tune] trial 1:" not in log
    report = cu.report(trial_dir)
    assert report["runs"] == 2 and report["epochs"] == 3 and report["epochs_this_run"] < 3
    summary = json.loads((search / "tuning.json").read_text())
    assert [t["status"] for t in summary["trials"]] == ["COMPLETED"] * 3
    assert [_runs(search / "trials" / t) for t in ("0", "1")] == [1, 1]

    # The time limit (summed over every run of the search) stops a fourth trial mid-way.
    spent = json.loads((search / "search_clock.json").read_text())["seconds"]
    limited = overrides + ["tuning.max_trials=4", "trainer.epochs=50",
                           "trainer.early_stopping_patience=null",  # only the clock stops it
                           f"tuning.time_limit_s={spent + 20}"]
    stopped = _tune(config, search, limited, tmp_path / "limited.log")
    cu.wait_all([stopped], timeout=600)
    log = stopped.log_path.read_text()
    assert "time limit" in log and "3 of 4 trials finished" in log
    summary = json.loads((search / "tuning.json").read_text())
    assert summary["trials"][3]["status"] == "RUNNING"
    assert summary["trials"][3]["epochs"] < 50
    assert summary["search_seconds"] == pytest.approx(spent + 20, abs=15)


def test_trial_values_are_plain_numbers_without_float_noise():
    import keras_tuner

    from training import tune

    hp = keras_tuner.HyperParameters()
    hp.Float("model.head_dropout", 0.0, 0.5, step=0.1)
    hp.Choice("model.fusion.type", ["concat", "gated"])
    hp.values["model.head_dropout"] = 0.1 * 3  # 0.30000000000000004
    values = tune.trial_values(hp)
    assert values == {"model.head_dropout": 0.3, "model.fusion.type": "concat"}
    assert yaml.safe_dump(values).count("0.3\n") == 1
