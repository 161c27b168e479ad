"""Image captioning: an image encoder's tokens + a small Transformer decoder.

The image encoder (any mmkeras image encoder; built with `return_sequence=True` it exposes its
last feature map as tokens) gives a memory of `1 + h * w` vectors: the global embedding and
one vector per feature-map cell, each projected to `hidden_dim`, with learned positions. The
decoder is a stack of pre-norm Transformer decoder blocks (causal self-attention over the
caption so far, cross-attention to the image memory, feed-forward) and a linear layer to the
vocabulary. It trains with teacher forcing: the input is `<start> w_1 .. w_n` and the target
`w_1 .. w_n <end>`, padded with id 0 (the loss ignores padding).

Why a Transformer decoder rather than a GRU conditioned on the embedding: cross-attention lets
each word look at the image regions (the colours of a flag, the object beside a person) instead
of one pooled vector, and teacher-forced training runs all positions in parallel (no recurrent
loop), which matters on CPU.

`greedy_decode` and `beam_search_decode` generate captions for a batch of images: Python loops
over model calls (the whole prefix is re-run each step; no key/value cache, fine for captions
of about 10 tokens), with the beam bookkeeping in numpy.

Token ids are the caller's (a vocabulary built from the training captions): the model only
needs the padding, start, end and (optionally) unknown ids. Decoding never emits padding,
start or unknown tokens.
"""

import warnings

import keras
import numpy as np
from keras import ops

from mmkeras import features
from mmkeras.api_export import mmkeras_export
from mmkeras.layers.position_embedding import PositionEmbedding
from mmkeras.layers.transformer_decoder_block import TransformerDecoderBlock

# The feature key of the decoder input (teacher-forced caption token ids).
CAPTION_TOKENS = "caption_tokens"


def _encoder_output_shapes(image_encoder):
    """`(embedding_shape, tokens_shape or None)` of an image encoder's output."""
    output = image_encoder.output
    if isinstance(output, dict):
        tokens = output.get(features.TOKENS)
        return tuple(output[features.EMBEDDING].shape), (
            None if tokens is None else tuple(tokens.shape)
        )
    return tuple(output.shape), None


