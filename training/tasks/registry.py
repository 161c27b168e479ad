"""Task name -> Task class (`@register`); `get_task(name)` returns a fresh instance."""

from mmkeras.configs import ConfigError

_TASKS = {}


def register(cls):
    """Class decorator: makes `cls` trainable under its config's `task: <cls.name>`."""
    _TASKS[cls.name] = cls
    return cls


def get_task(name):
    if name not in _TASKS:
        raise ConfigError(f"'task' must be one of {sorted(_TASKS)}, got {name!r}.")
    return _TASKS[name]()


def task_names():
    return sorted(_TASKS)
