"""Hyperparameter search with KerasTuner over a space declared in the experiment YAML.

    python -m training.tune --config training/configs/avmnist/early_fusion_tuning.yaml \
        --model-dir runs/tune/early_fusion [--set tuning.max_trials=8 --set trainer.epochs=10]

The YAML's `tuning:` section (`mmkeras.configs.TuningConfig`) names the algorithm (`random`,
`bayesian`, `hyperband`), the trial budget (`max_trials`), the time limit (`time_limit_s`),
the objective (a history key; its best epoch counts) and the space, dotted config keys:

    tuning:
      algorithm: bayesian
      max_trials: 8
      time_limit_s: 3600
      objective: val_accuracy
      space:
        trainer.learning_rate: {type: float, min: 1.0e-4, max: 3.0e-3, log: true}
        trainer.weight_decay: {type: choice, values: [0.0, 1.0e-4, 1.0e-3]}
        model.fusion.type: {type: choice, values: [concat, gated]}
        model.fusion.args.units: {type: int, min: 32, max: 128, step: 32,
                                  when: {model.fusion.type: [gated]}}

Every trial is an ordinary training run with the trial's values as config overrides, in its own
model directory: `python -m training.train --config DIR/trials/<id>.yaml --model-dir
DIR/trials/<id>` (i.e. `training.trainer.train(config, trial_dir)`) in a child process, so each
trial starts with clean devices, seeds and memory, and has everything a training has
(TensorBoard with HParams, the best checkpoint, early stopping, resume after a kill):

    DIR/trials/<id>.yaml   the trial's resolved config
    DIR/trials/<id>/       the trial's model directory (config.yaml, model.keras, logs/, ...);
                           logs/tuning/ holds the trial's values and objective for
                           TensorBoard's HParams dashboard: `tensorboard --logdir DIR/trials`
    DIR/keras_tuner/       KerasTuner's oracle state (which trials exist, their values, scores)
    DIR/tuning.json        every trial: values, objective, status, epochs, seconds, test accuracy
    DIR/best.yaml          the experiment YAML with the best trial's values written in and no
                           `tuning:` section: `python -m training.train --config DIR/best.yaml`
    DIR/search_clock.json  seconds the search has run, summed over runs (for `time_limit_s`)

Re-running the same command continues the search: KerasTuner reloads its oracle, finished trials
are not run again, and a trial that was interrupted (killed, Ctrl-C, time limit) resumes from
its last completed epoch (its own `backup/`). The time limit counts every run of the search
together; when it is spent, a running trial's process is killed (its `backup/` holds its last
completed epoch) and the command writes `tuning.json` / `best.yaml` from the trials that finished (raise
`tuning.time_limit_s` and re-run to go on). `hyperband` trains each trial for its round's
epochs (`trainer.epochs` is replaced); a trial that continues an earlier one starts from a copy
of that trial's directory, i.e. from its last epoch.
"""

import copy
import dataclasses
import json
import math
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from tensorboard.plugins.hparams import api as hp_api
import tensorflow as tf
import yaml

from mmkeras import errors
from mmkeras import model_dir as model_dir_lib
from mmkeras.configs import ConfigError
from mmkeras.configs import load_config
from mmkeras.configs import parse_override
from mmkeras.configs import save_config
from mmkeras.configs import to_dict
from training import report as report_lib
from training.cli import experiment_parser
from training.training_run import monitor_mode

REPO = pathlib.Path(__file__).resolve().parents[1]
TUNER_DIR = "keras_tuner"
TRIALS_DIR = "trials"
CLOCK_FILE = "search_clock.json"
HYPERBAND_KEYS = ("tuner/epochs", "tuner/initial_epoch", "tuner/bracket", "tuner/round",
                  "tuner/trial_id")


def parse_args(argv=None):
    parser = experiment_parser(__doc__, fresh_help="delete the search directory first instead "
                                                   "of resuming")
    return parser.parse_args(argv)


def direction(objective):
    """`min` for losses and errors, else `max` (as `trainer.monitor`)."""
    return monitor_mode(objective)


def nested(dotted, value):
    """`"a.b.c", v` -> `{"a": {"b": {"c": v}}}`."""
    result = value
    for part in reversed(dotted.split(".")):
        result = {part: result}
    return result


def deep_update(base, update):
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def _plain(value):
    """numpy scalars -> Python numbers (for YAML and JSON); floats to 12 significant digits,
    so that a stepped range gives 0.3, not KerasTuner's 0.30000000000000004."""
    value = value.item() if hasattr(value, "item") else value
    return float(f"{value:.12g}") if isinstance(value, float) else value


