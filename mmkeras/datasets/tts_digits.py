"""Spoken digits in synthetic voices: a "new voices" test set for the AV-MNIST audio branch.

The AV-MNIST audio branch learns from the Free Spoken Digit Dataset (FSDD: a handful of
speakers, 8 kHz), and its test split holds the same speakers, so nothing there measures how it
carries over to a voice it has never heard (issue #18). This module builds such a set with
eSpeak NG, a formant text-to-speech program packaged by Debian (`apt-get install espeak-ng`,
GPL-3.0-or-later): every English accent x voice variant x speed x pitch of the grid speaks
"zero" .. "nine" once.

Default grid (version 1; 6 x 6 x 2 x 1 x 10 = 720 clips, 72 per digit):

- accents (`-v`): `en` (British), `en-us` (General American), `en-gb-scotland` (Scottish),
  `en-gb-x-rp` (Received Pronunciation), `en-gb-x-gbcwmd` (West Midlands), `en-029`
  (Caribbean). British is named `en`, its voice file: eSpeak NG 1.51 drops the `+variant` of
  `-v en-gb+<variant>` (every variant then speaks alike). `en-us-nyc` is left out: it speaks
  7 of the 10 digits exactly as `en-us` does;
- variants (`+`): male `m1`, `m3`, `m6` and female `f1`, `f3`, `f5` (pitch range and formant
  shifts; the echo variants `m2` and `f4` are left out);
- speeds (`-s`, words per minute): 150 and 190 (eSpeak's default is 175; the clips are then
  0.48-0.99 s long (FSDD's median is 0.42 s): the speech from the first sample, then
  eSpeak's closing pause);
- pitch (`-p`): 50, eSpeak's default (each variant sets its own pitch range around it).

Recipe: `espeak-ng -v <accent>+<variant> -s <speed> -p <pitch> -w <file> <word>` writes 16-bit
mono PCM at 22,050 Hz; the samples are resampled to 8 kHz with
`scipy.signal.resample_poly(x, 160, 441)` (the exact ratio, with scipy's default Kaiser-window
anti-aliasing filter) and written as 16-bit PCM, rounded and clipped at full scale. Nothing is
trimmed, padded, normalised or noised: the clips are as eSpeak speaks them, and any model input
path (window, trimming, added noise) is left to the consumer (`benchmarks/audio_robustness.py`
adds the AV-MNIST white noise for its `voices_tts_noisy` column). eSpeak falls back quietly to
another voice for a name it does not know, so accents and variants are checked against
`espeak-ng --voices` first, and a build fails if two accent+variant pairs speak all ten digits
identically at a speed and pitch (a voice or variant eSpeak ignored). eSpeak is deterministic:
the same grid and the same eSpeak NG build give the same files and the same checksum (another
eSpeak version may not).

Layout of a prepared dataset (written atomically, like every `mmkeras.datasets` preparer):

    audio/<accent>+<variant>/s<speed>-p<pitch>-<digit>.wav   mono 16-bit PCM at 8 kHz
    manifest.csv      path,label,voice,variant,speed,pitch (paths relative to the dir)
    dataset.json      source (eSpeak NG and Debian package versions, licence), recipe, counts,
                      checksum (`mmkeras.datasets.avmnist.compute_checksum`)

Usage:

    python -m mmkeras.datasets.tts_digits prepare [--voices en en-us ...] [--variants m1 f3 ...]
    python -m mmkeras.datasets.tts_digits info [same flags]

This module uses numpy, scipy and the standard library only (no TensorFlow).
"""

import argparse
import datetime
import hashlib
import json
import math
import pathlib
import re
import shutil
import subprocess
import sys
import wave

import numpy as np
import scipy
import scipy.signal

from mmkeras import errors
from mmkeras.datasets.avmnist import compute_checksum
from mmkeras.datasets.cache import build_atomically
from mmkeras.datasets.cache import data_root as _data_root
from mmkeras.datasets.cache import mmkeras_version as _mmkeras_version
from mmkeras.datasets.cache import prepare_or_info
from mmkeras.datasets.cache import write_wav
from mmkeras.datasets.cache import write_manifest
from mmkeras.datasets.fetch import DatasetError

