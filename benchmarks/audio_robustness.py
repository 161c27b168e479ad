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
| `voices_tts`     | not an FSDD clip: the 720 new-voice clips of                         |
|                  | `mmkeras.datasets.tts_digits` (eSpeak NG: 6 English accents x 6      |
|                  | variants x 2 speeds x 10 digits, 8 kHz), as spoken                   |
| `voices_tts_noisy` | the same with the dataset's white noise (`avmnist.add_noise` at the |
|                  | config's `data.snr_db`, -6 dB, seeded per clip)                      |

The `voices_*` rows measure voices that neither training nor the test split holds (issue #18:
FSDD has a few speakers, shared by every split). They score the TTS clips, not the test split's
rows (compare `voices_tts_noisy` with `noisy` and `voices_tts` with `clean`), and are not part
of the gain / silence / rate target. Early fusion pairs the k-th clip of a digit with the
image of the k-th test row of that digit, in manifest order (the dataset's seeded pair order;
72 clips per digit against 173-225 test rows, so each image is used once; with `--max-test`
the rows cycle). The TTS set is
prepared on first use under the data root (`$MMKERAS_DATA`), and each model's per-accent,
per-variant and per-speed accuracy on it is printed too.

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

from mmkeras.datasets import avmnist
from mmkeras.datasets import tts_digits

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
    "voices_tts", "voices_tts_noisy",
)
VOICE_PERTURBATIONS = ("voices_tts", "voices_tts_noisy")  # new voices: the TTS clips
VOICE_GROUPS = ("voice", "variant", "speed")  # manifest columns of the per-group accuracies
TTS_NOISE_STREAM = 5  # after avmnist's four random streams, so no FSDD clip's noise recurs
TARGET_POINTS = 5.0  # issue #18: no gain / silence / rate perturbation costs audio-only more
VOICES_NOTE = ("new voices (eSpeak NG clips, not the test split; compare with noisy and clean), "
               "not part of the gain/silence/rate target.")


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


def model_inputs(model, directory, rows):
    """The model's inputs other than `audio` for `rows`: their images (when it takes one) and
    every `*_present` flag at 1."""
    from PIL import Image

    inputs = {}
    names = [t.name for t in model.inputs]
    if "image" in names:
        inputs["image"] = np.stack([
            np.asarray(Image.open(directory / r["image"]), np.float32)[..., None] / 255.0
            for r in rows])
    for name in names:
        if name.endswith("_present"):
            inputs[name] = np.ones(len(rows), np.float32)
    return inputs


def predict(model, inputs, audio):
    """The predicted digit of each example."""
    probabilities = model.predict({**inputs, "audio": audio}, batch_size=250, verbose=0)
    return np.argmax(probabilities, -1)


def voice_clips(config, rows):
    """The new-voice clips and the test row each is paired with (for its image).

    Prepares `mmkeras.datasets.tts_digits` (its default grid) under the config's data root on
    first use. The k-th clip of a digit (manifest order) takes the k-th test row of that digit
    (manifest order: the dataset's seeded pair order), cycling when `rows` has fewer.

    Returns:
        `(clips, paired rows, TTS dataset directory)`: manifest rows of both datasets.
    """
    directory = tts_digits.prepare(data_root=config.data.data_root, verbose=False)
    with open(directory / "manifest.csv") as f:
        clips = list(csv.DictReader(f))
    of_digit, used, paired = {}, {}, []
    for r in rows:
        of_digit.setdefault(int(r["label"]), []).append(r)
    for clip in clips:
        digit = int(clip["label"])
        k = used[digit] = used.get(digit, -1) + 1
        paired.append(of_digit[digit][k % len(of_digit[digit])])
    return clips, paired, directory


def voice_recording(name, samples, index, data):
    """The TTS clip number `index` under `name`: as spoken (`voices_tts`) or with the dataset's
    white noise at `data.snr_db`, seeded by `data.seed` and the clip (`voices_tts_noisy`)."""
    if name == "voices_tts":
        return samples
    rng = np.random.default_rng([data.seed, TTS_NOISE_STREAM, index])
    return avmnist.add_noise(samples, data.snr_db, rng)[0]


