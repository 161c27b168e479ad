"""The driver's fixed cost per epoch: `training.trainer` (history, best checkpoint,
TensorBoard + HParams, wall clock, backup for resume) against a bare `model.fit` of the same
task model on the same data.

    python -m benchmarks.driver_overhead [--config training/configs/avmnist/image_only.yaml]
        [--epochs 6] [--steps 0] [--out runs/benchmarks/driver_overhead] [--set KEY=VALUE ...]

Both runs build the model with the task (`training.tasks`), read the same datasets and train
the same epochs (after one warm-up epoch that traces the functions). Per-epoch wall time of
each comes from a callback's epoch timestamps; the driver's overhead is the difference of the
medians, split by callback: every driver callback's `on_epoch_end` is timed separately (each
is wrapped in a proxy that records the time spent in it). `--steps 0` trains whole epochs.

Prints a Markdown table and writes `OUT/driver_overhead.json`.
"""

import argparse
import json
import pathlib
import statistics
import sys
import time

import keras
from keras.src.utils.python_utils import pythonify_logs

from mmkeras.configs import load_config
from training import runtime
from training import trainer
from training.tasks import get_task

REPO = pathlib.Path(__file__).resolve().parents[1]


class EpochClock(keras.callbacks.Callback):
    """Wall time between successive `on_epoch_begin` calls (the whole epoch, callbacks included)."""

    def __init__(self):
        super().__init__()
        self.starts = []

    def on_epoch_begin(self, epoch, logs=None):
        self.starts.append(time.perf_counter())

    def on_train_end(self, logs=None):
        self.starts.append(time.perf_counter())

    def epoch_seconds(self):
        return [b - a for a, b in zip(self.starts, self.starts[1:])]


def timed_callbacks(spent):
    """Patches `keras.callbacks.CallbackList` so that every callback's `on_epoch_end` time is
    added to `spent[class name]` (the same body as Keras 3.15's, with a clock around each
    callback; `pythonify_logs` is Keras' own, private)."""
    original = keras.callbacks.CallbackList.on_epoch_end

    def on_epoch_end(self, epoch, logs=None):
        if self._async_train:
            self._flush_futures()
        logs = pythonify_logs(logs)
        for callback in self.callbacks:
            start = time.perf_counter()
            callback.on_epoch_end(epoch, logs)
            name = type(callback).__name__
            spent.setdefault(name, []).append(time.perf_counter() - start)

    keras.callbacks.CallbackList.on_epoch_end = on_epoch_end
    return original


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="training/configs/avmnist/image_only.yaml")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--steps", type=int, default=0, help="steps per epoch (0: whole epochs)")
    parser.add_argument("--out", default="runs/benchmarks/driver_overhead")
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args(argv)
    out = pathlib.Path(args.out)
    overrides = [*args.set, f"trainer.epochs={args.epochs + 1}", "trainer.verbose=0"]
    if args.steps:
        overrides.append(f"trainer.steps_per_epoch={args.steps}")
    config = load_config(REPO / args.config if not pathlib.Path(args.config).is_file()
                         else args.config, overrides)
    task = get_task(config.task)

    # The driver: the real trainer, with an epoch clock appended to the task's callbacks.
    spent = {}
    clock = EpochClock()
    original_callbacks = task.callbacks

    def with_clock(*args):
        first, last = original_callbacks(*args)
        return first, [*last, clock]

    task.callbacks = with_clock
    original = timed_callbacks(spent)
    strategy = runtime.setup(config)
    model_dir = trainer.prepare_model_dir(out / "driver", fresh=True)
    data = task.load_data(config, model_dir)
    task.save_data_state(data, model_dir)
    trainer.fit(task, config, model_dir, strategy, data)
    keras.callbacks.CallbackList.on_epoch_end = original
    driver = clock.epoch_seconds()[1:]  # the first epoch traces

    # Bare `model.fit`: the same model and datasets, only the epoch clock.
    bare_clock = EpochClock()
    train_ds, val_ds = task.fit_datasets(config, data)
    with strategy.scope():
        model = task.build_model(config, data, strategy)
    model.fit(train_ds, validation_data=val_ds, epochs=config.trainer.epochs,
              steps_per_epoch=config.trainer.steps_per_epoch, callbacks=[bare_clock],
              verbose=0, shuffle=False)
    bare = bare_clock.epoch_seconds()[1:]

    per_callback = {
        name: round(statistics.median(times[1:] or times) * 1000, 1)
        for name, times in spent.items() if name != "EpochClock"
    }
    result = {
        "config": args.config,
        "task": config.task,
        "epochs_timed": args.epochs,
        "steps_per_epoch": config.trainer.steps_per_epoch,
        "parameters": int(model.count_params()),
        "driver_epoch_s": round(statistics.median(driver), 3),
        "bare_fit_epoch_s": round(statistics.median(bare), 3),
        "overhead_s": round(statistics.median(driver) - statistics.median(bare), 3),
        "callback_epoch_end_ms": dict(sorted(per_callback.items(), key=lambda kv: -kv[1])),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "driver_overhead.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"| {config.name} ({result['parameters']:,} parameters) | s/epoch |")
    print("|---|---:|")
    print(f"| bare `model.fit` | {result['bare_fit_epoch_s']:.3f} |")
    print(f"| `training.trainer` (driver) | {result['driver_epoch_s']:.3f} |")
    print(f"| overhead | {result['overhead_s']:.3f} |")
    for name, ms in result["callback_epoch_end_ms"].items():
        print(f"| - {name}.on_epoch_end | {ms / 1000:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
