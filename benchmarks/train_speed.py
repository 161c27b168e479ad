"""Training speed: the mmkeras early-fusion model vs the same model written in plain Keras.

    python -m benchmarks.train_speed [--steps 8] [--rounds 6] [--batch-size 64]
        [--replicas 1 2] [--no-xla] [--out runs/benchmarks/train_speed] [--set KEY=VALUE ...]

For each replica count (a separate process: logical CPU devices are fixed when TensorFlow
starts) and with / without XLA, `model.fit` trains on the same in-memory batches (real
AV-MNIST examples decoded once by the training pipeline) under the strategy the trainer
would use:

- `mmkeras`: `mmkeras.models.build_classifier` for `training/configs/avmnist/early_fusion.yaml`
  with the plain audio encoder (`model.audio_encoder.recipe=none`)
  (nested encoder models, `ConcatFusion` with presence flags, float32 output layer);
- `plain`: the same layers written by hand as one flat functional model (presence flags as a
  multiplication). Both have the same parameter count (checked).
- `recipe` (1 replica, no XLA; when the config's audio recipe differs): the same config as
  it is, i.e. the speech recipe's front end and training augmentations, on its own batches
  (the 3 s window); its step time against `mmkeras` is what the recipe costs.

The models alternate for `--rounds` rounds of `--steps` timed steps each (after a warm-up
that traces and compiles); a model's step time is its fastest round (the mean step time between
batch callbacks), the round least disturbed by other processes on a shared machine; the JSON
also keeps the medians and every round. `ratio` is mmkeras step time / plain step time (goal
<= 1.05). Scaling efficiency is samples/s with N replicas / (N x samples/s with 1 replica) at
the same global batch, where the 1-replica figure comes from a 1-replica strategy timed in the
same rounds of the N-replica process (logical CPU devices share one thread pool, so it runs
as in a 1-device process, but under the same load). XLA cannot span logical CPU devices (see
`training/runtime.py`), so it is measured with one replica only.

The input pipeline row times `mmkeras.data.make_dataset` on the training split alone (files
decoded every time: `data.cache=false`; and from the in-memory cache after a first pass),
against the 1-replica training step: its share is pipeline time per batch / step time (with
prefetching the two overlap, but on a CPU they share the same cores).

Prints a Markdown table and writes `OUT/train_speed.json` and `OUT/train_speed.md`.
"""

import argparse
import dataclasses
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG = REPO / "training" / "configs" / "avmnist" / "early_fusion.yaml"


