"""Train an image captioner (image encoder + Transformer decoder); report BLEU on the test split.

    python -m training.train_captioning --config training/configs/openmoji/captioning.yaml \
        --model-dir runs/captioning/openmoji [--set trainer.epochs=3 --set runtime.cpu_replicas=2]

Data: the image-text manifest (`image` paths, `text` captions) of `data`; on OpenMoji the
caption of an emoji is its annotation ("grinning face", "flag: Peru"), one reference per image.

Tokenisation: lower-case; runs of letters/digits are words and every other non-space
character (":", ",", "-", "’", ".") is a token of its own: "flag: St. Lucia" -> `flag : st .
lucia`. The vocabulary holds `<pad> <unk> <start> <end>` (ids 0-3), then the training-caption
words seen at least `captioning.min_count` times, most frequent first. It is written to
`DIR/caption_vocab.txt`, one token a line, the line number being the id. BLEU is computed on
these tokens (hypotheses and references alike).

Model: `mmkeras.models.Captioner` over `model.image_encoder` (built with
`return_sequence=True`, so the decoder cross-attends to the feature-map cells), trained with
teacher forcing and a per-token cross-entropy that ignores padding. Early stopping (if
`trainer.early_stopping_patience`) watches the validation loss and restores the best weights.

The model directory receives:

    DIR/config.yaml          the resolved config     DIR/model.keras    the trained captioner
    DIR/caption_vocab.txt    the vocabulary          DIR/history.csv    per-epoch losses
    DIR/report.json          the figures below       DIR/samples.md     captions of test images

`report.json` holds corpus BLEU-1..4 (unsmoothed, and smoothed with Chen & Cherry's method 1)
on the test split for greedy decoding and beam search, beside baselines on the same split:
the most frequent training caption, the best constant caption (the training caption with the
highest smoothed BLEU-4 on the validation split), and the caption of the nearest training
image in pixel space and in the trained encoder's embedding space. It also gives how many
test captions occur verbatim among the training captions and how many test reference tokens
are outside the vocabulary: OpenMoji's test emoji are emoji the model never saw, so many
captions are novel ("flag: Mozambique" cannot be guessed unless "mozambique" is a training
word).
"""

import collections
import pathlib
import re
import sys
import time

from mmkeras import errors

SPECIAL_TOKENS = ("<pad>", "<unk>", "<start>", "<end>")
PAD, UNK, START, END = range(4)
VOCAB_FILE = "caption_vocab.txt"
SAMPLES_FILE = "samples.md"
_TOKEN = re.compile(r"\w+|[^\w\s]")


def parse_args(argv=None):
    from training.cli import experiment_parser

    parser = experiment_parser(__doc__)
    return parser.parse_args(argv)


# Tokenisation and vocabulary ------------------------------------------------------------------


def tokenize(text):
    """Lower-cased word tokens; punctuation characters are tokens of their own."""
    return _TOKEN.findall(str(text).lower())


def build_vocabulary(captions, min_count=1):
    """Special tokens, then the words of `captions` seen `min_count`+ times (most frequent
    first, ties alphabetical)."""
    counts = collections.Counter(t for c in captions for t in tokenize(c))
    words = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
    return [*SPECIAL_TOKENS, *words]


def save_vocabulary(tokens, directory):
    """Writes `directory/caption_vocab.txt` (one token a line, atomically); returns its path."""
    path = pathlib.Path(directory) / VOCAB_FILE
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text("".join(f"{t}\n" for t in tokens), encoding="utf-8")
    tmp.replace(path)
    return path


def load_vocabulary(path):
    """The token list of a `caption_vocab.txt` (or of the one in a model directory)."""
    path = pathlib.Path(path)
    if path.is_dir():
        path = path / VOCAB_FILE
    return path.read_text(encoding="utf-8").splitlines()


def encode_captions(captions, vocabulary, max_words):
    """`(decoder_inputs, targets)` int32 `(n, max_words + 1)`: `<start> w..` and `w.. <end>`,
    padded with 0; unknown words -> `<unk>`."""
    import numpy as np

    index = {t: i for i, t in enumerate(vocabulary)}
    n, length = len(captions), int(max_words) + 1
    inputs = np.zeros((n, length), np.int32)
    targets = np.zeros((n, length), np.int32)
    for row, caption in enumerate(captions):
        ids = [index.get(t, UNK) for t in tokenize(caption)][: int(max_words)]
        inputs[row, : len(ids) + 1] = [START, *ids]
        targets[row, : len(ids) + 1] = [*ids, END]
    return inputs, targets


