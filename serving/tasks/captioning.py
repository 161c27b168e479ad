"""Captioning (a `Captioner`): greedy decoding inside the graph.

| signature      | inputs                  | outputs                                              |
|----------------|-------------------------|------------------------------------------------------|
| `generate`     | `image` f32 [B, h, w, c]| `token_ids` i32 [B, L]: the caption's ids, then the  |
|                |                         | padding id 0 after it (no `<start>`, no `<end>`);    |
|                |                         | `length` i32 [B]: its words; `caption` string [B]:   |
|                |                         | the words, detokenized as training's samples are     |
| `generate_ids` | `image`                 | `token_ids` and `length` only (TFLite)               |

`L` is the model's `sequence_length` (`captioning.max_words + 1`). Decoding is the library's
`greedy_decode`, unrolled: `L` steps, each running the decoder on the prefix so far (a static
loop, so every step has static shapes and converts to TFLite), the padding, start and unknown
ids never chosen, a caption that emitted `<end>` padded from there on. The words come from
the model directory's `caption_vocab.txt` (one token a line, the line number being the id),
which the SavedModel carries as an asset read by a lookup table. `generate` needs TensorFlow's
string ops (table lookup, join, regex), which TFLite's builtin ops do not have, so the TFLite
file holds `generate_ids`; map its ids to words with the same `caption_vocab.txt`.
"""

import pathlib
import re
import warnings

import numpy as np
import tensorflow as tf

from mmkeras import features
from mmkeras.models.captioner import greedy_decode
from serving.tasks import base

VOCAB_FILE = "caption_vocab.txt"  # written by the captioning training into the model directory
GENERATE = "generate"
GENERATE_IDS = "generate_ids"
TOKEN_IDS = "token_ids"
LENGTH = "length"
CAPTION = "caption"
# How training's `detokenize` joins tokens: no space before these, "a - b" -> "a-b".
_NO_SPACE_BEFORE = r" ([:,.!?’'])"


def load_vocabulary(model_dir):
    path = pathlib.Path(model_dir) / VOCAB_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: a captioning model directory holds "
                                "its vocabulary there (written by the captioning training).")
    return path.read_text(encoding="utf-8").splitlines()


def detokenize(tokens):
    return re.sub(_NO_SPACE_BEFORE, r"\1", " ".join(tokens)).replace(" - ", "-")


class CaptioningServing(base.TaskServing):
    task = "captioning"

    def __init__(self, config, model, model_dir):
        super().__init__(config, model, model_dir)
        self.vocabulary = load_vocabulary(model_dir)
        if len(self.vocabulary) != model.vocabulary_size:
            raise ValueError(
                f"{pathlib.Path(model_dir) / VOCAB_FILE} has {len(self.vocabulary)} tokens but "
                f"the model's vocabulary_size is {model.vocabulary_size}.")
        self._table = None

    def table(self):
        if self._table is None:
            initializer = tf.lookup.TextFileInitializer(
                str(pathlib.Path(self.model_dir) / VOCAB_FILE),
                tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER,
                tf.string, tf.lookup.TextFileIndex.WHOLE_LINE)
            self._table = tf.lookup.StaticHashTable(initializer, default_value="")
        return self._table

    def resources(self):
        return [self.table()]

    def _spec(self):
        return base.input_spec(self.model.image_encoder.inputs[0], features.IMAGE)

    def _generate_ids(self, images):
        model = self.model
        memory = model.encode(images, training=False)
        batch = tf.shape(images)[0]
        sequences = tf.fill(tf.stack([batch, 1]), tf.constant(model.start_id, tf.int32))
        finished = tf.zeros(tf.reshape(batch, [1]), tf.bool)
        suppressed = np.zeros(model.vocabulary_size, bool)
        suppressed[model.suppressed_ids()] = True
        suppressed = tf.constant(suppressed)
        pad = tf.constant(model.pad_id, tf.int32)
        for _ in range(model.sequence_length):
            with warnings.catch_warnings():
                # A one-token prefix attends over one step; Keras warns about the size-1 softmax.
                warnings.filterwarnings("ignore", message="You are using a softmax over axis")
                logits = model.decode(memory, sequences, training=False)[:, -1, :]
            log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)
            log_probs = tf.where(suppressed[None, :], tf.constant(-np.inf, tf.float32), log_probs)
            tokens = tf.argmax(log_probs, axis=-1, output_type=tf.int32)
            tokens = tf.where(finished, pad, tokens)
            sequences = tf.concat([sequences, tokens[:, None]], axis=1)
            finished = tf.logical_or(finished, tf.equal(tokens, model.end_id))
        generated = sequences[:, 1:]
        stop = tf.logical_or(tf.equal(generated, model.end_id), tf.equal(generated, pad))
        keep = tf.equal(tf.cumsum(tf.cast(stop, tf.int32), axis=1), 0)
        token_ids = tf.where(keep, generated, pad)
        return token_ids, tf.reduce_sum(tf.cast(keep, tf.int32), axis=1)

    def endpoints(self):
        spec = {features.IMAGE: self._spec()}

        def generate_ids(inputs):
            token_ids, length = self._generate_ids(inputs[features.IMAGE])
            return {TOKEN_IDS: token_ids, LENGTH: length}

        def generate(inputs):
            token_ids, length = self._generate_ids(inputs[features.IMAGE])
            words = self.table().lookup(tf.cast(token_ids, tf.int64))
            words = tf.RaggedTensor.from_tensor(words, lengths=length)
            text = tf.strings.reduce_join(words, axis=1, separator=" ")
            text = tf.strings.regex_replace(text, _NO_SPACE_BEFORE, r"\1")
            text = tf.strings.regex_replace(text, " - ", "-")
            return {TOKEN_IDS: token_ids, LENGTH: length, CAPTION: text}

        return [
            base.Endpoint(GENERATE, generate, spec, tflite=False,
                          why_not_tflite="string outputs: the vocabulary lookup, join and "
                                         "regex are TensorFlow string ops, not TFLite builtins"),
            base.Endpoint(GENERATE_IDS, generate_ids, spec),
        ]

    def check_rows(self, count=base.CHECK_EXAMPLES):
        rows = base.manifest_rows(self.config, count, modalities=[features.IMAGE])
        return {features.IMAGE: rows[features.IMAGE]}

    def reference(self, rows):
        """`greedy_decode` (the library's Python loop) and the vocabulary file, in Python."""
        model = self.model
        captions = greedy_decode(model, rows[features.IMAGE])
        token_ids = np.full((len(captions), model.sequence_length), model.pad_id, np.int32)
        for i, ids in enumerate(captions):
            token_ids[i, :len(ids)] = ids
        length = np.array([len(c) for c in captions], np.int32)
        text = np.array([detokenize([self.vocabulary[t] for t in c]).encode("utf-8")
                         for c in captions], dtype=object)
        ids = {TOKEN_IDS: token_ids, LENGTH: length}
        return {GENERATE: {**ids, CAPTION: text}, GENERATE_IDS: ids}
