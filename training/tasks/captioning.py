"""Image captioning: `mmkeras.models.Captioner` (image encoder + Transformer decoder).

    python -m training.train --config training/configs/openmoji/captioning.yaml \
        --model-dir runs/captioning/openmoji [--set trainer.epochs=3 --set runtime.cpu_replicas=2]

Data: the image-text manifest (`image` paths, `text` captions) of `data`; on OpenMoji the
caption of an emoji is its annotation ("grinning face", "flag: Peru"), one reference per image.
The vocabulary (`mmkeras.data.caption_vocabulary`) is built from the training captions
(`captioning.min_count`) and saved as `DIR/caption_vocab.txt`; `--evaluate-only` reloads it.
BLEU is computed on its tokens (hypotheses and references alike).

Model: `model.image_encoder` built with `return_sequence=True` (the decoder cross-attends to
the feature-map cells), trained with teacher forcing and a per-token cross-entropy that
ignores padding. The best checkpoint (the model of record) and early stopping follow the
validation loss (see `CaptioningTask.monitor`).

`report.json` holds, beside the driver's common fields, corpus BLEU-1..4 (unsmoothed, and
smoothed with Chen & Cherry's method 1) on the test split for greedy decoding and beam search
(`bleu`), and `baselines` on the same split (`mmkeras.metrics.captioning`): the most frequent
training caption, the best constant caption (chosen on the validation split), and the caption
of the nearest training image in pixel space and in the trained encoder's embedding space;
`test_set` gives how many test captions occur verbatim among the training captions and how
many test reference tokens are outside the vocabulary. `DIR/samples.md` shows captions of a
few test images.
"""

import dataclasses
import pathlib
import time

import keras
import numpy as np

from mmkeras import features
from mmkeras import model_dir as model_dir_lib
from mmkeras.data import caption_vocabulary as vocab_lib
from mmkeras.data import load_split
from mmkeras.data.caption_pipeline import caption_dataset
from mmkeras.data.caption_pipeline import load_images
from mmkeras.data.sources import dataset_dir_for
from mmkeras.data.sources import dataset_info
from mmkeras.encoders import encoder_from_config
from mmkeras.metrics import captioning as caption_metrics
from mmkeras.models.captioner import Captioner
from mmkeras.models.captioner import beam_search_decode
from mmkeras.models.captioner import greedy_decode
from training import report as report_lib
from training import runtime
from training.tasks.base import recipe_hparams
from training.tasks.base import Task
from training.tasks.registry import register

SPLITS = ("train", "validation", "test")
SAMPLES_FILE = "samples.md"


@dataclasses.dataclass
class CaptioningData:
    """The image-text manifest's splits, the vocabulary and the encoded captions."""

    dataset_dir: pathlib.Path
    info: dict
    splits: dict  # {split: (columns, ManifestReport)}
    vocabulary: list
    encoded: dict  # {split: (decoder_inputs, targets)}

    def columns(self, split):
        return self.splits[split][0]

    def size(self, split):
        return len(self.columns(split)["text"])


def encoder_embeddings(model, images, batch_size=256):
    """The trained image encoder's global embedding of `images` (numpy)."""
    out = []
    for begin in range(0, len(images), batch_size):
        output = model.image_encoder(images[begin:begin + batch_size], training=False)
        if isinstance(output, dict):
            output = output[features.EMBEDDING]
        out.append(np.asarray(output))
    return np.concatenate(out)


def sample_rows(n, count):
    """`count` evenly spaced indices of `n` rows (all rows if fewer)."""
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
    model_dir_lib.write_text(path, "\n".join(lines) + "\n")


def _group(columns, i, classes=None):
    """The class name of row `i` (from `dataset.json`), else its label id."""
    label = int(columns["label"][i])
    return classes[label] if classes and label < len(classes) else str(label)