def ids_to_tokens(ids, vocabulary):
    return [vocabulary[i] for i in ids]


def detokenize(tokens):
    """Tokens -> a readable caption ("flag : peru" -> "flag: peru")."""
    text = " ".join(tokens)
    return re.sub(r" ([:,.!?’'])", r"\1", text).replace(" - ", "-")


# Data -----------------------------------------------------------------------------------------


def load_columns(config, dataset_dir):
    """`{split: columns}` of the image-text manifest (paths, captions, labels)."""
    from mmkeras.data import load_split

    return {
        split: load_split(dataset_dir, split, config.data, ["image", "text"],
                          config.model.num_classes)[0]
        for split in ("train", "validation", "test")
    }


def caption_dataset(paths, inputs, targets, data_config, training=False):
    """`({"image", "caption_tokens"}, targets)` batches (GLOBAL batch size)."""
    import tensorflow as tf

    from mmkeras.data.pipeline import decode_image
    from mmkeras.models.captioner import CAPTION_TOKENS

    shape = tuple(data_config.image_shape)

    def decode(path, tokens, target):
        return {"image": decode_image(path, tf.constant(1.0), shape), CAPTION_TOKENS: tokens}, target

    ds = tf.data.Dataset.from_tensor_slices((paths, inputs, targets))
    options = tf.data.Options()
    options.deterministic = bool(data_config.deterministic)
    ds = ds.with_options(options).map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    if data_config.cache:
        ds = ds.cache()
    if training and data_config.shuffle_buffer:
        ds = ds.shuffle(data_config.shuffle_buffer, seed=data_config.seed,
                        reshuffle_each_iteration=True)
    return ds.batch(data_config.batch_size).prefetch(tf.data.AUTOTUNE)


def load_images(paths, data_config):
    """All images of `paths` as one float32 numpy array `(n, h, w, c)` in [0, 1]."""
    import numpy as np
    import tensorflow as tf

    from mmkeras.data.pipeline import decode_image

    shape = tuple(data_config.image_shape)
    ds = tf.data.Dataset.from_tensor_slices(paths).map(
        lambda p: decode_image(p, tf.constant(1.0), shape), num_parallel_calls=tf.data.AUTOTUNE
    ).batch(256)
    return np.concatenate([np.asarray(b) for b in ds])


# Baselines and evaluation ---------------------------------------------------------------------


def bleu_row(hypotheses, references, epsilon=0.1):
    """BLEU-1..4 unsmoothed, and BLEU-4 smoothed (Chen & Cherry method 1)."""
    from mmkeras.metrics.bleu import bleu_scores
    from mmkeras.metrics.bleu import corpus_bleu

    row = {k: float(v) for k, v in bleu_scores(hypotheses, references).items()}
    row["bleu4_smoothed"] = float(
        corpus_bleu(hypotheses, references, smoothing="epsilon", epsilon=epsilon)["bleu"]
    )
    row["exact_match"] = float(
        sum(list(h) in [list(r) for r in refs] for h, refs in zip(hypotheses, references))
        / max(len(hypotheses), 1)
    )
    row["mean_length"] = float(sum(len(h) for h in hypotheses) / max(len(hypotheses), 1))
    return row


def most_frequent_caption(train_tokens):
    """The most frequent training caption (token tuple); ties: shortest, then alphabetical."""
    counts = collections.Counter(tuple(t) for t in train_tokens)
    return list(min(counts, key=lambda c: (-counts[c], len(c), c)))


def best_constant_caption(train_tokens, val_references, candidates=0, epsilon=0.1):
    """The training caption that, output for every image, scores the highest smoothed BLEU-4
    on the validation references: `(tokens, validation BLEU-4 smoothed)`."""
    from mmkeras.metrics.bleu import corpus_bleu

    counts = collections.Counter(tuple(t) for t in train_tokens)
    pool = sorted(counts, key=lambda c: (-counts[c], len(c), c))
    if candidates:
        pool = pool[: int(candidates)]
    best, best_score = None, -1.0
    for caption in pool:
        score = corpus_bleu([list(caption)] * len(val_references), val_references,
                            smoothing="epsilon", epsilon=epsilon)["bleu"]
        if score > best_score:
            best, best_score = list(caption), score
    return best, float(best_score)