def evaluate_voices(model, config, rows, directory, names):
    """Accuracy of `model` on the new-voice clips under each of `names` (`VOICE_PERTURBATIONS`).

    Returns:
        `({name: accuracy}, {name: {group: {value: accuracy}}, "tts_checksum": ...})`, the
        groups being the TTS manifest's `VOICE_GROUPS` columns.
    """
    clips, paired, tts_dir = voice_clips(config, rows)
    labels = np.array([int(c["label"]) for c in clips])
    inputs = model_inputs(model, directory, paired)
    spoken = [read_wav(tts_dir / c["path"]) for c in clips]
    result = {}
    with open(tts_dir / "dataset.json") as f:
        breakdown = {"tts_checksum": json.load(f)["checksum"]}
    for name in names:
        wavs = [wav_bytes(voice_recording(name, s, i, config.data), RATE)
                for i, s in enumerate(spoken)]
        correct = predict(model, inputs, decode(wavs, config.data.audio_samples)) == labels
        result[name] = float(np.mean(correct))
        breakdown[name] = {
            group: {value: float(np.mean(correct[[c[group] == value for c in clips]]))
                    for value in dict.fromkeys(c[group] for c in clips)}
            for group in VOICE_GROUPS}
    return result, breakdown


def evaluate(model_dir, perturbations, max_rows=None):
    """`({perturbation: test accuracy}, new-voice breakdown)` of the model in `model_dir`
    (the breakdown is `evaluate_voices`'s, empty without a `voices_*` perturbation)."""
    from mmkeras import model_dir as model_dir_lib

    config, model = model_dir_lib.load_model_dir(model_dir)
    rows, directory = test_rows(config, max_rows)
    labels = np.array([int(r["label"]) for r in rows])
    clips = sorted({r["audio"] for r in rows})
    index = np.array([clips.index(r["audio"]) for r in rows])
    clean_of = clean_clips(config.data.data_root)
    noisy = {c: read_wav(directory / c) for c in clips}
    clean = {c: clean_of(int(pathlib.Path(c).stem.split("-")[1])) for c in clips}
    inputs = model_inputs(model, directory, rows)
    num_samples = config.data.audio_samples
    run = pathlib.Path(model_dir)
    result = {}
    for name in [p for p in perturbations if p not in VOICE_PERTURBATIONS]:
        wavs = [wav_bytes(*perturb(name, noisy[c], clean[c])) for c in clips]
        audio = decode(wavs, num_samples, not name.endswith("_unchecked"))[index]
        result[name] = float(np.mean(predict(model, inputs, audio) == labels))
        _log(f"{run.parent.name}/{run.name} {name}: {100 * result[name]:.2f}%")
    voices, breakdown = [p for p in perturbations if p in VOICE_PERTURBATIONS], {}
    if voices:
        accuracy, breakdown = evaluate_voices(model, config, rows, directory, voices)
        for name in voices:
            result[name] = accuracy[name]
            _log(f"{run.parent.name}/{run.name} {name}: {100 * result[name]:.2f}%")
    return result, breakdown


def scores_of(model_dir, max_test):
    """The model's scores, `{"max_test", "accuracy", "voices"}`, kept in `robustness.json` in
    its directory: reused where they hold a perturbation at this `max_test`, computed for the
    perturbations they lack (a model scored before the `voices_*` rows gets only those)."""
    cached = pathlib.Path(model_dir) / "robustness.json"
    scores = json.loads(cached.read_text()) if cached.is_file() else {}
    if "accuracy" not in scores or scores.get("max_test") != max_test:
        scores = {"max_test": max_test, "accuracy": {}}
    have, voices = scores["accuracy"], scores.get("voices", {})
    missing = [p for p in PERTURBATIONS
               if p not in have or (p in VOICE_PERTURBATIONS and p not in voices)]
    if not missing:
        _log(f"reusing the scores in {cached}")
        return scores
    if len(missing) < len(PERTURBATIONS):
        _log(f"reusing the scores in {cached}; scoring {', '.join(missing)}")
    accuracy, breakdown = evaluate(model_dir, missing, max_test)
    scores["accuracy"] = {p: {**have, **accuracy}[p] for p in PERTURBATIONS}
    scores["voices"] = {**voices, **breakdown}
    cached.write_text(json.dumps(scores, indent=2))
    return scores


