"""`import mmkeras` registers every serializable mmkeras class with Keras, without importing
TensorFlow itself.

`keras.saving.load_model("model.keras")` finds custom classes (`mmkeras>ConcatFusion`, ...) in
Keras's registry, filled when the modules defining them are imported. `mmkeras/__init__.py`
imports no TensorFlow, so that commands which need none (dataset preparation, config checks)
start in a fraction of a second. It therefore registers the classes at the moment Keras is
there:

- if `keras` is already imported, `import mmkeras` imports the `SERIALIZABLE` subpackages
  at once;
- otherwise it adds a finder to `sys.meta_path` that watches the import of `keras` and of the
  mmkeras subpackages: when the outermost of those imports has finished and `keras` is loaded
  (the user's `import keras`, or `import mmkeras.layers`, which imports it), the
  `SERIALIZABLE` subpackages are imported and the finder removes itself. Waiting for the
  outermost import keeps a half-initialised mmkeras package from being imported again.

So `import mmkeras` then `import keras` (or the reverse) is enough for `load_model`.
"""

import importlib
import importlib.abc
import sys
import warnings

# The subpackages whose modules register classes (`mmkeras.api_export.mmkeras_export`).
SERIALIZABLE = ("mmkeras.layers", "mmkeras.losses", "mmkeras.metrics", "mmkeras.models",
                "mmkeras.optimizers")

_state = {"done": False, "depth": 0}


def register_all():
    """Imports the `SERIALIZABLE` subpackages (once); Keras then knows every mmkeras class."""
    if _state["done"]:
        return
    _state["done"] = True
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _WatchKerasImport)]
    for name in SERIALIZABLE:
        try:
            importlib.import_module(name)
        except ImportError as e:  # never break the user's `import keras`
            warnings.warn(f"mmkeras could not register the classes of {name}: {e}",
                          stacklevel=2)


class _CountingLoader(importlib.abc.Loader):
    """Runs the real loader; registers when the outermost watched import has finished."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        _state["depth"] += 1
        try:
            self._loader.exec_module(module)
        finally:
            _state["depth"] -= 1
        if _state["depth"] == 0 and "keras" in sys.modules:
            register_all()

    def __getattr__(self, name):  # get_code, get_source, get_resource_reader, ...
        return getattr(self._loader, name)


class _WatchKerasImport(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if _state["done"] or not (fullname == "keras" or fullname.startswith("mmkeras.")):
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _CountingLoader(spec.loader)
        return spec


def install():
    """Called by `mmkeras/__init__.py`."""
    if "keras" in sys.modules:
        register_all()
    elif not _state["done"] and not any(isinstance(f, _WatchKerasImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _WatchKerasImport())
