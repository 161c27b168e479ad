"""Finds, loads and hot-swaps SavedModel versions laid out the way TF Serving reads them.

Directory layout (the one `tensorflow_model_server --model_base_path` watches):

    <base>/<model_name>/<version>/saved_model.pb
                                 /variables/variables.{index,data-*}
                                 /assets.extra/...

A *version directory* is a directory whose name is all ASCII digits and which holds
`saved_model.pb` (or `saved_model.pbtxt`). Anything else is ignored: names starting with `.`
or `tmp`, non-numeric names, and numeric directories without the graph file (an export still
being written). Writers should export to a temporary directory and `os.rename` it into place,
the same advice TF Serving gives. A version that fails to load is reported with state `END`
and its error, and is retried only when its files change.

Which directory holds which model (`resolve_model_paths`, re-evaluated on every poll):
* `model_name` given: the model lives in `<base_path>/<model_name>` if that directory exists,
  otherwise in `<base_path>` itself. So both `--model-base-path BASE --model-name tiny` and
  TF Serving's own `--model-base-path BASE/tiny --model-name tiny` work.
* no `model_name`, and `<base_path>` has numeric subdirectories: one model, named after the
  basename of `<base_path>`.
* otherwise every subdirectory of `<base_path>` (except `.*`/`tmp*`) is a model named after
  the directory; models added later are picked up by the poller.

Version policy: the newest `num_versions` loadable versions of each model stay loaded
(`0`, the default, keeps every version found), so `/versions/N` requests are served from
memory and never wait on a load. A new version is loaded *before* any older one is dropped;
a version whose directory disappears is unloaded. TF Serving's default policy is "latest 1";
pass `num_versions=1` to get it.

Lookups raise `serving.errors.NotFoundError` (HTTP 404, gRPC NOT_FOUND) for unknown models,
versions and signatures.
"""

import dataclasses
import json
import logging
import os
import re
import threading

import tensorflow as tf
from google.protobuf import text_format
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow.core.protobuf import saved_model_pb2

from serving.errors import DEFAULT_SIGNATURE
from serving.errors import InvalidArgumentError  # noqa: F401 (re-exported)
from serving.errors import NotFoundError
from serving.errors import PayloadTooLargeError  # noqa: F401 (re-exported)
from serving.errors import ServingError  # noqa: F401 (re-exported)

logger = logging.getLogger(__name__)

_VERSION_NAME = re.compile(r"[0-9]+")
_GRAPH_FILES = ("saved_model.pb", "saved_model.pbtxt")


def _is_ignored(name):
    return name.startswith(".") or name.lower().startswith("tmp")


def discover_versions(model_path):
    """Returns `{version: directory}` for the complete version directories of one model."""
    try:
        names = os.listdir(model_path)
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return {}
    versions = {}
    for name in sorted(names):
        if _is_ignored(name) or not _VERSION_NAME.fullmatch(name):
            continue
        path = os.path.join(model_path, name)
        if any(os.path.isfile(os.path.join(path, f)) for f in _GRAPH_FILES):
            versions.setdefault(int(name), path)
    return versions


def resolve_model_paths(base_path, model_name=None):
    """Returns `{model_name: model_directory}` following the rules in the module docstring."""
    base_path = os.path.abspath(base_path)
    if model_name:
        nested = os.path.join(base_path, model_name)
        return {model_name: nested if os.path.isdir(nested) else base_path}
    try:
        entries = sorted(os.listdir(base_path))
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return {}
    subdirs = [
        e for e in entries if not _is_ignored(e) and os.path.isdir(os.path.join(base_path, e))
    ]
    if any(_VERSION_NAME.fullmatch(e) for e in subdirs):
        return {os.path.basename(base_path.rstrip(os.sep)): base_path}
    return {e: os.path.join(base_path, e) for e in subdirs}


def read_signature_defs(version_path):
    """Reads the `serve` MetaGraph's SignatureDefs as a TF Serving `SignatureDefMap` proto."""
    from tensorflow_serving.apis import get_model_metadata_pb2

    saved_model = saved_model_pb2.SavedModel()
    pb_path = os.path.join(version_path, "saved_model.pb")
    if os.path.isfile(pb_path):
        with open(pb_path, "rb") as f:
            saved_model.ParseFromString(f.read())
    else:
        with open(os.path.join(version_path, "saved_model.pbtxt")) as f:
            text_format.Parse(f.read(), saved_model)
    meta_graph = meta_graph_pb2.MetaGraphDef()
    for candidate in saved_model.meta_graphs:
        if "serve" in candidate.meta_info_def.tags:
            meta_graph = candidate
            break
    else:
        if saved_model.meta_graphs:
            meta_graph = saved_model.meta_graphs[0]
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for name, signature_def in meta_graph.signature_def.items():
        signature_map.signature_def[name].CopyFrom(signature_def)
    return signature_map


def _files_fingerprint(path):
    """(relative path, size, mtime) of every file under `path`: changes when files change."""
    entries = []
    for root, _, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            try:
                stat = os.stat(full)
            except OSError:
                continue
            entries.append((os.path.relpath(full, path), stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(entries))


RAW_SIGNATURE = "serve_raw"  # `serving_module.SERVE_RAW` (this module imports no model code)
RAW_INPUTS_FILE = os.path.join("assets.extra", "raw_inputs.json")  # `serving/raw_inputs.py`


def read_raw_inputs(version_path):
    """The export's description of `serve_raw`'s inputs (None for exports without one)."""
    path = os.path.join(version_path, RAW_INPUTS_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def _raw_fields(raw, specs):
    if raw is None:
        return {}
    groups = tuple((flag, tuple(names)) for flag, names in raw.get("groups", {}).items()
                   if flag in specs and all(n in specs for n in names))
    return {"nan_inputs": frozenset(n for n in raw.get("nan_inputs", []) if n in specs),
            "groups": groups}


@dataclasses.dataclass(frozen=True)
class Signature:
    """One callable signature of a loaded version.

    Attributes:
        name: signature key, e.g. `"serving_default"`.
        function: the concrete function; call it with keyword tensors.
        input_specs: `{input_name: tf.TensorSpec}` from `structured_input_signature`.
        output_specs: `{output_name: tf.TensorSpec}` from `structured_outputs`.
        nan_inputs: inputs where NaN (JSON `null`) means a missing value (a raw signature's
            numeric table columns; `assets.extra/raw_inputs.json`).
        groups: `((flag, (inputs...)), ...)`: a modality's flag and the inputs a request may
            leave out together with it (a raw signature's table columns).
    """

    name: str
    function: object
    input_specs: dict
    output_specs: dict
    nan_inputs: frozenset = frozenset()
    groups: tuple = ()


class ModelVersion:
    """One loaded SavedModel version: its signatures and its SignatureDef metadata."""

    def __init__(self, model_name, version, path):
        self.model_name = model_name
        self.version = version
        self.path = path
        self.loaded = tf.saved_model.load(path)  # Keep a reference: signatures need it alive.
        self.signature_def_map = read_signature_defs(path)
        raw = read_raw_inputs(path)
        self.signatures = {}
        for name, function in self.loaded.signatures.items():
            args, kwargs = function.structured_input_signature
            if args:
                logger.warning("signature %r of %s has positional inputs; skipped", name, path)
                continue
            outputs = function.structured_outputs
            if not isinstance(outputs, dict):
                outputs = {"output_0": outputs}
            self.signatures[name] = Signature(
                name=name,
                function=function,
                input_specs=dict(kwargs),
                output_specs={k: tf.TensorSpec(v.shape, v.dtype) for k, v in outputs.items()},
                **(_raw_fields(raw, kwargs) if name == RAW_SIGNATURE else {}),
            )

    def signature(self, name=None):
        """Returns the `Signature` called `name` (default `serving_default`) or raises NotFound."""
        name = name or DEFAULT_SIGNATURE
        if name not in self.signatures:
            raise NotFoundError(
                f"Serving signature name: '{name}' not found in signature def of model "
                f"'{self.model_name}' version {self.version}; available: {sorted(self.signatures)}"
            )
        return self.signatures[name]


@dataclasses.dataclass(frozen=True)
class VersionStatus:
    """Status of one version in TF Serving's terms (state: LOADING, AVAILABLE or END)."""

    version: int
    state: str
    error_code: str = "OK"
    error_message: str = ""


@dataclasses.dataclass
class _ModelState:
    path: str
    versions: dict = dataclasses.field(default_factory=dict)  # version -> ModelVersion
    failures: dict = dataclasses.field(default_factory=dict)  # version -> (fingerprint, msg)
    loading: set = dataclasses.field(default_factory=set)


class ModelRepository:
    """Keeps the versions found under `base_path` loaded and answers lookups by name/version.

    Args:
        base_path: a model directory (holding version dirs) or a directory of model dirs.
        model_name: serve only this model (see the module docstring for the path rule).
        num_versions: keep the newest N versions loaded; 0 keeps all of them.
        loader: callable `(model_name, version, path) -> ModelVersion`, for tests.

    Example:
    ```python
    repository = ModelRepository("/models/tiny", model_name="tiny")
    repository.refresh()            # synchronous first load
    repository.start_polling(2.0)   # then watch for new versions
    version = repository.get("tiny")          # latest
    signature = version.signature("serving_default")
    ```
    """

    def __init__(self, base_path, model_name=None, num_versions=0, loader=ModelVersion):
        self.base_path = os.path.abspath(base_path)
        self.model_name = model_name
        self.num_versions = num_versions
        self._loader = loader
        self._models = {}  # name -> _ModelState
        self._lock = threading.Lock()  # Guards _models and the dicts inside each state.
        self._refresh_lock = threading.Lock()  # One refresh (scan + loads) at a time.
        self._stop = threading.Event()
        self._poller = None

    # Lookups (called from request threads).

    def model_names(self):
        with self._lock:
            return sorted(self._models)

    def get(self, model_name, version=None):
        """Returns the loaded `ModelVersion` (latest when `version` is None) or raises NotFound."""
        with self._lock:
            state = self._models.get(model_name)
            versions = dict(state.versions) if state else {}
        if version is None:
            if not versions:
                raise NotFoundError(f"Servable not found for request: Latest({model_name})")
            return versions[max(versions)]
        if version not in versions:
            available = sorted(versions)
            raise NotFoundError(
                f"Servable not found for request: Specific({model_name}, {version}); "
                f"loaded versions: {available}"
            )
        return versions[version]

    def statuses(self, model_name, version=None):
        """Returns `VersionStatus` entries, newest first; raises NotFound for unknown names."""
        with self._lock:
            state = self._models.get(model_name)
            if state is None:
                raise NotFoundError(f"Could not find any versions of model {model_name}")
            result = {v: VersionStatus(v, "AVAILABLE") for v in state.versions}
            for v in state.loading:
                result.setdefault(v, VersionStatus(v, "LOADING"))
            for v, (_, message) in state.failures.items():
                result.setdefault(v, VersionStatus(v, "END", "UNKNOWN", message))
        if version is not None:
            if version not in result:
                raise NotFoundError(f"Could not find version {version} of model {model_name}")
            return [result[version]]
        if not result:
            raise NotFoundError(f"Could not find any versions of model {model_name}")
        return [result[v] for v in sorted(result, reverse=True)]

    # Discovery and loading (called at start-up and from the poller thread).

    def refresh(self):
        """Scans the disk once: loads new versions, unloads removed or surplus ones."""
        with self._refresh_lock:
            paths = resolve_model_paths(self.base_path, self.model_name)
            with self._lock:
                for name in list(self._models):
                    if name not in paths:
                        logger.info("model %s: directory gone, unloading all versions", name)
                        del self._models[name]
                for name, path in paths.items():
                    state = self._models.get(name)
                    if state is None or state.path != path:
                        self._models[name] = _ModelState(path=path)
            for name, path in paths.items():
                self._refresh_model(name, path)

    def _refresh_model(self, name, path):
        on_disk = discover_versions(path)
        with self._lock:
            state = self._models[name]
            loaded = set(state.versions)
            failures = dict(state.failures)
        fingerprints = {}
        candidates = []
        for version in sorted(on_disk, reverse=True):
            if version in failures:
                fingerprints[version] = _files_fingerprint(on_disk[version])
                if fingerprints[version] == failures[version][0]:
                    continue  # Unchanged since it failed: don't retry.
            candidates.append(version)
        wanted = []
        for version in candidates:  # Newest first; a failed load makes room for an older one.
            if 0 < self.num_versions <= len(wanted):
                break
            if version in loaded or self._load(
                name, version, on_disk[version], fingerprints.get(version)
            ):
                wanted.append(version)
        with self._lock:
            state = self._models[name]
            keep = set(wanted) & set(state.versions)
            for version in set(state.versions) - keep:
                logger.info("model %s: unloading version %d", name, version)
                del state.versions[version]
            for version in set(state.failures) - set(on_disk):
                del state.failures[version]

    def _load(self, name, version, path, fingerprint=None):
        """Loads one version; returns False (and records the error) when loading fails."""
        with self._lock:
            self._models[name].loading.add(version)
        logger.info("model %s: loading version %d from %s", name, version, path)
        try:
            model_version = self._loader(name, version, path)
        except Exception as e:  # A broken export must not stop the server.
            message = f"{type(e).__name__}: {e}"
            logger.error("model %s: version %d failed to load: %s", name, version, message)
            fingerprint = fingerprint if fingerprint is not None else _files_fingerprint(path)
            with self._lock:
                state = self._models.get(name)
                if state is not None:
                    state.loading.discard(version)
                    state.failures[version] = (fingerprint, message)
            return False
        with self._lock:
            state = self._models.get(name)
            if state is not None:
                state.loading.discard(version)
                state.failures.pop(version, None)
                state.versions[version] = model_version
        logger.info("model %s: version %d AVAILABLE", name, version)
        return True

    def start_polling(self, seconds):
        """Starts a daemon thread calling `refresh()` every `seconds` (no-op if seconds <= 0)."""
        if seconds <= 0 or self._poller is not None:
            return

        def poll():
            while not self._stop.wait(seconds):
                try:
                    self.refresh()
                except Exception:  # Keep polling whatever the file system does.
                    logger.exception("model repository refresh failed")

        self._poller = threading.Thread(target=poll, name="model-poller", daemon=True)
        self._poller.start()

    def stop(self):
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=5)
            self._poller = None