NAME = "tts_digits"
RECIPE_VERSION = 1
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SAMPLE_RATE = 8000
ESPEAK_RATE = 22050  # what espeak-ng writes (checked on every clip)
VOICES = ("en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbcwmd", "en-029")
VARIANTS = ("m1", "m3", "m6", "f1", "f3", "f5")
SPEEDS = (150, 190)
PITCHES = (50,)
MANIFEST_COLUMNS = ("path", "label", "voice", "variant", "speed", "pitch")
# The eSpeak NG binary: a name looked up on PATH, or a path (tests point it at a missing file).
ESPEAK_NG = "espeak-ng"
DEBIAN_PACKAGES = ("espeak-ng", "espeak-ng-data")  # the program, and the voices it reads
LICENCE = "GPL-3.0-or-later (eSpeak NG, per Debian's copyright file)"

__all__ = ["DatasetError", "dataset_dir", "prepare", "synthesize"]


def _log(verbose, message):
    if verbose:
        print(f"[tts_digits] {message}", file=sys.stderr, flush=True)


def _grid(voices, variants, speeds, pitches):
    """The grid as a plain dict (tuples as lists), checked: non-empty, no repeats, sane values."""
    grid = {"voices": list(voices), "variants": list(variants),
            "speeds": [int(s) for s in speeds], "pitches": [int(p) for p in pitches]}
    for name, values in grid.items():
        if not values or len(set(values)) != len(values):
            raise ValueError(f"{name} must be a non-empty list without repeats, got {values}")
    if not all(80 <= s <= 450 for s in grid["speeds"]):
        raise ValueError(f"speeds must be within espeak-ng's 80-450 words per minute, "
                         f"got {grid['speeds']}")
    if not all(0 <= p <= 99 for p in grid["pitches"]):
        raise ValueError(f"pitches must be within espeak-ng's 0-99, got {grid['pitches']}")
    return grid


def dataset_dir(voices=VOICES, variants=VARIANTS, speeds=SPEEDS, pitches=PITCHES, *,
                data_root=None):
    """The folder of the dataset of this grid (whether or not it exists yet).

    `<data_root>/datasets/tts_digits/default` for the default grid, else `grid-<12 hex>` (the
    start of the sha256 of the grid), followed by `-r<version>` for recipe versions after 1.
    `data_root` defaults to `$MMKERAS_DATA`, else `~/.cache/mmkeras`.
    """
    grid = _grid(voices, variants, speeds, pitches)
    if grid == _grid(VOICES, VARIANTS, SPEEDS, PITCHES):
        name = "default"
    else:
        digest = hashlib.sha256(json.dumps(grid, sort_keys=True).encode("utf-8")).hexdigest()
        name = f"grid-{digest[:12]}"
    if RECIPE_VERSION != 1:
        name += f"-r{RECIPE_VERSION}"
    return _data_root(data_root) / "datasets" / NAME / name


# ---------------------------------------------------------------------------------------------
# eSpeak NG.


def find_espeak(espeak=None):
    """The full path of the eSpeak NG binary (`espeak`, else `ESPEAK_NG`); `DatasetError` in
    one line, naming the package to install, when there is none."""
    binary = espeak or ESPEAK_NG
    path = shutil.which(binary)
    if path is None:
        raise DatasetError(f"espeak-ng not found ({binary}): install it with "
                           "`apt-get install espeak-ng` (Debian/Ubuntu)")
    return path


def _run(command):
    """Runs an eSpeak NG or dpkg command; the completed process (never raises on a bad exit)."""
    return subprocess.run(command, capture_output=True, text=True, check=False)


