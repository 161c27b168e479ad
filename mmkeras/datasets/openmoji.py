"""OpenMoji image + text classification: an emoji picture and its name -> its Unicode group.

Source: the npm package `openmoji` 17.0.0 (emoji artwork CC BY-SA 4.0, by the OpenMoji
project at HfG Schwäbisch Gmünd). It ships 4,495 colour SVGs (`color/svg/<hexcode>.svg`) and
`data/openmoji.csv` (group, subgroup, annotation, tags). It ships no PNGs, so the SVGs are
rasterised here with CairoSVG (PyPI `cairosvg`, which needs the cairo library: Debian
`libcairo2`).

Recipe (version 1, seeded by `seed`):

1. Skin-tone variants (a non-empty `skintone` column) are dropped: they are recolourings of
   their base emoji with the same name plus a tone, and would leak across splits. The
   `component` group (9 items: skin-tone swatches, hair parts) is dropped too. That leaves
   2,456 emoji in 11 groups (the classes, in alphabetical order); CairoSVG 2.9.1 fails on one
   SVG (a subdivision flag with a dangling marker reference), which is left out and listed
   under `unrenderable` in `dataset.json`: 2,455 examples (1,719 / 247 / 489).
2. Each group is shuffled and split 70% / 10% / 20% (train / validation / test).
3. Image: the colour SVG rendered at `size` x `size` pixels, alpha-composited on white, saved
   as an RGB PNG. Text: the `annotation` (e.g. "grinning face", "flag: Peru").

Layout of a prepared dataset (written atomically: built in `<dir>.tmp-<pid>`, then renamed):

    images/<split>/<hexcode>.png   size x size RGB PNG
    manifest.csv                   id,split,label,group,image,text
    dataset.json                   sources, licences, recipe, classes, counts, checksum

Usage:

    python -m mmkeras.datasets.openmoji prepare [--size 32] [--seed 0] [--data-root DIR]
    python -m mmkeras.datasets.openmoji info [same flags]

This module uses numpy, Pillow, CairoSVG and the standard library only (no TensorFlow).
"""

import argparse
import csv
import datetime
import io
import pathlib
import sys
import tarfile

import numpy as np
from PIL import Image

from mmkeras import errors
from mmkeras.datasets import fetch
from mmkeras.datasets.avmnist import compute_checksum
from mmkeras.datasets.cache import build_atomically
from mmkeras.datasets.cache import data_root as _data_root
from mmkeras.datasets.cache import mmkeras_version as _mmkeras_version
from mmkeras.datasets.cache import prepare_or_info
from mmkeras.datasets.fetch import DatasetError

NAME = "openmoji"
RECIPE_VERSION = 1
SPLITS = ("train", "validation", "test")
SPLIT_FRACTIONS = {"train": 0.7, "validation": 0.1, "test": 0.2}
DROPPED_GROUPS = ("component",)
MANIFEST_COLUMNS = ("id", "split", "label", "group", "image", "text")

SOURCE = {
    "name": "OpenMoji 17.0 emoji (colour SVGs and openmoji.csv)",
    "registry": "npm",
    "package": "openmoji",
    "version": "17.0.0",
    "licence": "CC BY-SA 4.0 (artwork and data)",
    "file": "openmoji-17.0.0.tgz",
    "member": "package/color/svg/*.svg, package/data/openmoji.csv",
    "sha256": "55ee7d13485dec86e9f38c1f3a645a13382d33ff97c0cd845ee824b0aef45e68",
}
RASTERISER = {"name": "CairoSVG", "registry": "PyPI", "package": "cairosvg",
              "licence": "LGPL-3.0"}


def _log(verbose, message):
    if verbose:
        print(f"[openmoji] {message}", file=sys.stderr, flush=True)


def dataset_dir(*, size=32, seed=0, per_class=None, data_root=None):
    """`<data_root>/datasets/openmoji/s<size>-seed<seed>[-pc<N>]` (whether or not it exists)."""
    if int(size) < 8:
        raise ValueError(f"size must be at least 8 pixels, got {size}")
    if per_class is not None and int(per_class) < 10:
        raise ValueError(f"per_class={per_class} is too small: use 10 or more")
    name = f"s{int(size)}-seed{int(seed)}"
    if per_class is not None:
        name += f"-pc{int(per_class)}"
    if RECIPE_VERSION != 1:
        name += f"-r{RECIPE_VERSION}"
    return _data_root(data_root) / "datasets" / NAME / name