def plain_keras_model(config):
    """The early-fusion classifier written directly in Keras, layer for layer."""
    import keras

    mc, dc = config.model, config.data
    image = keras.Input(shape=tuple(dc.image_shape), name="image")
    audio = keras.Input(shape=(dc.audio_samples,), name="audio")
    image_present = keras.Input(shape=(), name="image_present")
    audio_present = keras.Input(shape=(), name="audio_present")

    x = image
    for f in mc.image_encoder.filters:
        x = keras.layers.Conv2D(f, 3, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dropout(mc.image_encoder.dropout)(x)
    image_embedding = keras.layers.Dense(mc.image_encoder.embedding_dim, activation="relu")(x)

    ac = mc.audio_encoder
    a = keras.layers.MelSpectrogram(
        fft_length=ac.fft_length, sequence_stride=ac.sequence_stride,
        sampling_rate=ac.sample_rate, num_mel_bins=ac.num_mel_bins,
        max_freq=ac.sample_rate / 2, power_to_db=True,
    )(audio)
    a = keras.layers.Reshape((ac.num_mel_bins, -1, 1))(a)
    a = keras.layers.BatchNormalization()(a)
    for f in ac.filters:
        a = keras.layers.Conv2D(f, 3, padding="same", activation="relu")(a)
        a = keras.layers.MaxPooling2D(2)(a)
    a = keras.layers.Flatten()(a)
    a = keras.layers.Dropout(ac.dropout)(a)
    audio_embedding = keras.layers.Dense(ac.embedding_dim, activation="relu")(a)

    # A missing modality contributes zeros: multiply each embedding by its presence flag.
    masked = [
        keras.layers.Multiply()([embedding, keras.layers.Reshape((1,))(flag)])
        for embedding, flag in ((audio_embedding, audio_present), (image_embedding, image_present))
    ]
    h = keras.layers.Concatenate()(masked)
    for units in mc.head_units:
        h = keras.layers.Dense(units, activation="relu")(h)
    h = keras.layers.Dropout(mc.head_dropout)(h)
    out = keras.layers.Dense(mc.num_classes, activation="softmax", dtype="float32")(h)
    inputs = {"image": image, "audio": audio, "image_present": image_present,
              "audio_present": audio_present}
    return keras.Model(inputs, out, name="plain_early_fusion")


def _step_timer():
    """A callback: mean step time between the ends of the first and the last batch of a fit."""
    import keras

    class StepTimer(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.times = []

        def on_train_batch_end(self, batch, logs=None):
            self.times.append(time.perf_counter())

        def step_seconds(self):
            return (self.times[-1] - self.times[0]) / (len(self.times) - 1)

    return StepTimer()


def _in_memory_batches(config, columns, count):
    """`count` real batches from the training pipeline, as one repeating in-memory dataset."""
    import tensorflow as tf

    from mmkeras.data import make_dataset

    ds = make_dataset(columns, config.data, sorted(config.model.modalities), training=True,
                      repeat=True)
    batches = list(ds.take(count))
    stacked = tf.nest.map_structure(lambda *t: tf.stack(t), *batches)
    return tf.data.Dataset.from_tensor_slices(stacked).repeat()


def _pipeline_seconds(config, columns, batches):
    """Seconds per batch of the training pipeline alone: decoding, then from the cache."""
    from mmkeras.data import make_dataset

    modalities = sorted(config.model.modalities)
    result = {}
    for name, cache in (("decode", False), ("cached", True)):
        data_config = dataclasses.replace(config.data, cache=cache)
        it = iter(make_dataset(columns, data_config, modalities, training=True, repeat=True))
        epoch = max(1, len(columns["label"]) // data_config.batch_size)
        for _ in range(epoch + 1 if cache else 2):  # warm-up (cache: one full pass)
            next(it)
        start = time.perf_counter()
        for _ in range(batches):
            next(it)
        result[name] = (time.perf_counter() - start) / batches
    return result


def _compiled(model, config, strategy, xla, train_examples):
    """`model` compiled with the trainer's recipe (optimizer over the real epoch length, loss)."""
    import keras

    from training.losses import classification_loss
    from training.optimizers import make_optimizer
    from training.optimizers import steps_per_epoch

    model.compile(
        optimizer=make_optimizer(
            config.trainer, strategy.num_replicas_in_sync,
            steps_per_epoch(config.trainer, train_examples, config.data.batch_size), model=model),
        loss=classification_loss(config.trainer),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=xla,
    )
    return model


def _compiled_models(config, strategy, xla, train_examples):
    """`{"mmkeras": model, "plain": model}` built and compiled under `strategy` with the
    trainer's recipe (optimizer, schedule over the real epoch length, loss), traced."""
    from mmkeras.models import build_classifier

    models = {}
    with strategy.scope():
        for name, build in (("mmkeras", lambda: build_classifier(config.model, config.data)),
                            ("plain", lambda: plain_keras_model(config))):
            models[name] = _compiled(build(), config, strategy, xla, train_examples)
    params = {name: int(m.count_params()) for name, m in models.items()}
    if len(set(params.values())) != 1:
        raise RuntimeError(f"The plain model does not match the mmkeras model: {params}")
    return models


def _time_interleaved(models, data, steps, rounds):
    """Step seconds of each model, rounds alternating between them: `{key: [per round]}`.
    `data` is one dataset for all, or `{key: dataset}`."""
    data = data if isinstance(data, dict) else {key: data for key in models}
    for key, model in models.items():
        model.fit(data[key], epochs=1, steps_per_epoch=3, verbose=0)  # trace / compile
    times = {key: [] for key in models}
    for _ in range(rounds):
        for key, model in models.items():
            timer = _step_timer()
            model.fit(data[key], epochs=1, steps_per_epoch=steps + 1, verbose=0,
                      callbacks=[timer])
            times[key].append(timer.step_seconds())
    return times


def _summary(times, names):
    """Best (min over rounds: least disturbed by other processes) and median step seconds."""
    return {
        "step_seconds": {n: min(times[n]) for n in names},
        "step_seconds_median": {n: statistics.median(times[n]) for n in names},
        "step_seconds_all": {n: times[n] for n in names},
    }


def measure(args):
    """Runs in a child process with `args.replicas` replicas; returns its measurements.

    The 1-replica process also times XLA and the input pipeline. A process with N > 1
    replicas also times a 1-replica strategy (its first device) in the same rounds, so that
    the scaling efficiency compares runs made under the same load.
    """
    from mmkeras.configs import load_config
    from mmkeras.data import load_split
    from mmkeras.models import build_classifier
    from mmkeras.data.sources import dataset_dir_for
    from training import runtime

    n = args.replicas
    sets = [f"data.batch_size={args.batch_size}", f"runtime.cpu_replicas={n}"]
    # The framework comparison uses the plain audio encoder (the hand-written model has no
    # front end); the config's own audio recipe is timed beside it as `recipe`.
    config = load_config(CONFIG, [*sets, "model.audio_encoder.recipe=none", *args.set])
    recipe = load_config(CONFIG, [*sets, *args.set])
    strategy = runtime.make_strategy(config.runtime)  # splits the CPU first
    runtime.set_seed(config.trainer.seed)
    columns, _ = load_split(dataset_dir_for(config.data, verbose=False), "train", config.data,
                            config.model.modalities, config.model.num_classes)
    data = _in_memory_batches(config, columns, count=4)
    result = {"replicas": strategy.num_replicas_in_sync, "batch_size": args.batch_size,
              "train_examples": len(columns["label"]), "runs": {}}
    names = ("mmkeras", "plain")

    if n == 1:
        result["pipeline_seconds_per_batch"] = _pipeline_seconds(config, columns, args.steps)
        for xla in [False, True] if args.xla else [False]:
            models = _compiled_models(config, strategy, xla, result["train_examples"])
            batches = data
            if not xla and recipe.model.audio_encoder != config.model.audio_encoder:
                with strategy.scope():
                    models["recipe"] = _compiled(build_classifier(recipe.model, recipe.data),
                                                 recipe, strategy, xla,
                                                 result["train_examples"])
                batches = {"mmkeras": data, "plain": data,
                           "recipe": _in_memory_batches(recipe, columns, count=4)}
                result["recipe"] = recipe.model.audio_encoder.recipe
            times = _time_interleaved(models, batches, args.steps, args.rounds)
            result["runs"]["xla" if xla else "no_xla"] = _summary(times, list(models))
        result["parameters"] = int(models["mmkeras"].count_params())
        return result

    one = runtime.make_strategy(dataclasses.replace(config.runtime, cpu_replicas=1))
    models = {}
    for replicas, strat in ((n, strategy), (1, one)):
        for name, model in _compiled_models(config, strat, False, result["train_examples"]).items():
            models[(name, replicas)] = model
    times = _time_interleaved(models, data, args.steps, args.rounds)
    result["runs"]["no_xla"] = _summary({k[0]: v for k, v in times.items() if k[1] == n}, names)
    result["runs"]["no_xla_one_replica_control"] = _summary(
        {k[0]: v for k, v in times.items() if k[1] == 1}, names)
    return result


def _child(args, replicas, xla):
    cmd = [sys.executable, "-m", "benchmarks.train_speed", "--child", "--replicas", str(replicas),
           "--steps", str(args.steps), "--rounds", str(args.rounds),
           "--batch-size", str(args.batch_size), *(["--no-xla"] if not xla else []),
           *[x for s in args.set for x in ("--set", s)]]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO))
    print(f"[train_speed] {replicas} replica(s): measuring ...", flush=True)
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{cmd} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def _row(replicas, xla, name, step, batch_size, ratio="", efficiency=""):
    return (f"| {replicas} | {xla} | {name} | {step * 1000:.1f} | {1 / step:.2f} | "
            f"{batch_size / step:.0f} | {ratio} | {efficiency} |")


def table(results, batch_size):
    """The Markdown tables of `results` (one entry per replica count)."""
    rows = [
        "| replicas | XLA | model | step (ms) | steps/s | samples/s | mmkeras / plain step time "
        "| scaling efficiency |",
        "|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        n = r["replicas"]
        runs = r["runs"]
        order = [("no_xla", "no"), ("xla", "yes")] if n == 1 else [
            ("no_xla_one_replica_control", "no"), ("no_xla", "no")]
        for mode, xla in order:
            if mode not in runs:  # --no-xla
                continue
            step = runs[mode]["step_seconds"]
            ratio = f"{step['mmkeras'] / step['plain']:.3f}"
            label = f"1 (in the {n}-replica process)" if mode.endswith("control") else n
            for name in ("mmkeras", "plain", "recipe"):
                if name not in step:
                    continue
                if name == "recipe":
                    rows.append(_row(label, xla, f"mmkeras, `{r['recipe']}` audio recipe",
                                     step[name], batch_size,
                                     f"{step['recipe'] / step['mmkeras']:.3f} (vs mmkeras)"))
                    continue
                efficiency = ""
                if mode == "no_xla" and n > 1:
                    control = runs["no_xla_one_replica_control"]["step_seconds"][name]
                    efficiency = f"{control / (n * step[name]):.0%}"
                rows.append(_row(label, xla, name, step[name], batch_size,
                                 ratio if name == "mmkeras" else "", efficiency))
        if n > 1 and any("xla" in q["runs"] for q in results):
            rows.append(f"| {n} | yes | both | n/a: XLA cannot span logical CPU devices "
                        "| | | | |")
    one = next((r for r in results if r["replicas"] == 1), None)
    if one and "pipeline_seconds_per_batch" in one:
        pipe = one["pipeline_seconds_per_batch"]
        step = one["runs"]["no_xla"]["step_seconds"]["mmkeras"]
        rows += [
            "",
            "| input pipeline alone (training split) | ms / batch | samples/s "
            "| share of the 1-replica mmkeras step |",
            "|---|---:|---:|---:|",
        ]
        for name, label in (("decode", "decoding files (cache off)"),
                            ("cached", "from the in-memory cache")):
            rows.append(f"| {label} | {pipe[name] * 1000:.1f} | {batch_size / pipe[name]:.0f} | "
                        f"{pipe[name] / step:.0%} |")
    return "\n".join(rows)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.train_speed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=6,
                        help="rounds alternating between the models; the fastest counts")
    parser.add_argument("--batch-size", type=int, default=64, help="global batch size")
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2],
                        help="replica counts (logical CPU devices or GPUs), one process each")
    parser.add_argument("--no-xla", dest="xla", action="store_false", help="skip the XLA runs")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for both models (e.g. data.data_dir=...)")
    parser.add_argument("--out", default="runs/benchmarks/train_speed")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        (args.replicas,) = args.replicas
        print("RESULT " + json.dumps(measure(args)), flush=True)
        return 0
    start = time.time()
    results = [_child(args, n, args.xla) for n in args.replicas]
    text = table(results, args.batch_size)
    header = (f"Early-fusion AV-MNIST model, global batch {args.batch_size}, {args.steps} steps x "
              f"{args.rounds} rounds per model, {os.cpu_count()} CPU cores, "
              f"{time.time() - start:.0f}s in all.")
    print()
    print(header)
    print()
    print(text)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_speed.json").write_text(json.dumps(
        {"batch_size": args.batch_size, "steps": args.steps, "rounds": args.rounds,
         "cpu_cores": os.cpu_count(), "results": results}, indent=2))
    (out / "train_speed.md").write_text(header + "\n\n" + text + "\n")
    print(f"\nwrote {out / 'train_speed.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