def espeak_version(espeak):
    """`(version, full line)` of `espeak-ng --version`, e.g. `("1.51", "eSpeak NG ...")`."""
    line = _run([espeak, "--version"]).stdout.strip()
    match = re.search(r"text-to-speech:\s*(\S+)", line)
    if not match:
        raise DatasetError(f"{espeak} --version printed no version: {line!r}")
    return match.group(1), line


def debian_versions(packages=DEBIAN_PACKAGES):
    """`{package: Debian version}` from `dpkg-query -W` (None where dpkg or the package is
    missing: eSpeak NG built or installed otherwise)."""
    versions = {p: None for p in packages}
    if shutil.which("dpkg-query") is None:
        return versions
    for line in _run(["dpkg-query", "-W", *packages]).stdout.splitlines():
        name, _, version = line.partition("\t")
        name = name.split(":")[0]  # `espeak-ng-data:amd64`
        if name in versions and version.strip():
            versions[name] = version.strip()
    return versions


def known_voices(espeak):
    """`(voices, variants)` eSpeak NG knows: the Language column of `espeak-ng --voices` and
    its voice file names (`gmw/en-US` -> `en-us`, lower-cased as eSpeak matches them), and the
    file names (`!v/<name>`) of `espeak-ng --voices=variant`."""
    voices = set()
    for line in _run([espeak, "--voices"]).stdout.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 4:
            voices.update((fields[1], fields[4].rsplit("/", 1)[-1].lower()))
    variants = set()
    for line in _run([espeak, "--voices=variant"]).stdout.splitlines()[1:]:
        variants.update(f[3:] for f in line.split() if f.startswith("!v/"))
    return voices, variants


def _check_voices(espeak, grid):
    """Every accent and variant of the grid is one eSpeak NG has (it would fall back quietly)."""
    voices, variants = known_voices(espeak)
    unknown = ([v for v in grid["voices"] if v not in voices]
               + [f"+{v}" for v in grid["variants"] if v not in variants])
    if unknown:
        raise DatasetError(f"espeak-ng has no voice {', '.join(unknown)} (see "
                           "`espeak-ng --voices=en` and `espeak-ng --voices=variant`)")