def build_space(space, where="tuning.space"):
    """A `keras_tuner.HyperParameters` from the YAML space (ConfigError on a bad entry)."""
    import keras_tuner

    hp = keras_tuner.HyperParameters()
    if not isinstance(space, dict) or not space:
        raise ConfigError(f"'{where}' must map dotted config keys to ranges; it is empty.")
    # Parents (keys named by another key's `when:`) first, so their scopes exist.
    order = sorted(space, key=lambda k: 0 if not (space[k] or {}).get("when") else 1)
    for key in order:
        spec = space[key]
        at = f"{where}.{key}"
        if not isinstance(spec, dict):
            raise ConfigError(f"'{at}' must be a mapping with 'type', got {spec!r}.")
        unknown = set(spec) - {"type", "min", "max", "step", "log", "values", "when", "default"}
        if unknown:
            raise ConfigError(f"'{at}' has unknown fields {sorted(unknown)}.")
        kind = spec.get("type")
        when = spec.get("when")

        def declare(kind=kind, spec=spec, key=key, at=at):
            if kind == "choice":
                values = spec.get("values")
                if not isinstance(values, list) or not values:
                    raise ConfigError(f"'{at}.values' must be a non-empty list.")
                hp.Choice(key, values, default=spec.get("default", values[0]))
            elif kind in ("float", "int"):
                if "min" not in spec or "max" not in spec or not spec["min"] < spec["max"]:
                    raise ConfigError(f"'{at}' needs min < max, got {spec!r}.")
                sampling = "log" if spec.get("log") else "linear"
                if sampling == "log" and spec["min"] <= 0:
                    raise ConfigError(f"'{at}': log sampling needs min > 0.")
                if kind == "float":
                    hp.Float(key, float(spec["min"]), float(spec["max"]), step=spec.get("step"),
                             sampling=sampling, default=spec.get("default"))
                else:
                    hp.Int(key, int(spec["min"]), int(spec["max"]), step=spec.get("step"),
                           sampling=sampling, default=spec.get("default"))
            else:
                raise ConfigError(f"'{at}.type' must be float, int or choice, got {kind!r}.")

        if when:
            if not isinstance(when, dict) or len(when) != 1:
                raise ConfigError(f"'{at}.when' must be one mapping `key: [values]`.")
            (parent, parent_values), = when.items()
            if parent not in space or space[parent].get("type") != "choice":
                raise ConfigError(
                    f"'{at}.when' names {parent!r}, which must be a choice key of the space.")
            with hp.conditional_scope(parent, list(parent_values)):
                declare()
        else:
            declare()
    return hp


def trial_values(hp):
    """The active tuned values of a trial's `HyperParameters` (no `tuner/...` keys)."""
    return {
        p.name: _plain(hp.values[p.name]) for p in hp.space
        if hp.is_active(p) and p.name in hp.values and not p.name.startswith("tuner/")
    }


def best_of(history, objective):
    """The best epoch's value of `objective` in a trial's history (None if missing)."""
    values = [v for v in history.get(objective, []) if not math.isnan(v)]
    if not values:
        return None
    return max(values) if direction(objective) == "max" else min(values)


class SearchTimeLimit(Exception):
    """The search's `tuning.time_limit_s` is spent."""


class SearchClock:
    """Seconds the search has run, summed over every run of it, kept in `DIR/search_clock.json`
    (rewritten every few seconds, so a kill loses at most that much)."""

    def __init__(self, path, period_s=5.0):
        self.path = pathlib.Path(path)
        try:
            self.previous = float(json.loads(self.path.read_text())["seconds"])
        except (FileNotFoundError, ValueError, KeyError):
            self.previous = 0.0
        self.start = time.time()
        self.period_s = period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, daemon=True)

    def seconds(self):
        return self.previous + time.time() - self.start

    def write(self):
        model_dir_lib.write_json(self.path, {"seconds": round(self.seconds(), 2)})

    def _tick(self):
        while not self._stop.wait(self.period_s):
            self.write()

    def __enter__(self):
        self.write()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.write()