@mmkeras_export("mmkeras.models.Captioner")
class Captioner(keras.Model):
    """Image encoder + Transformer decoder that predicts the next caption token.

    Args:
        image_encoder: an image encoder model (`keras.Input(name="image")` -> an embedding,
            or `{"embedding", "tokens"}` when built with `return_sequence=True`: then the
            decoder attends to the feature-map tokens as well).
        vocabulary_size: ids in `[0, vocabulary_size)`.
        sequence_length: the longest decoder input (`<start>` + words); also the longest
            generated caption (in tokens, `<end>` included).
        hidden_dim: width of the decoder.
        num_layers: decoder blocks.
        num_heads: attention heads.
        intermediate_dim: feed-forward width of each block.
        dropout: dropout rate.
        start_id: the `<start>` token id.
        end_id: the `<end>` token id.
        pad_id: the padding id (ignored by the loss, never generated).
        unk_id: the out-of-vocabulary id (never generated), or None.
        **kwargs: `keras.Model` arguments (`name`).

    Call arguments:
        inputs: `{"image": (batch, h, w, c), "caption_tokens": (batch, steps) int}` with
            `steps <= sequence_length`: the teacher-forced decoder input.

    Returns:
        Logits `(batch, steps, vocabulary_size)` (float32) of the next token at every step.

    Example:
    ```python
    import numpy as np
    import keras
    from mmkeras.encoders.image_cnn_encoder import image_cnn_encoder
    from mmkeras.models.captioner import Captioner, greedy_decode
    encoder = image_cnn_encoder((16, 16, 3), (8,), 16, return_sequence=True)
    model = Captioner(encoder, vocabulary_size=10, sequence_length=5, hidden_dim=16,
                      num_layers=1, num_heads=2, intermediate_dim=32)
    model.compile(optimizer="adam",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                                  ignore_class=0))
    x = {"image": np.random.rand(4, 16, 16, 3).astype("float32"),
         "caption_tokens": np.array([[2, 5, 6, 0, 0]] * 4, "int32")}
    y = np.array([[5, 6, 3, 0, 0]] * 4, "int32")
    model.fit(x, y, epochs=1, verbose=0)
    greedy_decode(model, x["image"])  # four lists of token ids
    ```

    References:
        - [Vinyals et al., 2015](https://arxiv.org/abs/1411.4555), Show and Tell.
        - [Xu et al., 2015](https://arxiv.org/abs/1502.03044), Show, Attend and Tell.
    """

    def __init__(
        self,
        image_encoder,
        vocabulary_size,
        sequence_length=12,
        hidden_dim=128,
        num_layers=2,
        num_heads=4,
        intermediate_dim=256,
        dropout=0.1,
        start_id=2,
        end_id=3,
        pad_id=0,
        unk_id=1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.image_encoder = image_encoder
        self.vocabulary_size = int(vocabulary_size)
        self.sequence_length = int(sequence_length)
        self.hidden_dim = int(hidden_dim)
        self.num_layers = int(num_layers)
        self.num_heads = int(num_heads)
        self.intermediate_dim = int(intermediate_dim)
        self.dropout = float(dropout)
        self.start_id = int(start_id)
        self.end_id = int(end_id)
        self.pad_id = int(pad_id)
        self.unk_id = None if unk_id is None else int(unk_id)
        ids = [self.start_id, self.end_id, self.pad_id] + ([self.unk_id] if unk_id is not None else [])
        if len(set(ids)) != len(ids) or not all(0 <= i < self.vocabulary_size for i in ids):
            raise ValueError(
                f"start/end/pad/unk ids must be distinct ids below vocabulary_size="
                f"{self.vocabulary_size}, got {ids}."
            )

        embedding_shape, tokens_shape = _encoder_output_shapes(image_encoder)
        memory_steps = 1 + (tokens_shape[1] if tokens_shape is not None else 0)
        self.embedding_projection = keras.layers.Dense(hidden_dim, name="embedding_projection")
        self.embedding_projection.build(embedding_shape)
        self.tokens_projection = None
        if tokens_shape is not None:
            self.tokens_projection = keras.layers.Dense(hidden_dim, name="tokens_projection")
            self.tokens_projection.build(tokens_shape)
        memory_shape = (None, memory_steps, self.hidden_dim)
        self.memory_positions = PositionEmbedding(memory_steps, name="memory_positions")
        self.memory_positions.build(memory_shape)
        self.memory_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="memory_norm")
        self.memory_norm.build(memory_shape)

        sequence_shape = (None, self.sequence_length, self.hidden_dim)
        self.token_embedding = keras.layers.Embedding(
            self.vocabulary_size, self.hidden_dim, name="token_embedding"
        )
        self.token_embedding.build((None, self.sequence_length))
        self.token_positions = PositionEmbedding(self.sequence_length, name="token_positions")
        self.token_positions.build(sequence_shape)
        self.embedding_dropout = keras.layers.Dropout(self.dropout, name="embedding_dropout")
        self.blocks = []
        for i in range(self.num_layers):
            block = TransformerDecoderBlock(
                self.num_heads, self.intermediate_dim, self.dropout, name=f"decoder_block{i}"
            )
            block.build(sequence_shape, memory_shape)
            self.blocks.append(block)
        self.final_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="final_norm")
        self.final_norm.build(sequence_shape)
        self.logits = keras.layers.Dense(self.vocabulary_size, dtype="float32", name="logits")
        self.logits.build(sequence_shape)
        self.built = True

    def build(self, input_shape=None):
        self.built = True

    def encode(self, images, training=None):
        """Images -> the memory the decoder attends to, `(batch, 1 + h * w, hidden_dim)`."""
        output = self.image_encoder(images, training=training)
        if isinstance(output, dict):
            embedding, tokens = output[features.EMBEDDING], output.get(features.TOKENS)
        else:
            embedding, tokens = output, None
        memory = self.embedding_projection(embedding)[:, None, :]
        if tokens is not None and self.tokens_projection is not None:
            memory = ops.concatenate([memory, self.tokens_projection(tokens)], axis=1)
        return self.memory_norm(self.memory_positions(memory))

    def decode(self, memory, caption_tokens, training=None):
        """Memory + token ids `(batch, steps)` -> next-token logits `(batch, steps, vocab)`."""
        x = self.token_embedding(ops.cast(caption_tokens, "int32"))
        x = self.embedding_dropout(self.token_positions(x), training=training)
        for block in self.blocks:
            x = block(x, memory, training=training)
        return self.logits(self.final_norm(x))

    def call(self, inputs, training=None):
        memory = self.encode(inputs[features.IMAGE], training=training)
        return self.decode(memory, inputs[CAPTION_TOKENS], training=training)

    def suppressed_ids(self):
        """Ids decoding never emits: padding, start and unknown."""
        return [i for i in (self.pad_id, self.start_id, self.unk_id) if i is not None]

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "image_encoder": keras.layers.serialize(self.image_encoder),
                "vocabulary_size": self.vocabulary_size,
                "sequence_length": self.sequence_length,
                "hidden_dim": self.hidden_dim,
                "num_layers": self.num_layers,
                "num_heads": self.num_heads,
                "intermediate_dim": self.intermediate_dim,
                "dropout": self.dropout,
                "start_id": self.start_id,
                "end_id": self.end_id,
                "pad_id": self.pad_id,
                "unk_id": self.unk_id,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["image_encoder"] = keras.layers.deserialize(config["image_encoder"])
        return cls(**config)