def evaluate_captions(config, model, data, model_dir):
    """BLEU of greedy and beam-search captions and of the baselines on the test split; writes
    the samples file. Returns the report's figures."""
    cap = config.captioning
    eps = cap.smoothing_epsilon
    vocabulary = data.vocabulary
    columns = {split: data.columns(split) for split in SPLITS}
    start = time.time()
    train_tokens = [vocab_lib.tokenize(t) for t in columns["train"]["text"]]
    test_refs = [[vocab_lib.tokenize(t)] for t in columns["test"]["text"]]
    val_refs = [[vocab_lib.tokenize(t)] for t in columns["validation"]["text"]]
    test_images = load_images(columns["test"]["image"], config.data)
    train_images = load_images(columns["train"]["image"], config.data)

    t0 = time.time()
    greedy = [vocab_lib.ids_to_tokens(c, vocabulary) for c in greedy_decode(
        model, test_images, batch_size=cap.decode_batch_size)]
    greedy_seconds = time.time() - t0
    t0 = time.time()
    beam = [vocab_lib.ids_to_tokens(c, vocabulary) for c in beam_search_decode(
        model, test_images, beam_width=cap.beam_width, length_penalty=cap.length_penalty,
        batch_size=max(1, cap.decode_batch_size // cap.beam_width))]
    beam_seconds = time.time() - t0

    frequent = caption_metrics.most_frequent_caption(train_tokens)
    constant, constant_val = caption_metrics.best_constant_caption(
        train_tokens, val_refs, cap.constant_candidates, eps)
    nn_pixels = caption_metrics.nearest_neighbour_captions(
        train_images, test_images, train_tokens, "l2")
    nn_embedding = caption_metrics.nearest_neighbour_captions(
        encoder_embeddings(model, train_images), encoder_embeddings(model, test_images),
        train_tokens, "cosine")

    bleu_row = caption_metrics.bleu_row
    methods = {
        "greedy": bleu_row(greedy, test_refs, eps),
        f"beam{cap.beam_width}": bleu_row(beam, test_refs, eps),
    }
    baselines = {
        "most_frequent_caption": {"caption": vocab_lib.detokenize(frequent),
                                  **bleu_row([frequent] * len(test_refs), test_refs, eps)},
        "best_constant_caption": {"caption": vocab_lib.detokenize(constant),
                                  "validation_bleu4_smoothed": constant_val,
                                  **bleu_row([constant] * len(test_refs), test_refs, eps)},
        "nearest_neighbour_pixels": bleu_row(nn_pixels, test_refs, eps),
        "nearest_neighbour_embedding": bleu_row(nn_embedding, test_refs, eps),
    }
    words = set(vocabulary[len(vocab_lib.SPECIAL_TOKENS):])
    train_set = {tuple(t) for t in train_tokens}
    ref_tokens = [t for refs in test_refs for t in refs[0]]
    test_set = {
        "images": len(test_refs),
        "references_per_image": 1,
        "captions_seen_in_training": float(
            sum(tuple(r[0]) in train_set for r in test_refs) / max(len(test_refs), 1)),
        "reference_tokens_out_of_vocabulary": float(
            sum(t not in words for t in ref_tokens) / max(len(ref_tokens), 1)),
        "flag_captions": int(sum(r[0][:2] == ["flag", ":"] for r in test_refs)),
    }
    rows = []
    for i in sample_rows(len(test_refs), cap.samples):
        rows.append({
            "id": str(columns["test"]["id"][i]),
            "group": _group(columns["test"], i, data.info.get("classes")),
            "reference": vocab_lib.detokenize(test_refs[i][0]),
            "greedy": vocab_lib.detokenize(greedy[i]),
            "beam": vocab_lib.detokenize(beam[i]),
            "nearest_pixels": vocab_lib.detokenize(nn_pixels[i]),
        })
    write_samples(pathlib.Path(model_dir) / SAMPLES_FILE, rows)
    return {
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


def bleu_lines(report):
    """The BLEU table of a report, one line per decoder and baseline."""
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
    d = report["decoding"]
    lines.append(f"decoding: greedy {d['greedy_seconds']:.0f} s, beam {d['beam_seconds']:.0f} s")
    return lines


@register
class CaptioningTask(Task):
    """A captioner trained with teacher forcing; BLEU against constant and nearest-neighbour
    baselines."""

    name = "captioning"

    def load_data(self, config, model_dir, evaluate_only=False):
        dataset_dir = dataset_dir_for(config.data)
        splits = {
            split: load_split(dataset_dir, split, config.data, ["image", "text"],
                              config.model.num_classes)
            for split in SPLITS
        }
        for split, (columns, rep) in splits.items():
            if rep.skipped or rep.masked or rep.unknown_split:
                print(f"[data] {split}: skipped {rep.skipped} rows, masked {rep.masked}, "
                      f"{rep.unknown_split} rows with an unknown split; "
                      f"first problems: {rep.problems[:3]}")
        cap = config.captioning
        if evaluate_only:
            vocabulary = vocab_lib.load_vocabulary(model_dir)
        else:
            vocabulary = vocab_lib.build_vocabulary(splits["train"][0]["text"], cap.min_count)
        encoded = {split: vocab_lib.encode_captions(columns["text"], vocabulary, cap.max_words)
                   for split, (columns, _) in splits.items()}
        return CaptioningData(dataset_dir=pathlib.Path(dataset_dir),
                              info=dataset_info(dataset_dir), splits=splits,
                              vocabulary=vocabulary, encoded=encoded)

    def save_data_state(self, data, model_dir):
        vocab_lib.save_vocabulary(data.vocabulary, model_dir)

    def fit_datasets(self, config, data):
        train_ds = caption_dataset(data.columns("train")["image"], *data.encoded["train"],
                                   config.data, training=True)
        val_ds = caption_dataset(data.columns("validation")["image"],
                                 *data.encoded["validation"], config.data)
        return train_ds, val_ds

    def build_model(self, config, data, strategy):
        cap = config.captioning
        encoder = encoder_from_config("image", config.model, config.data, return_sequence=True)
        model = Captioner(
            encoder,
            vocabulary_size=len(data.vocabulary),
            sequence_length=cap.max_words + 1,
            hidden_dim=cap.hidden_dim,
            num_layers=cap.num_layers,
            num_heads=cap.num_heads,
            intermediate_dim=cap.intermediate_dim,
            dropout=cap.dropout,
            start_id=vocab_lib.START, end_id=vocab_lib.END, pad_id=vocab_lib.PAD,
            unk_id=vocab_lib.UNK,
            name=config.model.name,
        )
        model.compile(
            optimizer=self.optimizer(config, data, strategy, model),
            loss=keras.losses.SparseCategoricalCrossentropy(
                from_logits=True, ignore_class=vocab_lib.PAD),
            jit_compile=runtime.resolve_jit_compile(config.runtime, strategy),
        )
        return model

    def monitor(self, config):
        # The validation loss (per-token cross-entropy over non-padding tokens), as the old
        # script's early stopping with `restore_best_weights`: token accuracy under teacher
        # forcing rewards the frequent tokens (":", "flag", "face") that every caption of a
        # group shares, and is not compiled as a metric.
        return "val_loss", "min"

    def hparams(self, config):
        cap = config.captioning
        return {
            "task": config.task,
            "model.image_encoder.type": config.model.image_encoder.type,
            "captioning.hidden_dim": cap.hidden_dim,
            "captioning.num_layers": cap.num_layers,
            "captioning.min_count": cap.min_count,
            "captioning.dropout": cap.dropout,
            **recipe_hparams(config),
            "runtime.cpu_replicas": config.runtime.cpu_replicas,
        }

    def data_size(self, data, split):
        return data.size(split)

    def data_problems(self, data):
        return {split: rep.as_dict() for split, (_, rep) in data.splits.items()}

    def dataset_summary(self, data):
        info = data.info
        return {"dir": str(data.dataset_dir), "name": info.get("name"),
                "recipe_version": info.get("recipe_version"), "checksum": info.get("checksum")}

    def evaluate(self, config, model_dir, model, data, strategy):
        history = report_lib.read_history(pathlib.Path(model_dir) / "history.csv")
        val_loss = history.get("val_loss")
        result = evaluate_captions(config, model, data, model_dir)
        result.update(
            best_epoch=int(np.nanargmin(val_loss)) + 1 if val_loss else None,
            best_val_loss=float(np.nanmin(val_loss)) if val_loss else None,
            final_epoch={k: float(v[-1]) for k, v in history.items() if v and k != "epoch"},
        )
        print(f"[train] vocabulary {len(data.vocabulary)} tokens "
              f"(min_count {config.captioning.min_count})")
        for line in bleu_lines(result):
            print(line)
        print(f"samples: {pathlib.Path(model_dir) / SAMPLES_FILE}")
        return result

    def summary_lines(self, report):
        greedy = report["bleu"]["greedy"]
        return [f"greedy BLEU-1 {greedy['bleu1']:.3f}, BLEU-4 {greedy['bleu4']:.3f} "
                f"(best epoch {report['best_epoch']})"]
