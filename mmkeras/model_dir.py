"""The model directory: its file names, how to read it, and the one atomic writer.

A model directory is what training writes and what export, evaluation and explanation read
(possibly in another process or on another machine):

| file / folder              | written by           | holds                                        |
|----------------------------|----------------------|----------------------------------------------|
| `config.yaml`              | trainer              | the resolved experiment config               |
| `model.keras`              | trainer              | the model of record (main head)              |
| `multitask.keras`          | trainer (`model.tasks`) | the model with every task head            |
| `report.json`              | trainer              | test metrics, timings, dataset checksum      |
| `history.csv`              | trainer              | one row per epoch                            |
| `checkpoints/best.keras`   | trainer              | the best epoch so far (`best.json`: which)   |
| `backup/`                  | trainer              | the resume-after-kill state                  |
| `logs/`                    | trainer              | TensorBoard events                           |
| `export/`                  | `serving.export`     | SavedModel / TFLite / ONNX and `parity.json` |
| `eval/`, `explain/`        | `training.evaluate` / `training.explain` | their reports         |

Every file is written through `atomic_file` (a temporary name beside the target, flushed to
disk, then `os.replace`), so a kill never leaves a torn file under a real name. Temporary
names start with `.tmp-<pid>-`; `remove_stale_temporaries` deletes those whose process is gone.
"""

import contextlib
import json
import os
import pathlib
import re
import shutil

import numpy as np
import yaml

from mmkeras.configs import config_from_dict

# Keras (and so TensorFlow) is imported by the two model loaders only: the writers below are
# used by dataset preparation, which must start without TensorFlow (see `mmkeras/__init__.py`).

CONFIG_FILE = "config.yaml"
MODEL_FILE = "model.keras"
MULTITASK_FILE = "multitask.keras"
REPORT_FILE = "report.json"
HISTORY_FILE = "history.csv"
CHECKPOINTS_DIR = "checkpoints"
BEST_CHECKPOINT = "checkpoints/best.keras"
BACKUP_DIR = "backup"
LOGS_DIR = "logs"
EXPORT_DIR = "export"
TMP_PREFIX = ".tmp-"
OWN_TABLE_FILE = "table.json"  # an own-data model directory (`mmkeras.data.own_data.LAYOUT_FILE`)
OWN_DATA_DIR = "data"  # and its converted table


# Reading.


def load_config(model_dir):
    """The resolved experiment config of a model directory (`config.yaml`).

    A directory trained by `mmkeras train --data` (it holds `table.json`) keeps its converted
    data in its own `data/`, and reads it from there wherever the directory now is: it can be
    moved or copied to another machine, and `data.data_dir` (the absolute path it was trained
    from) is replaced by that folder."""
    model_dir = pathlib.Path(model_dir)
    with open(model_dir / CONFIG_FILE) as f:
        config = config_from_dict(yaml.safe_load(f))
    own_data = model_dir / OWN_DATA_DIR
    if (model_dir / OWN_TABLE_FILE).is_file() and own_data.is_dir():
        config.data.data_dir = str(own_data.resolve())
    return config


def load_model_dir(model_dir):
    """`(config, model)`: the resolved config and the Keras model of record (`model.keras`)."""
    import keras

    import mmkeras.layers  # noqa: F401  (registers the custom layers before deserializing)

    from mmkeras.encoders.keras_hub_presets import register_keras_hub

    model_dir = pathlib.Path(model_dir)
    config = load_config(model_dir)
    register_keras_hub(config.model)  # KerasHub backbones inside the model
    return config, keras.saving.load_model(model_dir / MODEL_FILE)


def load_multitask_model(model_dir):
    """The Keras model with every task head (`multitask.keras`, written for `model.tasks`);
    `FileNotFoundError` naming the file when the directory has none."""
    import keras

    import mmkeras.layers  # noqa: F401  (registers the custom layers before deserializing)

    path = pathlib.Path(model_dir) / MULTITASK_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"--all-heads exports {path}, which does not exist: only a model trained with "
            "model.tasks (auxiliary heads) has one. Export without --all-heads for the main head."
        )
    return keras.saving.load_model(path)


# Writing.


def temporary_path(path, tag=None):
    """`<dir>/.tmp-<pid>-<name>` (or `.tmp-<pid>-<tag>`): where `path` is written before it is
    renamed into place."""
    path = pathlib.Path(path)
    return path.with_name(f"{TMP_PREFIX}{os.getpid()}-{tag or path.name}")


@contextlib.contextmanager
def atomic_file(path):
    """Yields a temporary path beside `path`; on success renames it to `path`, on error removes it.

    The caller writes the temporary path any way it likes (`model.save`, `fig.savefig`, `open`):

    ```python
    with atomic_file(model_dir / "model.keras") as tmp:
        model.save(tmp)
    ```
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def write_bytes(path, data):
    """Writes bytes (or a str, as UTF-8) atomically, flushed to disk; returns the path."""
    data = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    with atomic_file(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return pathlib.Path(path)


def write_text(path, text):
    """Writes text (UTF-8) atomically; returns the path."""
    return write_bytes(path, text)


def jsonable(value):
    """`json.dumps(default=...)`: numpy scalars and arrays as numbers and lists, else `str`."""
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def write_json(path, payload, indent=2):
    """Writes JSON atomically (numpy values converted by `jsonable`); returns the path."""
    return write_bytes(path, json.dumps(payload, indent=indent, default=jsonable))


# Temporaries of killed processes.

_TMP_PID = re.compile(r"\.tmp-(\d+)-(?!\d+$)")  # .tmp-<pid>-<name>
_LEGACY_TMP_PID = re.compile(r"(\d+)$")  # .tmp-<version>-<pid>, .tmp-main-head-<pid>


def _writer_pid(name):
    match = _TMP_PID.match(name) or _LEGACY_TMP_PID.search(name)
    return int(match.group(1)) if match else None


def _alive(pid):
    if pid is None or pid == os.getpid():
        return False  # Ours from an earlier process with the same pid, or unnamed: stale.
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: the process exists.
        return True
    return True


def remove_stale_temporaries(folders):
    """Removes `.tmp-*` files and folders in `folders` whose writing process is not running.

    The writer's pid is read from the name (`.tmp-<pid>-<name>`; names of the first export
    format, `.tmp-<version>-<pid>`, by their last number). Returns the removed paths.
    """
    removed = []
    for folder in folders:
        folder = pathlib.Path(folder)
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob(TMP_PREFIX + "*")):
            if _alive(_writer_pid(path.name)):
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed
