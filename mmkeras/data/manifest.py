"""Manifests: one row per example, one column per modality, a label and a split.

A manifest is a CSV file (`manifest.csv`, a header row) or a JSON Lines file
(`manifest.jsonl`, one JSON object a line). Columns:

- `id`, `split` (`train` / `validation` / `test`), `label`: an integer class id; for a
  `multilabel` target a JSON list of `num_classes` 0/1 numbers (`[0, 1, 1]`), for a
  `regression` target a finite number (`parse_label`);
- one column per file modality, a path relative to the manifest's folder: `image` (PNG/JPEG),
  `audio` (WAV, FLAC, OGG Vorbis, MP3), `video` (GIF, MP4/WebM/AVI/MOV, or a folder of frame
  images), `timeseries` (`.npy`, `(steps, channels)`);
- `text`: the text itself;
- the `tabular` modality: the numeric and categorical columns named in the data config.

`read_manifest` checks every row before training starts, so that a bad row stops the run
with its manifest file, line and the reason (policy `error`), is dropped and counted (`skip`),
or is kept with its modality marked missing (`mask`). Nothing is lost silently: the counts and
the problems are returned in a `ManifestReport` and end up in `report.json`. The checks:
missing or unreadable file, truncated or corrupt image / audio / video, wrong shape or channel
count, wrong sample rate (unless audio is resampled), a file TensorFlow's decoder (the one
tf.data uses) rejects, empty text, NaN or non-numeric numbers, label out of range, a split
that is none of `train` / `validation` / `test` (a label or a split cannot be masked: under
`mask` the row is skipped).
"""

import collections
import csv
import dataclasses
import json
import math
import pathlib
import wave

import numpy as np
from PIL import Image

from mmkeras.data.jsonl import read_jsonl
from mmkeras.errors import UserError

POLICIES = ("error", "skip", "mask")
SPLITS = ("train", "validation", "test")
# Keys of a per-modality `bad_input` dict besides the modalities (a label or a split cannot be
# masked: under `mask` such a row is skipped).
POLICY_KEYS = ("default", "label", "split")
FILE_MODALITIES = ("image", "audio", "video", "timeseries")
MANIFEST_NAMES = ("manifest.csv", "manifest.jsonl")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".mp3")
VIDEO_FILE_SUFFIXES = (".mp4", ".m4v", ".webm", ".avi", ".mov", ".mkv")
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg")


class DataError(UserError, ValueError):
    """A manifest row or one of its files is unusable."""


@dataclasses.dataclass
class ManifestReport:
    """What `read_manifest` kept, dropped and masked."""

    manifest: str
    split: str
    rows_read: int = 0
    rows_kept: int = 0
    skipped: int = 0
    # Rows of the whole manifest whose split is none of `SPLITS` (the same in every split's
    # report: they belong to no split); their problems are listed in `problems`.
    unknown_split: int = 0
    masked: dict = dataclasses.field(default_factory=dict)
    # Rows whose cell of a modality was empty (`empty_is_missing`): present = 0, not a problem.
    missing: dict = dataclasses.field(default_factory=dict)
    problems: list = dataclasses.field(default_factory=list)

    def as_dict(self):
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------
# Row checks: each returns None for a usable value, else the reason. A file is read by Pillow /
# `wave` / soundfile (shape, channels, rate) and then by the TensorFlow decoder tf.data will use
# (`mmkeras.data.decoders`), so a file that passes cannot fail to decode during training.


def _decoders():
    # Imported on first use: reading this module needs no TensorFlow.
    from mmkeras.data import decoders

    return decoders


def check_image(path, expected_shape=(28, 28, 1), resize=None, max_pixels=None):
    """Returns None if `path` is a decodable image of `expected_shape`, else the reason.

    With `resize` (`pad`, `crop`, `stretch`: the pipeline resizes and converts channels) any
    size and channel count passes. `max_pixels` refuses a larger image from its header, before
    its pixels are decoded.
    """
    try:
        with Image.open(path) as img:
            width, height = img.size
            if max_pixels is not None and width * height > max_pixels:
                return (f"image is {width}x{height} = {width * height} pixels, over the limit "
                        f"data.max_image_pixels={max_pixels}")
            img.load()
            array = np.asarray(img)
    except FileNotFoundError:
        return "file not found"
    except Exception as e:  # PIL raises many types for corrupt data.
        return f"cannot decode image ({type(e).__name__}: {e})"
    if resize is not None:
        return _decoders().image_error(path, tuple(expected_shape), resize=True)
    channels = 1 if array.ndim == 2 else array.shape[-1]
    height, width = array.shape[:2]
    if (height, width, channels) != tuple(expected_shape):
        return f"image has shape {(height, width, channels)}, expected {tuple(expected_shape)}"
    return _decoders().image_error(path, tuple(expected_shape))


def check_wav(path, sample_rate=None, channels=1):
    """Returns None if `path` is a readable 16-bit PCM WAV (rate and channels as given)."""
    try:
        with wave.open(str(path), "rb") as w:
            frames = w.getnframes()
            data = w.readframes(frames)
            rate, nch, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
    except FileNotFoundError:
        return "file not found"
    except Exception as e:
        return f"cannot decode WAV ({type(e).__name__}: {e})"
    if width != 2:
        return f"WAV sample width is {8 * width} bits, expected 16"
    if channels is not None and nch != channels:
        return f"WAV has {nch} channels, expected {channels}"
    if sample_rate is not None and rate != sample_rate:
        return f"WAV sample rate is {rate} Hz, expected {sample_rate}"
    if frames == 0 or len(data) < frames * width * nch:
        return f"WAV is truncated ({len(data)} bytes of audio for {frames} frames)"
    return _decoders().audio_error(path)


def check_audio(path, sample_rate=None, channels=1):
    """Checks a WAV, FLAC, OGG Vorbis or MP3 file: decodable to the end, channels, rate.

    WAV goes through `check_wav`; the other formats are decoded in full with `soundfile`
    (libsndfile), which catches truncated and corrupt streams.
    """
    path = pathlib.Path(path)
    suffix = path.suffix.lower()
    if suffix == ".wav":
        return check_wav(path, sample_rate=sample_rate, channels=channels)
    if suffix not in AUDIO_SUFFIXES:
        return f"unsupported audio format '{suffix}' (use {', '.join(AUDIO_SUFFIXES)})"
    if not path.is_file():
        return "file not found"
    try:
        import soundfile
    except ImportError:  # pragma: no cover - soundfile is in requirements.txt.
        return None  # Cannot check more without a decoder; tf.data will fail loudly.
    try:
        info = soundfile.info(str(path))
        data, _ = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:
        return f"cannot decode audio ({type(e).__name__}: {e})"
    if channels is not None and info.channels != channels:
        return f"audio has {info.channels} channels, expected {channels}"
    if sample_rate is not None and info.samplerate != sample_rate:
        return f"audio sample rate is {info.samplerate} Hz, expected {sample_rate}"
    if data.shape[0] == 0:
        return "audio has no samples"
    if info.frames > 0 and data.shape[0] < info.frames:
        return f"audio is truncated ({data.shape[0]} of {info.frames} frames decoded)"
    return _decoders().audio_error(path)


