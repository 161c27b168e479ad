"""Encoders initialised from another experiment's trained model (transfer learning).

`model.init_from` (`mmkeras.configs.EncoderSourceConfig`) names model directories written by
`training.train`. When `build_classifier` builds a model, each named modality's encoder (the
sub-model `<modality>_encoder`, as every classifier of `build_classifier` names it) takes the
weights of the same encoder in the source directory's model file, and is frozen
(`trainable: false`) or left trainable (fine-tuning). Problems are `ConfigError`s naming the
entry: a missing directory or model file, a checksum that does not match `sha256`, a modality
the source model has no encoder for, or an encoder of another shape (compare the source's
`config.yaml`).

Example (YAML):

```yaml
model:
  modalities: [image, audio]
  init_from:
    - model_dir: runs/transfer/audio_only   # trained by `python -m training.train`
      modalities: [audio]
      trainable: false
```
"""

import dataclasses
import hashlib
import json
import pathlib

import keras

from mmkeras.configs.experiment_config import ConfigError

ENCODER_SUFFIX = "_encoder"


def file_sha256(path):
    """The SHA-256 hex digest of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def source_file(source, where):
    """The checked model file of one `init_from` entry (a `ConfigError` if it is missing)."""
    model_dir = pathlib.Path(source.model_dir).expanduser()
    if not model_dir.is_dir():
        raise ConfigError(
            f"'{where}.model_dir': {model_dir.resolve()} is not a directory (train the source "
            "experiment first, e.g. `python -m training.train --config ... --model-dir DIR`)."
        )
    path = model_dir / source.model_file
    if not path.is_file():
        present = sorted(p.name for p in model_dir.glob("*.keras"))
        raise ConfigError(
            f"'{where}': no model file {path.resolve()} (model files in that directory: "
            f"{present or 'none'}; is the source run finished?)."
        )
    return path


def describe_sources(model_config):
    """Checks every `model.init_from` file; returns one provenance dict per entry.

    Each dict has the resolved `model_dir` and `model_file`, the file's `sha256`, the
    requested `modalities` and `trainable`, and (when the source directory has them) the
    source `experiment` name and its test `accuracy` from its `report.json`. A `sha256` given
    in the config must match the file.
    """
    described = []
    for i, source in enumerate(model_config.init_from):
        where = f"model.init_from[{i}]"
        path = source_file(source, where)
        digest = file_sha256(path)
        if source.sha256 is not None and source.sha256 != digest:
            raise ConfigError(
                f"'{where}.sha256': {path.resolve()} has SHA-256 {digest}, the config expects "
                f"{source.sha256} (the source model changed since this config was written)."
            )
        info = {
            "model_dir": str(pathlib.Path(source.model_dir).expanduser().resolve()),
            "model_file": str(path.resolve()),
            "sha256": digest,
            "modalities": list(source.modalities),
            "trainable": source.trainable,
        }
        report = path.parent / "report.json"
        if report.is_file():
            try:
                payload = json.loads(report.read_text())
                info["experiment"] = payload.get("experiment")
                info["test_accuracy"] = (payload.get("test") or {}).get("accuracy")
            except (ValueError, OSError):
                pass
        described.append(info)
    return described


def pin_sources(model_config):
    """`model_config` with every `init_from[i].sha256` set to its file's checksum."""
    described = describe_sources(model_config)
    pinned = [
        dataclasses.replace(source, sha256=info["sha256"])
        for source, info in zip(model_config.init_from, described)
    ]
    return dataclasses.replace(model_config, init_from=pinned)


def _encoders_of(model):
    """`{modality: encoder sub-model}` of a loaded model (searched through nested models)."""
    found, stack = {}, list(model.layers)
    while stack:
        layer = stack.pop(0)
        if isinstance(layer, keras.Model):
            if layer.name.endswith(ENCODER_SUFFIX):
                found.setdefault(layer.name[: -len(ENCODER_SUFFIX)], layer)
            stack.extend(layer.layers)
    return found


def _check_compatible(target, source, modality, where, path):
    if tuple(target.input_shape[1:]) != tuple(source.input_shape[1:]):
        raise ConfigError(
            f"'{where}': the {modality} encoder of {path} takes inputs of shape "
            f"{tuple(source.input_shape[1:])}, this model's takes "
            f"{tuple(target.input_shape[1:])} (compare the data.* settings of the two configs)."
        )
    ours, theirs = target.weights, source.weights
    if len(ours) != len(theirs):
        raise ConfigError(
            f"'{where}': the {modality} encoder of {path} has {len(theirs)} weights, this "
            f"model's has {len(ours)} (compare model.{modality}_encoder of the two configs)."
        )
    for a, b in zip(ours, theirs):
        if tuple(a.shape) != tuple(b.shape):
            raise ConfigError(
                f"'{where}': incompatible {modality} encoders: weight '{b.path}' of {path} has "
                f"shape {tuple(b.shape)}, this model's '{a.path}' has {tuple(a.shape)} (compare "
                f"model.{modality}_encoder of the two configs)."
            )


def load_encoders(model_config, encoders):
    """Loads the `model_config.init_from` weights into `encoders` and freezes them if asked.

    Args:
        model_config: an `mmkeras.configs.ModelConfig`.
        encoders: `{modality: encoder model}` of the model being built.

    Returns:
        `{modality: provenance dict}` (see `describe_sources`) of the loaded encoders.
    """
    import mmkeras.layers  # noqa: F401  (registers the custom layers for loading)

    described = describe_sources(model_config)
    loaded = {}
    for i, (source, info) in enumerate(zip(model_config.init_from, described)):
        where = f"model.init_from[{i}]"
        path = info["model_file"]
        source_model = keras.saving.load_model(path, compile=False)
        available = _encoders_of(source_model)
        modalities = list(source.modalities) or sorted(set(available) & set(encoders))
        if not modalities:
            raise ConfigError(
                f"'{where}': {path} has encoders for {sorted(available)}, none of this "
                f"model's modalities {sorted(encoders)}."
            )
        for m in modalities:
            if m in loaded:
                raise ConfigError(f"'{where}': the {m} encoder is loaded by an earlier entry.")
            if m not in available:
                raise ConfigError(
                    f"'{where}.modalities': {path} has no {m} encoder (it has encoders for "
                    f"{sorted(available) or 'no modality'})."
                )
            _check_compatible(encoders[m], available[m], m, where, path)
            encoders[m].set_weights(available[m].get_weights())
            if not source.trainable:
                # Setting the flag only when freezing keeps backbones that are frozen by
                # their own config (e.g. `trainable_backbone: false`) frozen when fine-tuning.
                encoders[m].trainable = False
            loaded[m] = dict(info, modalities=modalities)
        del source_model
    return loaded