def _decode(model, memory, sequences):
    with warnings.catch_warnings():
        # A one-token prefix attends over one step; Keras warns about the size-1 softmax.
        warnings.filterwarnings("ignore", message="You are using a softmax over axis")
        return model.decode(memory, ops.convert_to_tensor(sequences, "int32"), training=False)


def _next_log_probs(model, memory, sequences):
    """Log-probabilities `(n, vocab)` (numpy float64) of the token after each sequence, with
    the suppressed ids at -inf."""
    logits = _decode(model, memory, sequences)
    log_probs = ops.log_softmax(ops.cast(logits[:, -1, :], "float32"), axis=-1)
    log_probs = np.asarray(ops.convert_to_numpy(log_probs), np.float64)
    log_probs[:, model.suppressed_ids()] = -np.inf
    return log_probs


def _strip(sequence, end_id, pad_id):
    """Generated ids (after `<start>`) up to, not including, `<end>` or padding."""
    out = []
    for token in sequence:
        if token in (end_id, pad_id):
            break
        out.append(int(token))
    return out


def _max_length(model, max_length):
    limit = model.sequence_length
    if max_length is None:
        return limit
    if not 1 <= int(max_length) <= limit:
        raise ValueError(f"max_length must lie in [1, {limit}] (the model's sequence_length).")
    return int(max_length)


def length_normalizer(lengths, length_penalty):
    """GNMT's length normaliser `((5 + length) / 6) ** length_penalty` (1 when 0)."""
    return ((5.0 + np.asarray(lengths, np.float64)) / 6.0) ** float(length_penalty)


def greedy_decode(model, images, max_length=None, batch_size=256):
    """Greedy captions of `images`: the most probable next token at every step.

    Args:
        model: a `Captioner`.
        images: `(n, h, w, c)` float images.
        max_length: most tokens generated per caption (`<end>` included); default (and
            at most) `model.sequence_length`.
        batch_size: images decoded together.

    Returns:
        A list of `n` lists of token ids (without `<start>` and `<end>`).
    """
    max_length = _max_length(model, max_length)
    images = np.asarray(images)
    captions = []
    for begin in range(0, len(images), batch_size):
        memory = model.encode(images[begin:begin + batch_size], training=False)
        n = int(ops.shape(memory)[0])
        sequences = np.full((n, 1), model.start_id, np.int32)
        finished = np.zeros(n, bool)
        for _ in range(max_length):
            tokens = _next_log_probs(model, memory, sequences).argmax(axis=-1).astype(np.int32)
            tokens[finished] = model.pad_id
            sequences = np.concatenate([sequences, tokens[:, None]], axis=1)
            finished |= tokens == model.end_id
            if finished.all():
                break
        captions.extend(_strip(s[1:], model.end_id, model.pad_id) for s in sequences)
    return captions