def fetch_source(downloads, verbose=True):
    """The verified `openmoji` npm tarball (fetched once into `downloads`)."""
    path = pathlib.Path(downloads) / SOURCE["file"]
    if path.is_file():
        fetch.verify_sha256(path, SOURCE["sha256"], what="cached download")
    else:
        _log(verbose, f"fetching {SOURCE['file']} from the npm package {SOURCE['package']} "
                      f"{SOURCE['version']}")
        fetch.npm_pack(SOURCE["package"], SOURCE["version"], path, sha256=SOURCE["sha256"])
    return path


def read_source(tarball):
    """`(rows, svgs)`: the CSV rows and `{hexcode: svg bytes}` of the colour SVGs."""
    rows, svgs = None, {}
    with tarfile.open(tarball) as tf:
        for info in tf:
            if not info.isfile():
                continue
            if info.name == "package/data/openmoji.csv":
                text = tf.extractfile(info).read().decode("utf-8")
                rows = list(csv.DictReader(io.StringIO(text)))
            elif info.name.startswith("package/color/svg/") and info.name.endswith(".svg"):
                svgs[pathlib.PurePosixPath(info.name).stem] = tf.extractfile(info).read()
    if rows is None:
        raise DatasetError(f"{tarball} has no package/data/openmoji.csv")
    return rows, svgs


def select(rows):
    """Base emoji (no skin-tone variants) outside `DROPPED_GROUPS`, with an annotation."""
    return [
        r for r in rows
        if not r["skintone"] and r["group"] not in DROPPED_GROUPS and r["annotation"].strip()
    ]


def rasterise(svg, size):
    """SVG bytes -> `size` x `size` RGB PIL image, composited on white."""
    try:
        import cairosvg
    except (ImportError, OSError) as e:
        raise DatasetError(
            "CairoSVG is needed to rasterise the OpenMoji SVGs: pip install cairosvg (it needs "
            f"the cairo library, Debian: apt-get install libcairo2): {e}"
        ) from None
    png = cairosvg.svg2png(bytestring=svg, output_width=size, output_height=size)
    with Image.open(io.BytesIO(png)) as image:
        rgba = image.convert("RGBA")
    background = Image.new("RGB", rgba.size, (255, 255, 255))
    background.paste(rgba, mask=rgba.split()[-1])
    return background


def split_rows(rows, classes, seed, per_class=None):
    """`{split: [(row, label), ...]}`: per group, a seeded shuffle, then 70/10/20."""
    rng = np.random.default_rng([int(seed), 1])
    out = {s: [] for s in SPLITS}
    for label, group in enumerate(classes):
        members = sorted((r for r in rows if r["group"] == group), key=lambda r: r["hexcode"])
        order = rng.permutation(len(members))
        if per_class is not None:
            order = order[: int(per_class)]
        n = len(order)
        n_train = int(np.floor(SPLIT_FRACTIONS["train"] * n + 0.5))
        n_val = max(1, int(np.floor(SPLIT_FRACTIONS["validation"] * n + 0.5)))
        bounds = {"train": (0, n_train), "validation": (n_train, n_train + n_val),
                  "test": (n_train + n_val, n)}
        for s, (a, b) in bounds.items():
            out[s].extend((members[i], label) for i in order[a:b])
    for s in SPLITS:
        out[s].sort(key=lambda item: (item[1], item[0]["hexcode"]))
    return out


