"""Which config class each task reads, and a loader that picks it from the `task:` field.

| `task:`              | config class                  | its own section | trained by                |
|----------------------|-------------------------------|-----------------|---------------------------|
| `classification`     | `ExperimentConfig`            | -               | fusion classifier         |
| `retrieval`          | `CrossModalExperimentConfig`  | `cross_modal`   | dual encoder              |
| `invariance`         | `CrossModalExperimentConfig`  | `cross_modal`   | adversarial invariance    |
| `shared_autoencoder` | `CrossModalExperimentConfig`  | `cross_modal`   | shared autoencoder        |
| `av_sync`            | `AVSyncExperimentConfig`      | `av_sync`       | audio-video sync model    |
| `captioning`         | `CaptioningExperimentConfig`  | `captioning`    | image captioner           |

The training side of each task (data, model, evaluation, serving) is `training/tasks/`;
this table only lets the library (model directories, export) read any task's config.
"""

import pathlib

import yaml

from mmkeras.configs.av_sync_config import AVSyncExperimentConfig
from mmkeras.configs.captioning_config import CaptioningExperimentConfig
from mmkeras.configs.cross_modal_config import CrossModalExperimentConfig
from mmkeras.configs.experiment_config import ConfigError
from mmkeras.configs.experiment_config import ExperimentConfig
from mmkeras.configs.experiment_config import config_from_dict as from_dict_with_base
from mmkeras.configs.experiment_config import load_config as load_with_base
from mmkeras.configs.experiment_config import parse_override

TASKS = {
    "classification": ExperimentConfig,
    "retrieval": CrossModalExperimentConfig,
    "invariance": CrossModalExperimentConfig,
    "shared_autoencoder": CrossModalExperimentConfig,
    "av_sync": AVSyncExperimentConfig,
    "captioning": CaptioningExperimentConfig,
}
# A section that only some tasks have -> the task a config without `task:` probably meant.
_SECTION_HINTS = {"cross_modal": "retrieval", "av_sync": "av_sync", "captioning": "captioning"}


def _raw_task(path, overrides):
    """The `task` a YAML file and its overrides set (None if neither does), and the file's
    top-level keys."""
    keys, task = set(), None
    if path is not None and pathlib.Path(path).is_file():
        with open(path) as f:
            loaded = yaml.safe_load(f) or {}
        if isinstance(loaded, dict):
            keys = set(loaded)
            task = loaded.get("task")
    for override in overrides:
        update = parse_override(override) if isinstance(override, str) else override
        keys |= set(update)
        task = update.get("task", task)
    return task, keys


def config_class(task):
    """The config dataclass of `task` (a `ConfigError` naming the known tasks otherwise)."""
    if task not in TASKS:
        raise ConfigError(f"'task' must be one of {list(TASKS)}, got {task!r}.")
    return TASKS[task]


def load_config(path=None, overrides=(), task=None):
    """Defaults <- YAML file <- `key=value` overrides, with the config class of the config's
    `task:` (else `task`, else `classification`), checked strictly."""
    overrides = list(overrides)
    found, keys = _raw_task(path, overrides)
    chosen = found or task or "classification"
    try:
        base = config_class(chosen)()
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path is not None else str(e)) from None
    if found is None:
        # The dataclass default of a subclass may name another task of the same class.
        overrides.insert(0, {"task": chosen})
        hinted = sorted(_SECTION_HINTS[k] for k in keys & set(_SECTION_HINTS))
        if chosen == "classification" and hinted:
            where = f"{path}: " if path is not None else ""
            raise ConfigError(
                f"{where}the config has no 'task:' and a section of the {hinted[0]} task; "
                f"add 'task: {hinted[0]}' (tasks: {list(TASKS)})."
            )
    return load_with_base(path, overrides, base=base)


def task_of(values):
    """The task of a resolved config dict: its `task`, else the task its own section implies
    (model directories written before `task:` existed), else `classification`."""
    if values.get("task"):
        return values["task"]
    hinted = sorted(_SECTION_HINTS[k] for k in set(values) & set(_SECTION_HINTS))
    return hinted[0] if hinted else "classification"


def config_from_dict(values):
    """The config of a resolved dict (a model directory's `config.yaml`), with the config class
    of its task."""
    values = dict(values)
    values["task"] = task_of(values)
    return from_dict_with_base(values, base=config_class(values["task"])())