def _make_tuner_class():
    import keras_tuner

    class FatalTimeLimit(SearchTimeLimit, keras_tuner.errors.FatalError):
        """Raised when the time limit stops a trial; KerasTuner lets a FatalError through,
        leaving the trial running in its oracle state (resumed by the next run)."""

    class ConfigTuner(keras_tuner.Tuner):
        """A KerasTuner `Tuner` whose trials are `training.trainer.train` runs of the experiment
        with the trial's values as config overrides."""

        def __init__(self, oracle, search, **kwargs):
            self.search_spec = search
            super().__init__(oracle=oracle, hypermodel=None, directory=str(search.model_dir),
                             project_name=TUNER_DIR, overwrite=False, **kwargs)

        def on_search_begin(self):
            self.save()  # a reload finds the tuner even if the first trial is killed

        def pre_create_trial(self):
            search = self.search_spec
            if search.time_left() is not None and search.time_left() <= 0:
                raise FatalTimeLimit()

        def run_trial(self, trial, *args, **kwargs):
            search = self.search_spec
            hp = trial.hyperparameters
            epochs = hp.values.get("tuner/epochs")
            previous = hp.values.get("tuner/trial_id")
            config = search.trial_config(trial_values(hp), epochs)
            trial_dir = search.trial_dir(trial.trial_id)
            if previous is not None and not trial_dir.exists():
                # Hyperband: continue the earlier trial from its last epoch.
                shutil.copytree(search.trial_dir(previous), trial_dir,
                                ignore=shutil.ignore_patterns("report.json", "wall_time.json",
                                                              ".tmp-*"))
            fresh = search.differs(trial_dir, config)
            print(f"[tune] trial {trial.trial_id}: {json.dumps(trial_values(hp))}"
                  + (f", {epochs} epochs" if epochs else ""), flush=True)
            code = search.run_training(trial.trial_id, config, fresh)
            if code == "time limit":
                raise FatalTimeLimit()
            if code != 0:
                raise keras_tuner.errors.FailedTrialError(
                    f"trial {trial.trial_id}: the training exited with status {code} "
                    f"(its output is above; directory {trial_dir})")
            result = search.trial_result(trial.trial_id)
            search.write_hparams(trial.trial_id, trial_values(hp), result)
            if result["objective"] is None:
                raise keras_tuner.errors.FailedTrialError(
                    f"trial {trial.trial_id}: '{search.tuning.objective}' is not in its "
                    f"history.csv ({trial_dir})")
            return {search.tuning.objective: result["objective"]}

    return ConfigTuner