def synthesize(espeak, word, voice, variant, speed, pitch, scratch):
    """`word` spoken by eSpeak NG, resampled to 8 kHz: float64 samples in [-1, 1).

    eSpeak writes the WAV to the file `scratch` (its `--stdout` stream carries no real length
    in its header), which is read back and deleted.
    """
    scratch = pathlib.Path(scratch)
    command = [espeak, "-v", f"{voice}+{variant}", "-s", str(speed), "-p", str(pitch),
               "-w", str(scratch), word]
    proc = _run(command)
    if proc.returncode or not scratch.is_file():
        raise DatasetError(f"espeak-ng failed ({' '.join(command)}): exit code "
                           f"{proc.returncode}, stderr: {proc.stderr.strip() or '(empty)'}")
    with wave.open(str(scratch), "rb") as w:
        params = (w.getnchannels(), w.getsampwidth(), w.getframerate())
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    scratch.unlink()
    if params != (1, 2, ESPEAK_RATE) or not pcm.size:
        raise DatasetError(f"espeak-ng wrote {params} (channels, bytes, Hz) and {pcm.size} "
                           f"samples for {' '.join(command)}; expected (1, 2, {ESPEAK_RATE})")
    gcd = math.gcd(SAMPLE_RATE, ESPEAK_RATE)
    return scipy.signal.resample_poly(pcm / 32768.0, SAMPLE_RATE // gcd, ESPEAK_RATE // gcd)


# ---------------------------------------------------------------------------------------------
# Files.


def clip_path(voice, variant, speed, pitch, label):
    """A clip's path relative to the dataset folder."""
    return f"audio/{voice}+{variant}/s{speed}-p{pitch}-{label}.wav"


def _check_distinct(spoken):
    """`spoken`: `{(speed, pitch): {(voice, variant): [sha256 of each digit's samples]}}`.
    Two accent+variant pairs that speak all ten digits identically mean eSpeak ignored one
    (it falls back quietly): `DatasetError` naming them."""
    for (speed, pitch), by_voice in spoken.items():
        seen = {}
        for (voice, variant), digests in by_voice.items():
            other = seen.setdefault(tuple(digests), (voice, variant))
            if other != (voice, variant):
                raise DatasetError(
                    f"espeak-ng spoke {other[0]}+{other[1]} and {voice}+{variant} identically "
                    f"(speed {speed}, pitch {pitch}): it ignored a voice or variant name; "
                    "name voices by their file (`espeak-ng --voices=en`, e.g. `en`, not "
                    "`en-gb`)")


def _build(tmp, *, grid, espeak, verbose):
    """Synthesise every clip of `grid` into the (new, empty) folder `tmp`; the dataset.json
    dict."""
    version, version_line = espeak_version(espeak)
    _check_voices(espeak, grid)
    rows, lengths, clipped, spoken = [], [], 0, {}
    scratch = tmp / "espeak.wav"
    for voice in grid["voices"]:
        for variant in grid["variants"]:
            (tmp / "audio" / f"{voice}+{variant}").mkdir(parents=True)
            for speed in grid["speeds"]:
                for pitch in grid["pitches"]:
                    for label, word in enumerate(DIGITS):
                        samples = synthesize(espeak, word, voice, variant, speed, pitch,
                                             scratch)
                        path = clip_path(voice, variant, speed, pitch, label)
                        clipped += write_wav(tmp / path, samples, SAMPLE_RATE)
                        lengths.append(len(samples))
                        spoken.setdefault((speed, pitch), {}).setdefault(
                            (voice, variant), []).append(
                                hashlib.sha256(samples.tobytes()).hexdigest())
                        rows.append((path, label, voice, variant, speed, pitch))
            _log(verbose, f"{voice}+{variant}: {len(rows)} clips so far")
    _check_distinct(spoken)
    write_manifest(tmp / "manifest.csv", MANIFEST_COLUMNS, rows)
    seconds = np.asarray(lengths) / SAMPLE_RATE
    gcd = math.gcd(SAMPLE_RATE, ESPEAK_RATE)
    return {
        "name": NAME,
        "recipe_version": RECIPE_VERSION,
        "sources": [{
            "name": "eSpeak NG text-to-speech",
            "registry": "Debian",
            "package": "espeak-ng",
            "version": version,
            "version_line": version_line,
            "debian_packages": debian_versions(),
            "licence": LICENCE,
            "binary": espeak,
        }],
        "recipe": {
            **grid,
            "words": list(DIGITS),
            "command": "espeak-ng -v <voice>+<variant> -s <speed> -p <pitch> -w <file> <word>",
            "espeak_rate": ESPEAK_RATE,
            "sample_rate": SAMPLE_RATE,
            "resampler": f"scipy.signal.resample_poly(x, {SAMPLE_RATE // gcd}, "
                         f"{ESPEAK_RATE // gcd}) (scipy {scipy.__version__})",
            "processing": "none (no trimming, padding, normalisation or noise)",
        },
        "counts": {
            "clips": len(rows),
            "per_class": {str(d): len(rows) // len(DIGITS) for d in range(len(DIGITS))},
            "clipped_samples": clipped,
            "seconds": {"min": round(float(seconds.min()), 4),
                        "mean": round(float(seconds.mean()), 4),
                        "max": round(float(seconds.max()), 4),
                        "over_1s": int(np.sum(seconds > 1.0))},
        },
        "checksum": compute_checksum(tmp),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "mmkeras_version": _mmkeras_version(),
    }


def prepare(voices=VOICES, variants=VARIANTS, speeds=SPEEDS, pitches=PITCHES, *,
            data_root=None, espeak=None, force=False, verbose=True):
    """Synthesise the grid's clips (once) and return the dataset folder.

    Args:
        voices: eSpeak NG English accents (`espeak-ng --voices=en`, the Language column).
        variants: voice variants (`espeak-ng --voices=variant`, the name after `!v/`).
        speeds: speaking rates in words per minute (`-s`).
        pitches: pitches (`-p`, 0-99).
        data_root: cache root; defaults to `$MMKERAS_DATA`, else `~/.cache/mmkeras`.
        espeak: the eSpeak NG binary, a name on PATH or a path; defaults to `ESPEAK_NG`.
        force: rebuild even if a complete dataset (with `dataset.json`) exists.
        verbose: print progress to stderr.

    Returns:
        The dataset folder (`pathlib.Path`), `dataset_dir(voices, variants, speeds, pitches)`.

    Raises:
        DatasetError: eSpeak NG is missing, lacks a voice of the grid, or failed.
    """
    out = dataset_dir(voices, variants, speeds, pitches, data_root=data_root)
    grid = _grid(voices, variants, speeds, pitches)
    if force or not (out / "dataset.json").is_file():
        espeak = find_espeak(espeak)  # only needed to build
    return build_atomically(
        out,
        lambda tmp: _build(tmp, grid=grid, espeak=espeak, verbose=verbose),
        force=force,
        log=lambda message: _log(verbose, message),
    )


# ---------------------------------------------------------------------------------------------
# Command line.


def _summary_lines(meta, path):
    source, recipe, counts = meta["sources"][0], meta["recipe"], meta["counts"]
    debian = ", ".join(f"{p} {v}" for p, v in source["debian_packages"].items())
    return [
        f"dataset: {path}",
        f"name: {meta['name']}  recipe_version: {meta['recipe_version']}",
        f"created: {meta['created']}  mmkeras_version: {meta['mmkeras_version']}",
        f"source: eSpeak NG {source['version']} ({source['licence']}); Debian: {debian}",
        f"voices: {' '.join(recipe['voices'])}",
        f"variants: {' '.join(recipe['variants'])}  speeds: {recipe['speeds']}  "
        f"pitches: {recipe['pitches']}",
        f"clips: {counts['clips']} at {recipe['sample_rate']} Hz; seconds min "
        f"{counts['seconds']['min']} mean {counts['seconds']['mean']} max "
        f"{counts['seconds']['max']} ({counts['seconds']['over_1s']} over 1 s); "
        f"clipped samples {counts['clipped_samples']}",
        f"checksum: {meta['checksum']}",
    ]


@errors.command_line
def main(argv=None):
    common = argparse.ArgumentParser(add_help=False)
    errors.add_flags(common)
    common.add_argument("--voices", nargs="+", default=list(VOICES))
    common.add_argument("--variants", nargs="+", default=list(VARIANTS))
    common.add_argument("--speeds", nargs="+", type=int, default=list(SPEEDS))
    common.add_argument("--pitches", nargs="+", type=int, default=list(PITCHES))
    common.add_argument("--data-root", default=None)
    parser = argparse.ArgumentParser(
        prog="python -m mmkeras.datasets.tts_digits",
        description="Build or inspect the spoken-digit test set in eSpeak NG voices.")
    commands = parser.add_subparsers(dest="command", required=True)
    p_prepare = commands.add_parser("prepare", parents=[common], help="synthesise and write")
    p_prepare.add_argument("--espeak", default=None, help=f"the binary (default {ESPEAK_NG})")
    p_prepare.add_argument("--force", action="store_true", help="rebuild even if cached")
    p_prepare.add_argument("--quiet", action="store_true", help="no progress messages")
    commands.add_parser("info", parents=[common], help="print the dataset.json summary")
    args = parser.parse_args(argv)
    grid = (args.voices, args.variants, args.speeds, args.pitches)
    return prepare_or_info(
        args.command,
        lambda: prepare(*grid, data_root=args.data_root, espeak=args.espeak, force=args.force,
                        verbose=not args.quiet),
        lambda: dataset_dir(*grid, data_root=args.data_root), _summary_lines)


if __name__ == "__main__":
    sys.exit(main())