def nearest_neighbour_captions(train_features, test_features, train_tokens, metric="l2"):
    """The caption of the closest training example (L2, or cosine) for each test example."""
    import numpy as np

    a = np.asarray(train_features, np.float64).reshape(len(train_features), -1)
    b = np.asarray(test_features, np.float64).reshape(len(test_features), -1)
    if metric == "cosine":
        a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
        b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
        nearest = (b @ a.T).argmax(axis=1)
    else:
        distances = (b**2).sum(1)[:, None] - 2 * b @ a.T + (a**2).sum(1)[None, :]
        nearest = distances.argmin(axis=1)
    return [list(train_tokens[i]) for i in nearest]


def encoder_embeddings(model, images, batch_size=256):
    """The trained image encoder's global embedding of `images` (numpy)."""
    import numpy as np

    from mmkeras import features

    out = []
    for begin in range(0, len(images), batch_size):
        output = model.image_encoder(images[begin:begin + batch_size], training=False)
        if isinstance(output, dict):
            output = output[features.EMBEDDING]
        out.append(np.asarray(output))
    return np.concatenate(out)


def sample_rows(n, count):
    """`count` evenly spaced indices of `n` rows (all rows if fewer)."""
    import numpy as np

    return sorted(set(np.linspace(0, n - 1, min(count, n)).round().astype(int).tolist()))


def write_samples(path, rows):
    lines = [
        "# Captions of test images (unseen emoji)",
        "",
        "| id | group | reference | greedy | beam | nearest neighbour (pixels) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['id']} | {r['group']} | {r['reference']} | {r['greedy']} | "
                     f"{r['beam']} | {r['nearest_pixels']} |")
    pathlib.Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


# Training -------------------------------------------------------------------------------------


def train(config, model_dir, fresh=False):
    """Trains `config` (a `CaptioningExperimentConfig`) into `model_dir`; returns the report."""
    from training.trainer import prepare_model_dir

    model_dir = prepare_model_dir(model_dir, fresh=fresh)

    from training import runtime

    strategy = runtime.setup(config)  # before TensorFlow runs anything
    import keras
    import numpy as np

    from mmkeras.configs import save_config
    from mmkeras.data.sources import dataset_dir_for
    from mmkeras.data.sources import dataset_info
    from mmkeras.encoders import encoder_from_config
    from mmkeras.models.captioner import Captioner
    from training.optimizers import make_optimizer

    runtime.set_determinism(config.runtime)
    replicas = strategy.num_replicas_in_sync
    save_config(config, model_dir / "config.yaml")
    cap = config.captioning

    dataset_dir = dataset_dir_for(config.data)
    info = dataset_info(dataset_dir)
    columns = load_columns(config, dataset_dir)
    vocabulary = build_vocabulary(columns["train"]["text"], cap.min_count)
    save_vocabulary(vocabulary, model_dir)
    encoded = {s: encode_captions(columns[s]["text"], vocabulary, cap.max_words) for s in columns}
    train_ds = caption_dataset(columns["train"]["image"], *encoded["train"], config.data,
                               training=True)
    val_ds = caption_dataset(columns["validation"]["image"], *encoded["validation"], config.data)

    with strategy.scope():
        encoder = encoder_from_config("image", config.model, config.data, return_sequence=True)
        model = Captioner(
            encoder,
            vocabulary_size=len(vocabulary),
            sequence_length=cap.max_words + 1,
            hidden_dim=cap.hidden_dim,
            num_layers=cap.num_layers,
            num_heads=cap.num_heads,
            intermediate_dim=cap.intermediate_dim,
            dropout=cap.dropout,
            start_id=START, end_id=END, pad_id=PAD, unk_id=UNK,
            name=config.model.name,
        )
        model.compile(
            optimizer=make_optimizer(config.trainer, replicas),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=PAD),
            jit_compile=runtime.resolve_jit_compile(config.runtime, strategy),
        )

    print(f"[train_captioning] {config.name}: {len(columns['train']['text'])} train / "
          f"{len(columns['validation']['text'])} validation / {len(columns['test']['text'])} "
          f"test images; vocabulary {len(vocabulary)} tokens (min_count {cap.min_count}); "
          f"{model.count_params():,} parameters; {replicas} replica(s) "
          f"({runtime.strategy_name(strategy)}), global batch {config.data.batch_size}",
          flush=True)
    callbacks = [keras.callbacks.CSVLogger(str(model_dir / "history.csv"))]
    if config.trainer.early_stopping_patience:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=config.trainer.early_stopping_patience,
            restore_best_weights=True,
        ))
    start = time.time()
    history = model.fit(
        train_ds, validation_data=val_ds, epochs=config.trainer.epochs,
        steps_per_epoch=config.trainer.steps_per_epoch, callbacks=callbacks,
        verbose=config.trainer.verbose,
    )
    fit_seconds = time.time() - start
    model.save(model_dir / "model.keras")
    losses = history.history
    epochs = len(losses.get("loss", []))
    best_epoch = int(np.argmin(losses["val_loss"])) + 1 if losses.get("val_loss") else epochs
    final = {k: float(v[-1]) for k, v in losses.items() if v}
    report = evaluate(config, model, vocabulary, columns, model_dir, info.get("classes"))
    report.update(
        epochs=epochs,
        best_epoch=best_epoch,
        final_epoch=final,
        best_val_loss=float(min(losses["val_loss"])) if losses.get("val_loss") else None,
        fit_seconds=round(fit_seconds, 1),
        replicas=replicas,
        strategy=runtime.strategy_name(strategy),
        parameters=int(model.count_params()),
        seed=config.trainer.seed,
        dataset={"dir": str(dataset_dir), "name": info.get("name"),
                 "recipe_version": info.get("recipe_version"), "checksum": info.get("checksum")},
    )
    from mmkeras.configs import to_dict
    from training import report as report_lib

    report["config"] = to_dict(config)
    report_lib.write_json(model_dir / "report.json", report)
    return report


