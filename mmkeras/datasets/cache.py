"""Where prepared datasets live, and how a preparer writes one without ever leaving half of it.

Every preparer (`avmnist`, `openmoji`, ...) builds into `<dir>.tmp-<pid>` and renames the result
into place only once `dataset.json` is written, so a crash or a kill never leaves a dataset
that looks complete. Folders left by dead processes are removed on the next build.
"""

import csv
import json
import os
import pathlib
import shutil
import sys
import time
import wave

import numpy as np

from mmkeras import errors
from mmkeras.datasets.fetch import DatasetError


def data_root(root=None):
    """The cache root: `root`, else `$MMKERAS_DATA`, else `~/.cache/mmkeras`."""
    if root is not None:
        return pathlib.Path(root).expanduser()
    if os.environ.get("MMKERAS_DATA"):
        return pathlib.Path(os.environ["MMKERAS_DATA"]).expanduser()
    return pathlib.Path.home() / ".cache" / "mmkeras"


def mmkeras_version():
    """The version recorded in `dataset.json` (without importing TensorFlow)."""
    module = sys.modules.get("mmkeras")
    version = getattr(module, "__version__", None)
    if version is None:
        try:
            from importlib import metadata

            version = metadata.version("mmkeras")
        except Exception:  # Not installed and not importable: record that.
            version = "unknown"
    return version


def remove_stale_builds(out):
    """Remove `<out>.tmp-<pid>` / `<out>.old-<pid>` folders left by processes no longer alive."""
    for path in out.parent.glob(f"{out.name}.*-*"):
        kind, _, pid = path.name[len(out.name) + 1:].partition("-")
        if kind not in ("tmp", "old") or not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass


def build_atomically(out, build, *, force=False, log=lambda message: None):
    """Builds the dataset folder `out` with `build(tmp) -> dataset.json dict`, atomically.

    Returns `out` at once when it already holds a `dataset.json` (unless `force`). A forced
    rebuild swaps the new folder in and only then deletes the old one. When another process
    finishes the same dataset first, its result is used.
    """
    out = pathlib.Path(out)
    if not force and (out / "dataset.json").is_file():
        log(f"cached: {out}")
        return out
    start = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_builds(out)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        meta = build(tmp)
        with open(tmp / "dataset.json", "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=1)
            f.write("\n")
        if out.exists():  # Forced rebuild, or a folder without dataset.json: replace it.
            old = out.with_name(f"{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                os.replace(tmp, out)
            except OSError:
                if not (out / "dataset.json").is_file():
                    raise
                log("another process finished the same dataset first; using it")
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log(f"prepared {out} in {time.perf_counter() - start:.1f} s")
    return out


def write_manifest(path, columns, rows):
    """Writes `manifest.csv` at `path`: a header of `columns`, then `rows` (sequences), UTF-8
    with `\n` line ends (the bytes the dataset checksum covers)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)



def write_wav(path, samples, rate):
    """Float samples in [-1, 1] -> a mono 16-bit PCM WAV file at `rate` Hz (rounded, clipped at
    full scale, as every preparer writes its clips); returns how many samples clipped."""
    scaled = np.rint(np.asarray(samples) * 32767.0)
    pcm = np.clip(scaled, -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(rate))
        w.writeframes(pcm.tobytes())
    return int(np.sum(pcm != scaled))

def prepare_or_info(command, prepare, locate, summary_lines, after_locate=None, read=None):
    """The `prepare` / `info` commands that every dataset module's command line shares.

    Args:
        command: `"prepare"` or `"info"`.
        prepare: `() -> dataset folder`: builds it (once; cached after).
        locate: `() -> dataset folder`: where it would be, without building.
        summary_lines: `(meta, folder) -> [str]`: what to print about it.
        after_locate: optional `(folder) -> None` run by `info` on a prepared folder (e.g. a
            checksum check); its `DatasetError` is reported like the others.
        read: optional `(folder) -> meta` (default: `dataset.json` as JSON).

    Returns:
        The exit status: 0, 1 (`info` of a folder not prepared) or the user-error status,
        with the error printed in one line.
    """
    read = read or (lambda folder: json.loads(
        (folder / "dataset.json").read_text(encoding="utf-8")))
    try:
        if command == "prepare":
            start = time.perf_counter()
            path = prepare()
            elapsed = time.perf_counter() - start
        else:
            path = locate()
            if not (path / "dataset.json").is_file():
                print(f"not prepared: {path} (run the prepare command first)", file=sys.stderr)
                return 1
            if after_locate is not None:
                after_locate(path)
        meta = read(path)
    except (DatasetError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return errors.USER_ERROR_STATUS
    print("\n".join(summary_lines(meta, path)))
    if command == "prepare":
        print(f"time: {elapsed:.1f} s")
    return 0