def check_video(path):
    """Checks a GIF, an MP4-like file (needs PyAV) or a folder of frame images (.png/.jpg)."""
    path = pathlib.Path(path)
    if path.is_dir():
        frames = sorted(p for p in path.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
        if not frames:
            return f"frame folder has no {'/'.join(FRAME_SUFFIXES)} images"
        for frame in frames:
            try:
                with Image.open(frame) as img:
                    img.load()
            except Exception as e:
                return f"cannot decode frame {frame.name} ({type(e).__name__}: {e})"
            reason = _decoders().frame_error(frame)
            if reason is not None:
                return f"frame {frame.name}: {reason}"
        return None
    if not path.exists():
        return "file not found"
    suffix = path.suffix.lower()
    if suffix == ".gif":
        try:
            with Image.open(path) as img:
                count = 0
                while True:
                    img.load()
                    count += 1
                    try:
                        img.seek(img.tell() + 1)
                    except EOFError:
                        break
        except Exception as e:
            return f"cannot decode GIF ({type(e).__name__}: {e})"
        return _decoders().gif_error(path)
    if suffix in VIDEO_FILE_SUFFIXES:
        try:
            import av
        except ImportError:
            return "no video decoder for this format: pip install av"
        try:
            with av.open(str(path)) as container:
                if next(container.decode(video=0), None) is None:
                    return "video has no frames"
        except Exception as e:
            return f"cannot decode video ({type(e).__name__}: {e})"
        return None
    return f"unsupported video format '{suffix}' (use .gif, a frame folder, or {VIDEO_FILE_SUFFIXES})"


def check_timeseries(path, channels=None):
    """Checks a `.npy` series: 2-D `(steps, channels)`, finite numbers."""
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        return "file not found"
    except Exception as e:
        return f"cannot read series ({type(e).__name__}: {e})"
    if array.ndim != 2 or array.shape[0] == 0:
        return f"series has shape {array.shape}, expected (steps, channels)"
    if channels is not None and array.shape[1] != channels:
        return f"series has {array.shape[1]} channels, expected {channels}"
    if not np.all(np.isfinite(array)):
        return "series has NaN or infinite values"
    return None


CHECKERS = {
    "image": lambda path: check_image(path),
    "audio": lambda path: check_wav(path, sample_rate=8000),
    "video": check_video,
    "timeseries": lambda path: check_timeseries(path),
}


def checkers_for(data_config):
    """The file checks a `DataConfig` implies (image shape, audio rate, series channels)."""
    shape = tuple(data_config.image_shape)
    rate = None if data_config.audio_resample else data_config.audio_sample_rate
    channels = data_config.timeseries_channels
    resize, max_pixels = data_config.image_resize, data_config.max_image_pixels
    audio_channels = data_config.audio_channels
    return {
        "image": lambda path: check_image(path, shape, resize=resize, max_pixels=max_pixels),
        "audio": lambda path: check_audio(path, sample_rate=rate, channels=audio_channels),
        "video": check_video,
        "timeseries": lambda path: check_timeseries(path, channels),
    }


def check_text(value):
    if value is None or not str(value).strip():
        return "text is empty"
    return None


def parse_number(value):
    """`(float, None)` or `(None, reason)` for one numeric cell."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, "is empty"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None, f"{value!r} is not a number"
    if math.isnan(number) or math.isinf(number):
        return None, f"is {value!r}"
    return number, None


# ---------------------------------------------------------------------------------------------
# Reading.


def _policy_for(bad_input, modality, kind=None):
    """The policy of `modality`: its own key, else its type's (`image` for `front`), else
    `default`."""
    if isinstance(bad_input, dict):
        policy = bad_input.get(modality, bad_input.get(kind, bad_input.get("default", "error")))
    else:
        policy = bad_input
    if policy not in POLICIES:
        raise ValueError(f"Unknown bad_input policy '{policy}' for '{modality}'; use {POLICIES}.")
    return policy


def _rows(manifest_path):
    """Yields `(line, row_dict)` and returns the column names first (via `columns`)."""
    if manifest_path.suffix.lower() == ".jsonl":
        with open(manifest_path, encoding="utf-8") as f:
            return read_jsonl(manifest_path, f.read(), DataError)
    with open(manifest_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = []
        for row in reader:
            rows.append((reader.line_num, row))
        return list(reader.fieldnames or []), rows


def parse_label(raw, target, num_classes):
    """The label of a manifest cell for a `target` kind, or `(None, reason)`.

    Returns `(label, None)`: an int in `[0, num_classes)` (`multiclass`, `binary`), a list of
    `num_classes` 0/1 floats (`multilabel`; a JSON list in a CSV cell) or a finite float
    (`regression`).
    """
    if target == "regression":
        try:
            value = float(raw)
        except (TypeError, ValueError):
            return None, f"label {raw!r} is not a number"
        if not math.isfinite(value):
            return None, f"label {raw!r} is not finite"
        return value, None
    if target == "multilabel":
        value = raw
        if isinstance(raw, str):
            try:
                value = json.loads(raw)
            except ValueError:
                value = None
        if (not isinstance(value, list) or len(value) != num_classes
                or any(v not in (0, 1) for v in value)):
            return None, f"label {raw!r} is not a list of {num_classes} 0/1 values"
        return [float(v) for v in value], None
    try:
        label = int(raw)
        if isinstance(raw, float) and raw != label:
            label = None
    except (TypeError, ValueError):
        label = None
    if label is None or not 0 <= label < num_classes:
        return None, f"label {raw!r} is not an integer in [0, {num_classes})"
    return label, None


LABEL_DTYPES = {"multilabel": np.float32, "regression": np.float32}


def find_manifest(dataset_dir):
    """`dataset_dir/manifest.csv` or `manifest.jsonl` (the first that exists)."""
    for name in MANIFEST_NAMES:
        path = pathlib.Path(dataset_dir) / name
        if path.is_file():
            return path
    raise DataError(f"{dataset_dir} has no manifest ({' or '.join(MANIFEST_NAMES)}).")


def read_manifest(
    manifest_path, split, modalities, num_classes, bad_input="error", max_examples=None,
    checkers=None, numeric_columns=(), categorical_columns=(), empty_is_missing=False,
    target="multiclass", modality_types=None,
):
    """Reads the rows of one split and checks them.

    Args:
        manifest_path: a CSV or JSONL manifest (see the module docstring).
        split: `"train"`, `"validation"` or `"test"`.
        modalities: the modalities to use (`image`, `audio`, `video`, `timeseries`: path
            columns; `text`: a text column; `tabular`: the columns below).
        num_classes: labels must lie in `[0, num_classes)`.
        bad_input: a policy (`error`, `skip`, `mask`) or a dict modality -> policy (`label`,
            `split` and `default` keys allowed; a type, `image`, also covers the features of
            that type, `front` and `back`, that have no key of their own). Rows whose split
            is unknown are counted in `report.unknown_split` by every split's read.
        max_examples: keep only the first N rows of the split.
        checkers: dict modality -> function(path) -> None or a reason (default: `CHECKERS`).
        numeric_columns: the numeric columns of the `tabular` modality.
        categorical_columns: the categorical columns of the `tabular` modality (kept as
            strings; an empty cell is a category of its own).
        empty_is_missing: an empty file or text cell is a missing modality (presence 0,
            counted in `report.missing`), not bad input.
        target: the label's kind (`model.target`, see `parse_label`).
        modality_types: `{feature: type}` of features not named after their type
            (`data.modality_types`: two image columns `front` and `back` are both checked as
            images).

    Returns:
        `(columns, report)`: `columns` maps `id`, `label`, each modality and
        `<modality>_present` (float32 0/1) to numpy arrays. File modalities are absolute paths
        ("" when masked), `text` is the text, `tabular` is float32 `(n, len(numeric_columns))`
        and `tabular_categories` str `(n, len(categorical_columns))`.

    Raises:
        DataError: naming the manifest, the row (its line number) and the problem.
    """
    manifest_path = pathlib.Path(manifest_path)
    root = manifest_path.parent
    # Each file is checked once per call (AV-MNIST rows share audio clips).
    checkers = {m: _once(check) for m, check in dict(CHECKERS, **(checkers or {})).items()}
    report = ManifestReport(manifest=str(manifest_path), split=split)
    masked = collections.Counter()
    empty = collections.Counter()
    columns = collections.defaultdict(list)
    numeric_columns, categorical_columns = list(numeric_columns), list(categorical_columns)
    if not manifest_path.is_file():
        raise DataError(f"Manifest not found: {manifest_path}")
    names, rows = _rows(manifest_path)
    kinds = {m: _modality_type(m, modality_types) for m in modalities}
    required = ["id", "split", "label"]
    for m in modalities:
        if kinds[m] == "tabular":
            if not numeric_columns and not categorical_columns:
                raise DataError(
                    "The tabular modality needs data.tabular_numeric and/or "
                    "data.tabular_categorical columns."
                )
            required += numeric_columns + categorical_columns
        else:
            required.append(m)
    missing = [c for c in required if c not in names]
    if missing:
        raise DataError(f"{manifest_path}: missing columns {missing}; has {names}.")
    for line, row in rows:
        if str(row.get("split")) not in SPLITS:
            problem = (f"{manifest_path}, line {line} (id {row.get('id')}): column 'split' is "
                       f"{row.get('split')!r}, not one of {list(SPLITS)}")
            if _policy_for(bad_input, "split") == "error":
                raise DataError(problem)
            report.unknown_split += 1
            report.problems.append(problem)
            continue
        if str(row.get("split")) != split:
            continue
        if max_examples is not None and report.rows_read >= max_examples:
            break
        report.rows_read += 1
        where = f"{manifest_path}, line {line} (id {row.get('id')})"
        label, reason = parse_label(row.get("label"), target, num_classes)
        if reason is not None:
            problem = f"{where}: {reason}"
            if _policy_for(bad_input, "label") == "error":
                raise DataError(problem)
            report.skipped += 1
            report.problems.append(problem)
            continue
        keep, values = True, {}
        for m in modalities:
            if empty_is_missing and kinds[m] != "tabular" and not str(row.get(m) or "").strip():
                empty[m] += 1
                values.update(_empty_value(m, kinds[m], len(numeric_columns),
                                           len(categorical_columns)))
                values[f"{m}_present"] = 0.0
                continue
            value, reason = _check_value(m, kinds[m], row, root, checkers, numeric_columns,
                                         categorical_columns)
            if reason is None:
                values.update(value)
                values[f"{m}_present"] = 1.0
                continue
            problem = f"{where}: {reason}"
            policy = _policy_for(bad_input, m, kinds[m])
            if policy == "error":
                raise DataError(problem)
            report.problems.append(problem)
            if policy == "skip":
                keep = False
                break
            masked[m] += 1
            values.update(_empty_value(m, kinds[m], len(numeric_columns),
                                       len(categorical_columns)))
            values[f"{m}_present"] = 0.0
        if not keep:
            report.skipped += 1
            continue
        columns["id"].append(str(row["id"]))
        columns["label"].append(label)
        for key, value in values.items():
            columns[key].append(value)
        report.rows_kept += 1
    report.masked = dict(masked)
    report.missing = dict(empty)
    arrays = {
        "id": np.array(columns["id"], dtype=str),
        "label": np.array(columns["label"], dtype=LABEL_DTYPES.get(target, np.int64)),
    }
    if target in ("multilabel", "regression"):  # (n, labels) and (n, 1), like the outputs
        arrays["label"] = arrays["label"].reshape(
            report.rows_kept, num_classes if target == "multilabel" else 1)
    for m in modalities:
        if kinds[m] == "tabular":
            arrays[m] = np.array(columns[m], dtype=np.float32).reshape(
                report.rows_kept, len(numeric_columns))
            arrays["tabular_categories"] = np.array(columns["tabular_categories"], dtype=str)
            arrays["tabular_categories"] = arrays["tabular_categories"].reshape(
                report.rows_kept, len(categorical_columns)
            )
        else:
            arrays[m] = np.array(columns[m], dtype=str)
        arrays[f"{m}_present"] = np.array(columns[f"{m}_present"], dtype=np.float32)
    return arrays, report


def _once(check):
    results = {}

    def cached(path):
        key = str(path)
        if key not in results:
            results[key] = check(path)
        return results[key]

    return cached


def _modality_type(name, types):
    from mmkeras import features

    try:
        return features.modality_type(name, types)
    except ValueError as e:
        raise DataError(str(e)) from None


def _empty_value(modality, kind, num_numeric, num_categorical):
    if kind == "tabular":
        return {"tabular": [0.0] * num_numeric, "tabular_categories": [""] * num_categorical}
    return {modality: ""}


def _check_value(modality, kind, row, root, checkers, numeric_columns, categorical_columns):
    """`({column: value}, None)` or `(None, reason)` for one modality (of type `kind`) of one
    row."""
    if kind == "text":
        reason = check_text(row.get(modality))
        return ({modality: str(row.get(modality))}, None) if reason is None else (None, reason)
    if kind == "tabular":
        numbers = []
        for column in numeric_columns:
            number, reason = parse_number(row.get(column))
            if reason is not None:
                return None, f"tabular column '{column}' {reason}"
            numbers.append(number)
        categories = ["" if row.get(c) is None else str(row.get(c)) for c in categorical_columns]
        return {"tabular": numbers, "tabular_categories": categories}, None
    if kind not in checkers:
        raise DataError(f"No check for modality '{modality}'; known: {sorted(checkers)}, text, tabular.")
    value = row.get(modality)
    path = root / str(value) if value else None
    reason = "empty path" if path is None else checkers[kind](path)
    if reason is None:
        return {modality: str(path)}, None
    where = modality if modality == kind else f"{modality} ({kind})"
    return None, f"{where} file {path}: {reason}"
