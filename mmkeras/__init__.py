"""mmkeras: multimodal learning for Keras 3 / TensorFlow.

Subpackages load on first use (`mmkeras.layers`, `mmkeras.models`, ...), so that commands that
need no TensorFlow (dataset preparation, config checks) start fast. Every serializable class is
registered with Keras as soon as Keras is imported (`mmkeras.registration`): after
`import mmkeras`, `keras.saving.load_model("model.keras")` works.
"""

import importlib

__version__ = "0.1.0"

_SUBPACKAGES = ("configs", "data", "datasets", "encoders", "layers", "losses", "metrics", "models",
                "optimizers")


def __getattr__(name):
    if name in _SUBPACKAGES:
        return importlib.import_module(f"mmkeras.{name}")
    raise AttributeError(f"module 'mmkeras' has no attribute '{name}'")


from mmkeras import registration as _registration  # noqa: E402  (after the names above)

_registration.install()