def evaluate(config, model, vocabulary, columns, model_dir, classes=None):
    """BLEU of greedy and beam-search captions and of the baselines on the test split; writes
    the samples file. Returns the report's figures."""
    from mmkeras.models.captioner import beam_search_decode
    from mmkeras.models.captioner import greedy_decode

    cap = config.captioning
    eps = cap.smoothing_epsilon
    start = time.time()
    train_tokens = [tokenize(t) for t in columns["train"]["text"]]
    test_refs = [[tokenize(t)] for t in columns["test"]["text"]]
    val_refs = [[tokenize(t)] for t in columns["validation"]["text"]]
    test_images = load_images(columns["test"]["image"], config.data)
    train_images = load_images(columns["train"]["image"], config.data)

    t0 = time.time()
    greedy = [ids_to_tokens(c, vocabulary) for c in greedy_decode(
        model, test_images, batch_size=cap.decode_batch_size)]
    greedy_seconds = time.time() - t0
    t0 = time.time()
    beam = [ids_to_tokens(c, vocabulary) for c in beam_search_decode(
        model, test_images, beam_width=cap.beam_width, length_penalty=cap.length_penalty,
        batch_size=max(1, cap.decode_batch_size // cap.beam_width))]
    beam_seconds = time.time() - t0

    frequent = most_frequent_caption(train_tokens)
    constant, constant_val = best_constant_caption(
        train_tokens, val_refs, cap.constant_candidates, eps)
    nn_pixels = nearest_neighbour_captions(train_images, test_images, train_tokens, "l2")
    nn_embedding = nearest_neighbour_captions(
        encoder_embeddings(model, train_images), encoder_embeddings(model, test_images),
        train_tokens, "cosine")

    methods = {
        "greedy": bleu_row(greedy, test_refs, eps),
        f"beam{cap.beam_width}": bleu_row(beam, test_refs, eps),
    }
    baselines = {
        "most_frequent_caption": {"caption": detokenize(frequent),
                                  **bleu_row([frequent] * len(test_refs), test_refs, eps)},
        "best_constant_caption": {"caption": detokenize(constant),
                                  "validation_bleu4_smoothed": constant_val,
                                  **bleu_row([constant] * len(test_refs), test_refs, eps)},
        "nearest_neighbour_pixels": bleu_row(nn_pixels, test_refs, eps),
        "nearest_neighbour_embedding": bleu_row(nn_embedding, test_refs, eps),
    }
    vocab = set(vocabulary[4:])
    train_set = {tuple(t) for t in train_tokens}
    ref_tokens = [t for refs in test_refs for t in refs[0]]
    test_set = {
        "images": len(test_refs),
        "references_per_image": 1,
        "captions_seen_in_training": float(
            sum(tuple(r[0]) in train_set for r in test_refs) / max(len(test_refs), 1)),
        "reference_tokens_out_of_vocabulary": float(
            sum(t not in vocab for t in ref_tokens) / max(len(ref_tokens), 1)),
        "flag_captions": int(sum(r[0][:2] == ["flag", ":"] for r in test_refs)),
    }
    rows = []
    for i in sample_rows(len(test_refs), cap.samples):
        rows.append({
            "id": str(columns["test"]["id"][i]),
            "group": _group(columns["test"], i, classes),
            "reference": detokenize(test_refs[i][0]),
            "greedy": detokenize(greedy[i]),
            "beam": detokenize(beam[i]),
            "nearest_pixels": detokenize(nn_pixels[i]),
        })
    write_samples(model_dir / SAMPLES_FILE, rows)
    return {
        "experiment": config.name,
        "split": "test",
        "test_set": test_set,
        "vocabulary_size": len(vocabulary),
        "bleu": methods,
        "baselines": baselines,
        "bleu_note": (
            "corpus BLEU-n (uniform weights over 1..n-grams, brevity penalty over the corpus) "
            "on lower-cased word/punctuation tokens, one reference (the annotation) per image; "
            "bleu4_smoothed: Chen & Cherry method 1 (epsilon "
            f"{eps}); best constant caption chosen on the validation split"
        ),
        "decoding": {"beam_width": cap.beam_width, "length_penalty": cap.length_penalty,
                     "max_tokens": cap.max_words + 1, "greedy_seconds": round(greedy_seconds, 1),
                     "beam_seconds": round(beam_seconds, 1)},
        "samples": rows,
        "eval_seconds": round(time.time() - start, 1),
    }


def _group(columns, i, classes=None):
    """The class name of row `i` (from `dataset.json`), else its label id."""
    label = int(columns["label"][i])
    return classes[label] if classes and label < len(classes) else str(label)


def summary_lines(report):
    """A few human-readable lines of a report."""
    header = f"{'test split (' + str(report['test_set']['images']) + ' images)':40s} " \
             "BLEU-1 BLEU-2 BLEU-3 BLEU-4 | BLEU-4 sm. exact  len"
    lines = [header]

    def line(name, row):
        return (f"{name:40s} {row['bleu1']:6.3f} {row['bleu2']:6.3f} {row['bleu3']:6.3f} "
                f"{row['bleu4']:6.3f} | {row['bleu4_smoothed']:9.3f} {row['exact_match']:5.3f} "
                f"{row['mean_length']:4.1f}")

    for name, row in report["bleu"].items():
        lines.append(line(name.replace("beam", "beam search, width "), row))
    b = report["baselines"]
    lines.append(line(f"most frequent train caption \"{b['most_frequent_caption']['caption']}\"",
                      b["most_frequent_caption"]))
    lines.append(line(f"best constant caption \"{b['best_constant_caption']['caption']}\"",
                      b["best_constant_caption"]))
    lines.append(line("nearest train image (pixels)", b["nearest_neighbour_pixels"]))
    lines.append(line("nearest train image (encoder embedding)", b["nearest_neighbour_embedding"]))
    t = report["test_set"]
    lines.append(f"test captions seen verbatim in training: {t['captions_seen_in_training']:.3f}; "
                 f"reference tokens outside the vocabulary: "
                 f"{t['reference_tokens_out_of_vocabulary']:.3f}; flag captions: "
                 f"{t['flag_captions']}")
    lines.append(f"trained {report['epochs']} epochs (best {report['best_epoch']}) in "
                 f"{report['fit_seconds']:.0f} s; decoding: greedy "
                 f"{report['decoding']['greedy_seconds']:.0f} s, beam "
                 f"{report['decoding']['beam_seconds']:.0f} s")
    return lines


@errors.command_line
def main(argv=None):
    args = parse_args(argv)
    from mmkeras.configs.captioning_config import load_captioning_config
    from training.cli import run_experiment

    model_dir = pathlib.Path(args.model_dir)
    return run_experiment(
        args, load_captioning_config, lambda config: train(config, args.model_dir, fresh=args.fresh),
        lambda report: [*summary_lines(report), f"samples: {model_dir / SAMPLES_FILE}",
                        f"report: {model_dir / 'report.json'}"])


if __name__ == "__main__":
    sys.exit(main())
