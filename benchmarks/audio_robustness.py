"""Audio robustness: accuracy on the AV-MNIST test split under gain, silence, noise and rate changes.

Trains (or reuses) the audio-only and early-fusion models under two recipes, then scores each
on perturbed copies of the test split's recordings, decoded exactly as the exported model's
`serve_raw` decodes WAV bytes (`mmkeras.data.example_schema.decode_wav_bytes` at the model's
rate, resampling other rates in the graph):

- `old`: the plain encoder (`model.audio_encoder.recipe=none`: a 1 s window, centre crop; no
  front end, no augmentation), the AV-MNIST default before the speech recipe.
- `front`: the front end alone (an ablation): a 3 s input window (`data.audio_samples=24000`)
  trimmed to the speech and cut to 1 s (`SpeechTrimming`, `trim_length=8000`) and per-example
  RMS loudness normalisation.
- `new`: `model.audio_encoder.recipe=speech` (`mmkeras.configs.SPEECH_RECIPE`, the AV-MNIST
  configs' default): the front end and the training augmentations (band-limited speed
  perturbation, time shift, SpecAugment).

Perturbations (each on every test recording; `noisy` is the test split as prepared):

| name             | what the recording becomes                                          |
|------------------|---------------------------------------------------------------------|
| `noisy`          | unchanged (FSDD clip + the dataset's white noise at -6 dB SNR)       |
| `clean`          | the same FSDD clip without the dataset's noise                       |
| `gain_<g>dB`     | times 10**(g/20), saved as 16-bit PCM (so clipped at full scale)     |
| `lead_<s>s`      | `s` seconds of digital silence before the recording                  |
| `trail_<s>s`     | `s` seconds after it                                                 |
| `both_<s>s`      | `s / 2` seconds at each end                                          |
| `rate_<r>`       | the recording resampled to `r` Hz (scipy `resample_poly`, another     |
|                  | method than the model's FFT resampler) and sent at that rate         |
| `..._unchecked`  | the same, decoded without the rate check (`serve_raw` before it had  |
|                  | one: the samples read as if at 8 kHz); not counted in the target     |

    python -m benchmarks.audio_robustness --seeds 0 1 2 --out runs/audio_robustness

prints a table of test accuracy (%) per model, recipe and perturbation (the mean over the
seeds), with each perturbation's change against `noisy`, writes `robustness.json` (every
seed's scores too) and `robustness.png` to `--out`, and trains one model at a time (`python -m
training.train`, the public entry point) into `--out/<model>-<recipe>/seed<N>`, reusing
directories that already hold a `report.json` (and the scores in their `robustness.json`).
Training runs at the fusion table's budget: up to `--epochs` 20 with early stopping after
`--patience` 5 epochs without a better validation accuracy (the best epoch is the model).
"""

import argparse
import csv
import io
import json
import pathlib
import subprocess
import sys
import time
import wave

import numpy as np

MODELS = ("audio_only", "early_fusion")
RECIPES = {
    "old": ["model.audio_encoder.recipe=none"],
    "front": [  # front end only (an ablation of `new`)
        "model.audio_encoder.recipe=none",
        "data.audio_samples=24000",
        "model.audio_encoder.trim_silence=true",
        "model.audio_encoder.trim_length=8000",
        "model.audio_encoder.loudness=rms",
    ],
    "new": ["model.audio_encoder.recipe=speech"],
}
RATE = 8000
PERTURBATIONS = (
    "noisy", "clean",
    "gain_-20dB", "gain_-10dB", "gain_+10dB", "gain_+20dB",
    "lead_0.5s", "lead_1.5s", "trail_1.5s", "both_1.5s",
    "rate_16000", "rate_22050", "rate_22050_unchecked",
)
TARGET_POINTS = 5.0  # issue #18: no gain / silence / rate perturbation costs audio-only more


def _log(message):
    print(f"[audio_robustness] {message}", flush=True)


def train(model, recipe, out, epochs, seed, sets=(), patience=0):
    """Trains `model` under `recipe` (plus `sets`, `--set` overrides for every run) into
    `out/<model>-<recipe>/seed<seed>` unless it is there already."""
    model_dir = pathlib.Path(out) / f"{model}-{recipe}" / f"seed{seed}"
    if (model_dir / "report.json").is_file():
        _log(f"reusing {model_dir}")
        return model_dir
    command = [
        sys.executable, "-m", "training.train",
        "--config", f"training/configs/avmnist/{model}.yaml", "--model-dir", str(model_dir),
        "--set", f"trainer.epochs={epochs}", "--set", f"trainer.seed={seed}",
        "--set", "trainer.verbose=0",
    ]
    if patience:
        command += ["--set", f"trainer.early_stopping_patience={patience}"]
    for override in [*RECIPES[recipe], *sets]:
        command += ["--set", override]
    _log("training: " + " ".join(command[1:]))
    start = time.time()
    subprocess.run(command, check=True)
    _log(f"trained {model_dir} in {time.time() - start:.0f} s")
    return model_dir