@dataclasses.dataclass
class Search:
    """One search: the experiment YAML and overrides, and where everything goes."""

    config_path: pathlib.Path
    overrides: list
    model_dir: pathlib.Path
    base: object = None  # the resolved ExperimentConfig
    clock: object = None

    def __post_init__(self):
        self.config_path = pathlib.Path(self.config_path)
        self.model_dir = pathlib.Path(self.model_dir)
        self.base = load_config(self.config_path, self.overrides)
        if not self.tuning.space:
            raise ConfigError(f"{self.config_path}: 'tuning.space' is empty: nothing to tune.")
        self.hyperparameters = build_space(self.tuning.space)
        for p in self.hyperparameters.space:  # every key must name a config field
            self.trial_config({}, None, check={p.name: _plain(p.default)})

    @property
    def tuning(self):
        return self.base.tuning

    def time_left(self):
        if self.tuning.time_limit_s is None or self.clock is None:
            return None
        return self.tuning.time_limit_s - self.clock.seconds()

    def trial_dir(self, trial_id):
        return self.model_dir / TRIALS_DIR / str(trial_id)

    def raw_yaml(self):
        """The experiment YAML with the command line's `--set` overrides applied."""
        raw = yaml.safe_load(self.config_path.read_text()) or {}
        for override in self.overrides:
            deep_update(raw, parse_override(override))
        return raw

    def trial_overrides(self, values, epochs):
        update = {}
        for key, value in values.items():
            deep_update(update, nested(key, value))
        if epochs is not None:
            deep_update(update, {"trainer": {"epochs": int(epochs)}})
        return update

    def trial_config(self, values, epochs, check=None):
        try:
            return load_config(self.config_path, list(self.overrides)
                               + [self.trial_overrides(check or values, epochs)])
        except ConfigError as e:
            if check is not None:
                raise ConfigError(f"'tuning.space': {e}") from None
            raise

    def run_training(self, trial_id, config, fresh):
        """Trains the trial's config into its directory with `python -m training.train` (which
        calls `training.trainer.train(config, trial_dir)`) in a child process, so that devices,
        seeds and memory start clean for every trial and the time limit can stop a trial at
        any point: the child is killed, and its `backup/` (written to survive a kill) resumes
        it next time. Returns the exit status, or `"time limit"`."""
        trial_dir = self.trial_dir(trial_id)
        config_path = self.model_dir / TRIALS_DIR / f"{trial_id}.yaml"
        config_path.parent.mkdir(parents=True, exist_ok=True)
        save_config(config, config_path)
        command = [sys.executable, "-m", "training.train", "--config", str(config_path),
                   "--model-dir", str(trial_dir)] + (["--fresh"] if fresh else [])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        child = subprocess.Popen(command, cwd=str(REPO), env=env)
        try:
            child.wait(timeout=None if self.time_left() is None else max(self.time_left(), 0.01))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
            return "time limit"
        except BaseException:  # Ctrl-C: the child got it too; do not leave it behind
            child.kill()
            child.wait()
            raise
        return child.returncode

    @staticmethod
    def differs(trial_dir, config):
        """Whether `trial_dir` holds a run of another config (then the trial starts fresh)."""
        saved = trial_dir / "config.yaml"
        if not saved.is_file():
            return False
        old = yaml.safe_load(saved.read_text()) or {}
        new = to_dict(config)
        for d in (old, new):
            d.get("trainer", {}).pop("epochs", None)
        return json.dumps(old, sort_keys=True, default=str) != json.dumps(
            new, sort_keys=True, default=str)

    def trial_result(self, trial_id):
        """What a trial's directory says: objective (best epoch), epochs, seconds, test."""
        trial_dir = self.trial_dir(trial_id)
        history = report_lib.read_history(trial_dir / "history.csv") \
            if (trial_dir / "history.csv").is_file() else {}
        report = {}
        if (trial_dir / "report.json").is_file():
            report = json.loads((trial_dir / "report.json").read_text())
        wall = {}
        if (trial_dir / "wall_time.json").is_file():
            wall = json.loads((trial_dir / "wall_time.json").read_text())
        test = report.get("test") or {}
        return {
            "objective": best_of(history, self.tuning.objective),
            "epochs": len(history.get("epoch", [])),
            "seconds": report.get("wall_seconds", round(
                wall.get("previous_runs_seconds", 0.0) + wall.get("this_run_seconds", 0.0), 2)),
            "test_accuracy": test.get("accuracy"),
            "finished": bool(report),
            "dir": str(trial_dir),
        }

    def write_hparams(self, trial_id, values, result):
        """The trial's values and results for TensorBoard's HParams dashboard
        (`DIR/trials/<id>/logs/tuning`)."""
        hparams = {k: (v if isinstance(v, (bool, int, float, str)) else str(v))
                   for k, v in values.items()}
        writer = tf.summary.create_file_writer(str(self.trial_dir(trial_id) / "logs" / "tuning"))
        with writer.as_default():
            hp_api.hparams(hparams, trial_id=f"trial-{trial_id}")
            for name in ("objective", "test_accuracy", "epochs", "seconds"):
                if result.get(name) is not None:
                    tf.summary.scalar(f"tuning/{name}", float(result[name]), step=0)
        writer.close()

    def write_hparams_config(self):
        metrics = [hp_api.Metric(f"tuning/{name}", group="tuning")
                   for name in ("objective", "test_accuracy", "epochs", "seconds")]
        path = self.model_dir / TRIALS_DIR
        path.mkdir(parents=True, exist_ok=True)
        writer = tf.summary.create_file_writer(str(path))
        with writer.as_default():
            hp_api.hparams_config(
                hparams=[hp_api.HParam(key) for key in self.tuning.space], metrics=metrics)
        writer.close()

    def summarize(self, oracle):
        """Writes `tuning.json` and (if a trial finished) `best.yaml`; returns the summary."""
        trials = []
        for trial_id in sorted(oracle.trials):
            trial = oracle.trials[trial_id]
            entry = {"trial_id": trial_id, "status": str(trial.status),
                     "values": trial_values(trial.hyperparameters)}
            epochs = trial.hyperparameters.values.get("tuner/epochs")
            if epochs is not None:
                entry["hyperband"] = {k.split("/")[1]: _plain(trial.hyperparameters.values[k])
                                      for k in HYPERBAND_KEYS if k in trial.hyperparameters.values}
            entry.update(self.trial_result(trial_id))
            trials.append(entry)
        done = [t for t in trials if t["status"] == "COMPLETED" and t["objective"] is not None]
        sign = 1 if direction(self.tuning.objective) == "max" else -1
        # Ties go to the trial trained longer (Hyperband's continuation of an equal trial).
        best = max(done, key=lambda t: (sign * t["objective"], t["epochs"])) if done else None
        summary = {
            "experiment": self.base.name,
            "config": str(self.config_path),
            "overrides": list(self.overrides),
            "algorithm": self.tuning.algorithm,
            "objective": self.tuning.objective,
            "direction": direction(self.tuning.objective),
            "max_trials": self.tuning.max_trials,
            "time_limit_s": self.tuning.time_limit_s,
            "search_seconds": round(self.clock.seconds(), 1) if self.clock else None,
            "space": self.tuning.space,
            "best_trial": best["trial_id"] if best else None,
            "best_values": best["values"] if best else None,
            "best_objective": best["objective"] if best else None,
            "trials": trials,
        }
        model_dir_lib.write_json(self.model_dir / "tuning.json", summary)
        if best is not None:
            self.write_best_yaml(best)
        return summary

    def write_best_yaml(self, best):
        raw = self.raw_yaml()
        raw.pop("tuning", None)
        epochs = (best.get("hyperband") or {}).get("epochs")
        deep_update(raw, self.trial_overrides(best["values"], epochs))
        header = (f"# Best trial {best['trial_id']} of `python -m training.tune --config "
                  f"{self.config_path}` ({self.tuning.algorithm}): {self.tuning.objective} = "
                  f"{best['objective']:.4f}, test accuracy {best['test_accuracy']}.\n"
                  f"# Train it: python -m training.train --config {self.model_dir / 'best.yaml'}"
                  f" --model-dir DIR\n")
        text = header + yaml.safe_dump(raw, sort_keys=False)
        load_config_text(text)  # what `train` will read must load
        model_dir_lib.write_bytes(self.model_dir / "best.yaml", text.encode())


