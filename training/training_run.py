"""What every training path shares: the run it hands to `trainer.finish`, its announcement line,
and the direction of the monitored metric. (Apart from trainer.py so that the custom loop can
import it without importing the trainer, which imports the custom loop.)"""

import dataclasses
import typing

from training import runtime


@dataclasses.dataclass
class TrainingRun:
    """What a training path hands to `finish`."""

    model: typing.Any
    epochs_run: int
    seconds: float
    is_chief: bool = True
    num_workers: int = 1
    jit_compile: typing.Any = False
    # Earlier runs of a resumed training (`training.callbacks.WallClock`).
    previous_seconds: float = 0.0
    runs: int = 1


def monitor_mode(monitor):
    """`"min"` for losses and errors (`mae`, `rmse`, `mse` too), else `"max"` (accuracy,
    AUC, F1, R², ...)."""
    return "min" if any(word in monitor for word in ("loss", "error", "mae", "mse")) else "max"


def announce(config, data, strategy, size=None):
    """Prints the run's data sizes, replicas and batch (`size(data, split)`: the task's count)."""
    replicas = strategy.num_replicas_in_sync
    size = size or (lambda d, split: d.size(split))
    print(f"[train] {config.name} ({config.task}): {size(data, 'train')} train / "
          f"{size(data, 'validation')} validation / {size(data, 'test')} test examples, "
          f"{replicas} replica(s) "
          f"({runtime.strategy_name(strategy)}), global batch {config.data.batch_size} "
          f"({config.data.batch_size // replicas} per replica)")
