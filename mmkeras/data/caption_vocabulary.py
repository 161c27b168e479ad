"""The caption vocabulary of a captioner: tokenisation, the token list, and its file.

Tokenisation: lower-case; runs of letters/digits are words and every other non-space
character (":", ",", "-", "’", ".") is a token of its own: "flag: St. Lucia" -> `flag : st .
lucia`. The vocabulary holds `<pad> <unk> <start> <end>` (ids 0-3), then the training-caption
words seen at least `min_count` times, most frequent first (ties alphabetical). It is saved as
`caption_vocab.txt` in the model directory, one token a line, the line number being the id.
"""

import collections
import pathlib
import re

import numpy as np

from mmkeras import model_dir as model_dir_lib

SPECIAL_TOKENS = ("<pad>", "<unk>", "<start>", "<end>")
PAD, UNK, START, END = range(4)
VOCAB_FILE = "caption_vocab.txt"
_TOKEN = re.compile(r"\w+|[^\w\s]")


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
    model_dir_lib.write_text(path, "".join(f"{t}\n" for t in tokens))
    return path


def load_vocabulary(path):
    """The token list of a `caption_vocab.txt` (or of the one in a model directory)."""
    path = pathlib.Path(path)
    if path.is_dir():
        path = path / VOCAB_FILE
    tokens = path.read_text(encoding="utf-8").splitlines()
    if tuple(tokens[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
        raise ValueError(f"{path}: the first lines must be {' '.join(SPECIAL_TOKENS)}, got "
                         f"{' '.join(tokens[: len(SPECIAL_TOKENS)])!r}")
    return tokens


def encode_captions(captions, vocabulary, max_words):
    """`(decoder_inputs, targets)` int32 `(n, max_words + 1)`: `<start> w..` and `w.. <end>`,
    padded with 0; unknown words -> `<unk>`."""
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