# Perturbed recordings.


def wav_bytes(samples, rate):
    """float samples -> 16-bit PCM WAV bytes (clipped at full scale, as a recorder would)."""
    pcm = np.clip(np.rint(np.asarray(samples, np.float64) * 32767.0), -32768, 32767)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(rate))
        w.writeframes(pcm.astype("<i2").tobytes())
    return buffer.getvalue()


def read_wav(path):
    with wave.open(str(path), "rb") as w:
        if w.getframerate() != RATE or w.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16-bit {RATE} Hz, got {w.getframerate()} Hz")
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float64) / 32768.0


def perturb(name, noisy, clean):
    """`(samples, rate)` of the recording under perturbation `name`."""
    import scipy.signal

    if name == "noisy":
        return noisy, RATE
    if name == "clean":
        return clean, RATE
    kind, value = name.split("_", 1)
    if kind == "gain":
        return noisy * 10.0 ** (float(value[:-2]) / 20.0), RATE
    if kind in ("lead", "trail", "both"):
        pad = int(round(float(value[:-1]) * RATE))
        lead = {"lead": pad, "trail": 0, "both": pad // 2}[kind]
        return np.pad(noisy, [lead, pad - lead]), RATE
    if kind == "rate":
        rate = int(value.split("_")[0])
        return scipy.signal.resample_poly(noisy, rate, RATE), rate
    raise ValueError(f"unknown perturbation {name!r}")


def test_rows(config, max_rows=None):
    """The test split's rows (id, label, image path, audio path) and the dataset directory."""
    from mmkeras.datasets import avmnist

    d = config.data
    directory = pathlib.Path(d.data_dir) if d.data_dir else avmnist.dataset_dir(
        d.variant, snr_db=d.snr_db, image_energy=d.image_energy, seed=d.seed,
        data_root=d.data_root, images_per_class=d.images_per_class,
        clips_per_class=d.clips_per_class)
    with open(directory / "manifest.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "test"]
    return rows[:max_rows] if max_rows else rows, directory


def clean_clips(data_root):
    """`{clip number: clean FSDD samples}` from the archive the dataset was prepared from."""
    from mmkeras.datasets import avmnist
    from mmkeras.datasets import cache

    root = cache.data_root(data_root)
    _, fsdd = avmnist.fetch_sources(root / "downloads", verbose=False)
    samples, offsets, lengths, _ = avmnist.load_fsdd(fsdd)
    return lambda n: samples[offsets[n]:offsets[n] + lengths[n]].astype(np.float64)


def decode(wavs, num_samples, checked=True):
    """WAV bytes -> `(n, num_samples)` float32, as `serve_raw` decodes them (rate-checked:
    resampled to the model's rate; `checked=False`: read whatever the rate)."""
    import tensorflow as tf

    from mmkeras.data import example_schema

    @tf.function
    def run(encoded):
        return example_schema.decode_batch(
            {"audio": encoded}, {"audio": tf.ones(tf.shape(encoded))},
            {"audio": (num_samples,)}, audio_sample_rate=RATE if checked else None)["audio"]

    return np.concatenate([run(tf.constant(wavs[i:i + 256], tf.string)).numpy()
                           for i in range(0, len(wavs), 256)])


def evaluate(model_dir, perturbations, max_rows=None):
    """`{perturbation: test accuracy}` of the model in `model_dir`."""
    from PIL import Image

    from mmkeras import model_dir as model_dir_lib

    config, model = model_dir_lib.load_model_dir(model_dir)
    rows, directory = test_rows(config, max_rows)
    labels = np.array([int(r["label"]) for r in rows])
    clips = sorted({r["audio"] for r in rows})
    index = np.array([clips.index(r["audio"]) for r in rows])
    clean_of = clean_clips(config.data.data_root)
    noisy = {c: read_wav(directory / c) for c in clips}
    clean = {c: clean_of(int(pathlib.Path(c).stem.split("-")[1])) for c in clips}
    inputs = {}
    names = [t.name for t in model.inputs]
    if "image" in names:
        inputs["image"] = np.stack([
            np.asarray(Image.open(directory / r["image"]), np.float32)[..., None] / 255.0
            for r in rows])
    for name in names:
        if name.endswith("_present"):
            inputs[name] = np.ones(len(rows), np.float32)
    num_samples = config.data.audio_samples
    result = {}
    for name in perturbations:
        wavs = [wav_bytes(*perturb(name, noisy[c], clean[c])) for c in clips]
        audio = decode(wavs, num_samples, not name.endswith("_unchecked"))[index]
        probabilities = model.predict({**inputs, "audio": audio}, batch_size=250, verbose=0)
        result[name] = float(np.mean(np.argmax(probabilities, -1) == labels))
        run = pathlib.Path(model_dir)
        _log(f"{run.parent.name}/{run.name} {name}: {100 * result[name]:.2f}%")
    return result


def mean_over_seeds(per_seed):
    """`{perturbation: mean accuracy}` of `{seed: {perturbation: accuracy}}`."""
    runs = list(per_seed.values())
    return {p: float(np.mean([r[p] for r in runs])) for p in runs[0]}


def table(results, perturbations):
    """Markdown: one row per perturbation, one column (accuracy, change) per model/recipe."""
    keys = list(results)
    lines = ["| perturbation | " + " | ".join(keys) + " |",
             "|---|" + "---:|" * len(keys)]
    for p in perturbations:
        cells = []
        for k in keys:
            acc = 100 * results[k][p]
            delta = acc - 100 * results[k]["noisy"]
            cells.append(f"{acc:.2f}" if p == "noisy" else f"{acc:.2f} ({delta:+.2f})")
        lines.append(f"| {p} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def worst_drop(accuracies, perturbations):
    """The largest drop (points) against `noisy` over the gain / silence / rate perturbations."""
    checked = [p for p in perturbations if p.split("_")[0] in ("gain", "lead", "trail", "both",
                                                                 "rate")
               and not p.endswith("_unchecked")]
    drops = {p: 100 * (accuracies["noisy"] - accuracies[p]) for p in checked}
    worst = max(drops, key=drops.get)
    return worst, drops[worst]


def plot(results, perturbations, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(results)
    x = np.arange(len(perturbations))
    width = 0.8 / len(keys)
    fig, ax = plt.subplots(figsize=(12, 4.5))
    for i, k in enumerate(keys):
        ax.bar(x + i * width - 0.4 + width / 2, [100 * results[k][p] for p in perturbations],
               width, label=k)
    ax.set_xticks(x, perturbations, rotation=30, ha="right")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title("AV-MNIST test split under audio perturbations (served WAV decoding)")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/audio_robustness")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--patience", type=int, default=5,
                        help="early stopping after this many epochs without a better "
                             "validation accuracy (0: train every epoch)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--max-test", type=int, default=None, help="first N test rows only")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an override for every training run (e.g. trainer.recipe=legacy)")
    parser.add_argument("--no-train", action="store_true",
                        help="score only the models already trained in --out (skip the others)")
    args = parser.parse_args(argv)

    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    per_seed = {}
    for seed in args.seeds:  # seed-major: every model and recipe of a seed before the next
        for model in args.models:
            for recipe in args.recipes:
                key, seed_dir = f"{model}/{recipe}", out / f"{model}-{recipe}" / f"seed{seed}"
                if args.no_train and not (seed_dir / "report.json").is_file():
                    _log(f"--no-train: skipping {key} seed {seed} (not trained in {out})")
                    continue
                model_dir = train(model, recipe, out, args.epochs, seed, args.set, args.patience)
                cached = model_dir / "robustness.json"  # the scores of this trained model
                scores = json.loads(cached.read_text()) if cached.is_file() else {}
                if scores.get("max_test") != args.max_test or set(
                        scores.get("accuracy", {})) != set(PERTURBATIONS):
                    scores = {"max_test": args.max_test,
                              "accuracy": evaluate(model_dir, PERTURBATIONS, args.max_test)}
                    cached.write_text(json.dumps(scores, indent=2))
                else:
                    _log(f"reusing the scores in {cached}")
                per_seed.setdefault(key, {})[seed] = scores["accuracy"]
    keys = [f"{m}/{r}" for m in args.models for r in args.recipes if f"{m}/{r}" in per_seed]
    results = {k: mean_over_seeds(per_seed[k]) for k in keys}
    seeds_of = {k: sorted(per_seed[k]) for k in keys}
    print(f"mean over seeds {seeds_of}")
    print(table(results, PERTURBATIONS))
    summary = {}
    for key, accuracies in results.items():
        worst, drop = worst_drop(accuracies, PERTURBATIONS)
        noisy = [100 * a["noisy"] for a in per_seed[key].values()]
        summary[key] = {"worst": worst, "drop_points": round(drop, 2),
                        "meets_target": drop <= TARGET_POINTS, "seeds": seeds_of[key],
                        "noisy_std": round(float(np.std(noisy)), 2)}
        print(f"{key}: worst gain/silence/rate perturbation {worst} costs {drop:.2f} points "
              f"(target <= {TARGET_POINTS})")
    payload = {"epochs": args.epochs, "patience": args.patience, "seeds": args.seeds,
               "sets": args.set, "recipes": {r: RECIPES[r] for r in args.recipes},
               "accuracy": results, "accuracy_per_seed": per_seed, "summary": summary}
    (out / "robustness.json").write_text(json.dumps(payload, indent=2))
    plot(results, PERTURBATIONS, out / "robustness.png")
    _log(f"wrote {out / 'robustness.json'} and {out / 'robustness.png'}")


if __name__ == "__main__":
    main()