def load_config_text(text):
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        f.write(text)
        f.flush()
        return load_config(f.name)


def make_oracle(search):
    import keras_tuner

    tuning = search.tuning
    objective = keras_tuner.Objective(tuning.objective, direction(tuning.objective))
    common = dict(objective=objective, hyperparameters=search.hyperparameters,
                  seed=tuning.seed, allow_new_entries=False, tune_new_entries=False)
    if tuning.algorithm == "random":
        return keras_tuner.oracles.RandomSearchOracle(max_trials=tuning.max_trials, **common)
    if tuning.algorithm == "bayesian":
        return keras_tuner.oracles.BayesianOptimizationOracle(
            max_trials=tuning.max_trials, **common)
    if tuning.algorithm == "hyperband":
        oracle = keras_tuner.oracles.HyperbandOracle(
            max_epochs=tuning.max_epochs or search.base.trainer.epochs,
            factor=tuning.hyperband_factor, **common)
        oracle.max_trials = tuning.max_trials  # Hyperband has no budget of its own
        return oracle
    raise ConfigError(f"Unknown tuning.algorithm '{tuning.algorithm}'.")


def tune(config_path, model_dir, overrides=(), fresh=False):
    """Runs (or continues) the search; returns the `tuning.json` summary."""
    model_dir = pathlib.Path(model_dir)
    search = Search(config_path, list(overrides), model_dir)
    if fresh and model_dir.exists():
        shutil.rmtree(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    search.write_hparams_config()
    tuner_class = _make_tuner_class()
    with SearchClock(model_dir / CLOCK_FILE) as clock:
        search.clock = clock
        tuner = tuner_class(make_oracle(search), search)
        stopped = None
        try:
            tuner.search(verbose=0)
        except SearchTimeLimit:
            stopped = (f"time limit of {search.tuning.time_limit_s:g} s reached "
                       f"({clock.seconds():.0f} s spent)")
        summary = search.summarize(tuner.oracle)
    summary["stopped"] = stopped
    finished = sum(t["status"] == "COMPLETED" for t in summary["trials"])
    print(f"[tune] {finished} of {search.tuning.max_trials} trials finished"
          + (f"; {stopped}: raise tuning.time_limit_s and re-run to continue" if stopped else "")
          + f" -> {model_dir / 'tuning.json'}")
    if summary["best_trial"] is not None:
        print(f"[tune] best trial {summary['best_trial']}: {search.tuning.objective} "
              f"{summary['best_objective']:.4f} {json.dumps(summary['best_values'])} -> "
              f"{model_dir / 'best.yaml'}")
    return summary


@errors.command_line
def main(argv=None):
    args = parse_args(argv)
    tune(args.config, args.model_dir, args.set, fresh=args.fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