def _build(tmp, *, size, seed, per_class, downloads, verbose):
    tarball = fetch_source(downloads, verbose)
    rows, svgs = read_source(tarball)
    rows = [r for r in select(rows) if r["hexcode"] in svgs]
    _log(verbose, f"rasterising {len(rows)} SVGs at {size}x{size}")
    images, unrenderable = {}, []
    for row in rows:
        try:
            images[row["hexcode"]] = rasterise(svgs[row["hexcode"]], size)
        except DatasetError:
            raise
        except Exception as e:  # CairoSVG fails on a few SVGs (e.g. dangling marker refs).
            unrenderable.append({"hexcode": row["hexcode"], "error": f"{type(e).__name__}: {e}"})
    if unrenderable:
        _log(verbose, f"{len(unrenderable)} SVGs could not be rendered and are left out")
    rows = [r for r in rows if r["hexcode"] in images]
    classes = sorted({r["group"] for r in rows})
    splits = split_rows(rows, classes, seed, per_class)
    manifest = []
    for s in SPLITS:
        (tmp / "images" / s).mkdir(parents=True)
        for row, label in splits[s]:
            rel = f"images/{s}/{row['hexcode']}.png"
            images[row["hexcode"]].save(tmp / rel, format="PNG")
            manifest.append({"id": row["hexcode"], "split": s, "label": label,
                             "group": row["group"], "image": rel,
                             "text": " ".join(row["annotation"].split())})
    with open(tmp / "manifest.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS)
        writer.writeheader()
        writer.writerows(manifest)
    counts = {
        s: {"examples": len(splits[s]),
            "per_class": {classes[k]: int(v) for k, v in
                          enumerate(np.bincount([l for _, l in splits[s]], minlength=len(classes)))}}
        for s in SPLITS
    }
    source = {k: SOURCE[k] for k in ("name", "registry", "package", "version", "licence", "file",
                                     "member")}
    source["sha256"] = fetch.sha256_file(tarball)
    try:
        from importlib import metadata
        rasteriser = dict(RASTERISER, version=metadata.version("cairosvg"))
    except Exception:
        rasteriser = dict(RASTERISER, version="unknown")
    return {
        "name": NAME,
        "recipe_version": RECIPE_VERSION,
        "sources": [source],
        "tools": [rasteriser],
        "licence": "CC BY-SA 4.0 (derived from OpenMoji; attribute the OpenMoji project)",
        "recipe": {"size": int(size), "seed": int(seed), "per_class": per_class,
                   "dropped_groups": list(DROPPED_GROUPS), "skin_tone_variants": "dropped",
                   "text": "annotation", "split_fractions": SPLIT_FRACTIONS},
        "classes": classes,
        "counts": counts,
        "unrenderable": unrenderable,
        "checksum": compute_checksum(tmp),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "mmkeras_version": _mmkeras_version(),
    }


def prepare(*, size=32, seed=0, per_class=None, data_root=None, force=False, verbose=True):
    """Fetch the source (once), build the dataset (once) and return its folder.

    Args:
        size: image side in pixels.
        seed: seeds the splits.
        per_class: keep at most this many emoji per group (tests, quick runs); None = all.
        data_root: cache root; defaults to `$MMKERAS_DATA`, else `~/.cache/mmkeras`.
        force: rebuild even if a complete dataset (with `dataset.json`) exists.
        verbose: print progress to stderr.

    Raises:
        DatasetError: the source could not be fetched, failed its checksum, or CairoSVG is
            missing.
    """
    out = dataset_dir(size=size, seed=seed, per_class=per_class, data_root=data_root)
    downloads = _data_root(data_root) / "downloads"
    return build_atomically(
        out,
        lambda tmp: _build(tmp, size=int(size), seed=int(seed), per_class=per_class,
                           downloads=downloads, verbose=verbose),
        force=force,
        log=lambda message: _log(verbose, message),
    )


@errors.command_line
def main(argv=None):
    common = argparse.ArgumentParser(add_help=False)
    errors.add_flags(common)
    common.add_argument("--size", type=int, default=32)
    common.add_argument("--seed", type=int, default=0)
    common.add_argument("--per-class", type=int, default=None)
    common.add_argument("--data-root", default=None)
    parser = argparse.ArgumentParser(
        prog="python -m mmkeras.datasets.openmoji",
        description="Build or inspect the OpenMoji image + text (emoji group) dataset.")
    commands = parser.add_subparsers(dest="command", required=True)
    p_prepare = commands.add_parser("prepare", parents=[common], help="fetch and build")
    p_prepare.add_argument("--force", action="store_true")
    p_prepare.add_argument("--quiet", action="store_true")
    commands.add_parser("info", parents=[common], help="print the dataset.json summary")
    args = parser.parse_args(argv)
    kwargs = dict(size=args.size, seed=args.seed, per_class=args.per_class,
                  data_root=args.data_root)
    return prepare_or_info(
        args.command, lambda: prepare(force=args.force, verbose=not args.quiet, **kwargs),
        lambda: dataset_dir(**kwargs), _summary_lines)


def _summary_lines(meta, path):
    return [
        f"dataset: {path}",
        *(f"source: {s['registry']} {s['package']} {s['version']} ({s['licence']}) "
          f"sha256={s['sha256']}" for s in meta["sources"]),
        f"classes ({len(meta['classes'])}): {', '.join(meta['classes'])}",
        *(f"{split}: {c['examples']} examples" for split, c in meta["counts"].items()),
        f"checksum: {meta['checksum']}",
    ]


if __name__ == "__main__":
    sys.exit(main())
