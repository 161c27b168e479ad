"""`import mmkeras` is enough for `keras.saving.load_model` (in a fresh process), and still
imports no TensorFlow by itself."""

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO


def _python(code):
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """A `.keras` file with an mmkeras layer (ConcatFusion) and an mmkeras loss (CLIPLoss)."""
    import keras

    from mmkeras.layers import ConcatFusion
    from mmkeras.losses import CLIPLoss

    inputs = {m: keras.Input((4,), name=m) for m in ("audio", "image")}
    fused = ConcatFusion(name="fusion")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(fused))
    model.compile(optimizer="adam", loss=CLIPLoss())
    path = tmp_path_factory.mktemp("registration") / "model.keras"
    model.save(path)
    return path


@pytest.mark.parametrize("imports", [
    "import mmkeras; import keras",
    "import keras; import mmkeras",
    "import mmkeras.configs; import keras",
])
def test_load_model_after_import_mmkeras(saved_model, imports):
    result = _python(
        f"{imports}\n"
        f"model = keras.saving.load_model({str(saved_model)!r})\n"
        "print(type(model.get_layer('fusion')).__name__, type(model.loss).__name__)"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["ConcatFusion", "CLIPLoss"]


def test_plain_keras_without_mmkeras_cannot_load_it(saved_model):
    """What the registration is for (and a check that the test above can fail)."""
    result = _python(f"import keras; keras.saving.load_model({str(saved_model)!r})")
    assert result.returncode != 0 and "ConcatFusion" in result.stderr


def test_import_mmkeras_imports_no_tensorflow():
    result = _python("import sys, mmkeras, mmkeras.configs, mmkeras.datasets.avmnist\n"
                     "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["False", "False"]


def test_every_registering_module_is_in_a_serializable_package():
    import pathlib

    from mmkeras.registration import SERIALIZABLE

    root = pathlib.Path(REPO) / "mmkeras"
    for path in root.rglob("*.py"):
        text = path.read_text()
        if "@mmkeras_export(" in text or "@keras.saving.register_keras_serializable" in text:
            module = ".".join(path.relative_to(REPO).with_suffix("").parts)
            assert module.startswith(tuple(p + "." for p in SERIALIZABLE)), module