def beam_search_decode(
    model, images, beam_width=3, length_penalty=0.0, max_length=None, batch_size=64,
    return_scores=False,
):
    """Beam-search captions of `images`.

    Each image keeps `beam_width` partial captions ranked by their summed log-probability;
    every step extends each unfinished beam by every token and keeps the `beam_width` best
    of all extensions (a finished beam, one that emitted `<end>`, competes unchanged). At the
    end the beams are ranked by `score / ((5 + length) / 6) ** length_penalty` (Wu et al.,
    2016; `length` counts the generated tokens, `<end>` included) and the best is returned.
    A beam still unfinished after `max_length` tokens ends there, without `<end>`.

    With `beam_width=1` this is greedy decoding. With a beam as wide as the number of
    possible captions it is exhaustive search.

    Args:
        model: a `Captioner`.
        images: `(n, h, w, c)` float images.
        beam_width: beams per image.
        length_penalty: the exponent of the length normaliser (0: raw log-probability, which
            favours short captions; larger: longer captions).
        max_length: most tokens generated per caption; default (and at most)
            `model.sequence_length`.
        batch_size: images decoded together (`batch_size * beam_width` sequences per call).
        return_scores: also return each caption's normalised score.

    Returns:
        A list of `n` lists of token ids (without `<start>` and `<end>`), and with
        `return_scores` a float64 array of their scores.
    """
    max_length = _max_length(model, max_length)
    k = int(beam_width)
    if k < 1:
        raise ValueError(f"beam_width must be at least 1, got {beam_width}.")
    images = np.asarray(images)
    captions, best_scores = [], []
    for begin in range(0, len(images), batch_size):
        memory = model.encode(images[begin:begin + batch_size], training=False)
        b = int(ops.shape(memory)[0])
        memory = ops.repeat(memory, k, axis=0)  # row i * k + j: image i, beam j
        sequences = np.full((b, k, 1), model.start_id, np.int32)
        scores = np.full((b, k), -np.inf)
        scores[:, 0] = 0.0  # one live beam at the start (the others would be duplicates)
        finished = np.zeros((b, k), bool)
        lengths = np.zeros((b, k), np.int64)
        rows = np.arange(b)[:, None]
        for _ in range(max_length):
            log_probs = _next_log_probs(model, memory, sequences.reshape(b * k, -1))
            vocab = log_probs.shape[-1]
            log_probs = log_probs.reshape(b, k, vocab)
            # A finished beam continues only with padding, at no cost.
            log_probs[finished] = -np.inf
            log_probs[finished, model.pad_id] = 0.0
            candidates = (scores[:, :, None] + log_probs).reshape(b, k * vocab)
            top = np.argsort(-candidates, axis=1, kind="stable")[:, :k]
            beam, tokens = top // vocab, (top % vocab).astype(np.int32)
            scores = np.take_along_axis(candidates, top, axis=1)
            was_finished = finished[rows, beam]
            sequences = np.concatenate([sequences[rows, beam], tokens[:, :, None]], axis=2)
            lengths = lengths[rows, beam] + (~was_finished)
            finished = was_finished | (tokens == model.end_id)
            if finished.all():
                break
        normalised = scores / length_normalizer(np.maximum(lengths, 1), length_penalty)
        best = normalised.argmax(axis=1)
        for i in range(b):
            captions.append(_strip(sequences[i, best[i], 1:], model.end_id, model.pad_id))
            best_scores.append(normalised[i, best[i]])
    if return_scores:
        return captions, np.asarray(best_scores, np.float64)
    return captions


def sequence_log_prob(model, image, caption):
    """Summed log-probability of generating `caption` for one image (ids without `<start>`,
    ending with `<end>` unless the caption was cut at the maximum length), as the decoders
    score it. For tests and inspection."""
    caption = [int(t) for t in caption]
    memory = model.encode(np.asarray(image)[None], training=False)
    inputs = np.asarray([[model.start_id, *caption[:-1]]], np.int32)
    logits = _decode(model, memory, inputs)
    log_probs = np.asarray(ops.convert_to_numpy(ops.log_softmax(logits, axis=-1)), np.float64)[0]
    return float(sum(log_probs[i, t] for i, t in enumerate(caption)))