def mean_over_seeds(per_seed):
    """`{perturbation: mean accuracy}` of `{seed: {perturbation: accuracy}}`."""
    runs = list(per_seed.values())
    return {p: float(np.mean([r[p] for r in runs])) for p in runs[0]}


def voice_groups_over_seeds(per_seed):
    """`{name: {group: {value: mean accuracy}}}` of `{seed: evaluate_voices breakdown}`."""
    runs = list(per_seed.values())
    return {name: {group: {value: float(np.mean([r[name][group][value] for r in runs]))
                           for value in values}
                   for group, values in runs[0][name].items()}
            for name in VOICE_PERTURBATIONS}


def voice_table(voices):
    """Markdown: one row per accent, variant and speed of the TTS clips, two columns (as
    spoken, with noise) per model/recipe."""
    keys = list(voices)
    short = {"voices_tts": "tts", "voices_tts_noisy": "tts+noise"}
    lines = ["| group | " + " | ".join(f"{k} {short[n]}" for k in keys
                                         for n in VOICE_PERTURBATIONS) + " |",
             "|---|" + "---:|" * (len(keys) * len(VOICE_PERTURBATIONS))]
    first = voices[keys[0]][VOICE_PERTURBATIONS[0]]
    for group in VOICE_GROUPS:
        for value in first[group]:
            cells = [f"{100 * voices[k][n][group][value]:.2f}" for k in keys
                     for n in VOICE_PERTURBATIONS]
            lines.append(f"| {group} {value} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


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
    per_seed, voices_per_seed = {}, {}
    for seed in args.seeds:  # seed-major: every model and recipe of a seed before the next
        for model in args.models:
            for recipe in args.recipes:
                key, seed_dir = f"{model}/{recipe}", out / f"{model}-{recipe}" / f"seed{seed}"
                if args.no_train and not (seed_dir / "report.json").is_file():
                    _log(f"--no-train: skipping {key} seed {seed} (not trained in {out})")
                    continue
                model_dir = train(model, recipe, out, args.epochs, seed, args.set, args.patience)
                scores = scores_of(model_dir, args.max_test)
                per_seed.setdefault(key, {})[seed] = scores["accuracy"]
                voices_per_seed.setdefault(key, {})[seed] = scores["voices"]
    keys = [f"{m}/{r}" for m in args.models for r in args.recipes if f"{m}/{r}" in per_seed]
    results = {k: mean_over_seeds(per_seed[k]) for k in keys}
    voices = {k: voice_groups_over_seeds(voices_per_seed[k]) for k in keys}
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
    if keys:
        checksums = {v["tts_checksum"] for k in keys for v in voices_per_seed[k].values()}
        print(f"voices_tts / voices_tts_noisy: {VOICES_NOTE} TTS set checksum "
              f"{', '.join(sorted(checksums))}. Accuracy (%) per group, mean over seeds:")
        print(voice_table(voices))
    payload = {"epochs": args.epochs, "patience": args.patience, "seeds": args.seeds,
               "sets": args.set, "recipes": {r: RECIPES[r] for r in args.recipes},
               "accuracy": results, "accuracy_per_seed": per_seed, "summary": summary,
               "voices": voices, "voices_per_seed": voices_per_seed}
    (out / "robustness.json").write_text(json.dumps(payload, indent=2))
    plot(results, PERTURBATIONS, out / "robustness.png")
    _log(f"wrote {out / 'robustness.json'} and {out / 'robustness.png'}")


if __name__ == "__main__":
    main()
