"""Captioner: shapes, `.keras` round trip, a training step, greedy and beam-search decoding."""

import itertools

import keras
import numpy as np
import pytest
from keras import ops

from mmkeras.encoders.image_cnn_encoder import image_cnn_encoder
from mmkeras.models import Captioner
from mmkeras.models.captioner import CAPTION_TOKENS
from mmkeras.layers.transformer_decoder_block import TransformerDecoderBlock
from mmkeras.models.captioner import beam_search_decode
from mmkeras.models.captioner import greedy_decode
from mmkeras.models.captioner import length_normalizer
from mmkeras.models.captioner import sequence_log_prob

PAD, UNK, START, END = 0, 1, 2, 3


def _model(vocabulary_size=12, sequence_length=6, seed=0, dropout=0.1):
    keras.utils.set_random_seed(seed)
    encoder = image_cnn_encoder((8, 8, 3), (4,), 8, dropout=0.0, return_sequence=True)
    return Captioner(encoder, vocabulary_size=vocabulary_size, sequence_length=sequence_length,
                     hidden_dim=8, num_layers=1, num_heads=2, intermediate_dim=16,
                     dropout=dropout, start_id=START, end_id=END, pad_id=PAD, unk_id=UNK)


def _images(n, seed=0):
    return np.random.default_rng(seed).random((n, 8, 8, 3)).astype("float32")


def _batch(n=6, seed=0):
    rng = np.random.default_rng(seed)
    inputs = np.zeros((n, 6), "int32")
    targets = np.zeros((n, 6), "int32")
    for i in range(n):
        words = rng.integers(4, 12, size=rng.integers(1, 5)).tolist()
        inputs[i, : len(words) + 1] = [START, *words]
        targets[i, : len(words) + 1] = [*words, END]
    return {"image": _images(n, seed), CAPTION_TOKENS: inputs}, targets


def _sharpen(model, scale=3.0, seed=1):
    """Random, larger weights: peaked next-token distributions, so no ties in search."""
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0.0, scale / np.sqrt(max(w.shape[0] if w.ndim else 1, 1)),
                                  w.shape).astype("float32") if w.ndim > 1 else w
                       for w in model.get_weights()])


def test_decoder_block_shapes_and_causality():
    block = TransformerDecoderBlock(2, 16, dropout=0.0)
    x = np.random.default_rng(0).normal(size=(2, 5, 8)).astype("float32")
    memory = np.random.default_rng(1).normal(size=(2, 7, 8)).astype("float32")
    out = np.asarray(block(x, memory))
    assert out.shape == (2, 5, 8)
    changed = x.copy()
    changed[:, 3:] += 1.0  # later steps must not change earlier outputs
    np.testing.assert_allclose(np.asarray(block(changed, memory))[:, :3], out[:, :3], atol=1e-5)
    assert TransformerDecoderBlock.from_config(block.get_config()).intermediate_dim == 16


def test_output_shapes_and_round_trip(tmp_path):
    model = _model()
    x, y = _batch()
    logits = np.asarray(model(x))
    assert logits.shape == (6, 6, 12) and logits.dtype == np.float32
    assert np.asarray(model.encode(x["image"])).shape == (6, 1 + 4 * 4, 8)  # embedding + 4x4
    path = tmp_path / "captioner.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored, Captioner)
    config = {k: v for k, v in model.get_config().items() if k != "image_encoder"}
    assert {k: v for k, v in restored.get_config().items() if k != "image_encoder"} == config
    np.testing.assert_allclose(np.asarray(restored(x)), logits, rtol=1e-5, atol=1e-5)
    assert greedy_decode(restored, x["image"]) == greedy_decode(model, x["image"])
    with pytest.raises(ValueError, match="distinct"):
        Captioner(model.image_encoder, vocabulary_size=4, start_id=2, end_id=2)


def test_training_step_lowers_the_loss():
    model = _model(dropout=0.0)
    # Eager: a few steps of a tiny model run faster than tracing the train function.
    model.compile(optimizer=keras.optimizers.Adam(0.01), run_eagerly=True,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                                  ignore_class=PAD))
    x, y = _batch(16)
    history = model.fit(x, y, epochs=10, batch_size=16, verbose=0).history["loss"]
    assert np.isfinite(history).all() and history[-1] < 0.7 * history[0]
    # Padding does not count: changing the padded targets leaves the loss unchanged.
    noisy = np.where(y == PAD, 7, y)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=PAD)
    logits = model(x)
    assert float(loss(y, logits)) != pytest.approx(float(loss(noisy, logits)))
    padded = model.evaluate(x, y, verbose=0)
    assert padded == pytest.approx(float(loss(y, logits)), rel=1e-4)


def test_greedy_equals_beam_search_of_width_one():
    model = _model()
    _sharpen(model, scale=1.5)
    images = _images(5, seed=3)
    greedy = greedy_decode(model, images, batch_size=3)  # two batches each
    assert greedy == beam_search_decode(model, images, beam_width=1, batch_size=3)
    assert len(greedy) == 5 and all(len(c) <= model.sequence_length for c in greedy)
    assert all(t not in (PAD, UNK, START, END) for c in greedy for t in c)


def _brute_force(model, image, max_length, length_penalty):
    """The best caption over every sequence the decoders can produce: words from the allowed
    ids, ended by <end>, or cut (without <end>) at `max_length` tokens."""
    words = [i for i in range(model.vocabulary_size) if i not in (PAD, UNK, START, END)]
    candidates = [list(c) + ([END] if n < max_length else [])
                  for n in range(max_length + 1) for c in itertools.product(words, repeat=n)]
    # One teacher-forced call scores them all: the sum of each next token's log-probability.
    inputs = np.full((len(candidates), max_length), PAD, "int32")
    for row, tokens in enumerate(candidates):
        inputs[row, : len(tokens)] = [START, *tokens[:-1]]
    memory = ops.repeat(model.encode(image[None]), len(candidates), axis=0)
    log_probs = np.asarray(ops.log_softmax(model.decode(memory, inputs), axis=-1), np.float64)
    scores = [sum(log_probs[row, i, t] for i, t in enumerate(tokens)) /
              length_normalizer(len(tokens), length_penalty)
              for row, tokens in enumerate(candidates)]
    best = int(np.argmax(scores))
    assert sorted(scores)[-2] < scores[best] - 1e-3  # no near-tie: the optimum is unique
    # The helper the decoders' scores are checked with agrees with the batched scores.
    assert sequence_log_prob(model, image, candidates[best]) / length_normalizer(
        len(candidates[best]), length_penalty) == pytest.approx(scores[best], abs=1e-4)
    return [t for t in candidates[best] if t != END], scores[best]


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_wide_beam_search_finds_the_highest_scoring_caption(length_penalty):
    # 2 words (+ <end>) and at most 3 tokens: 15 possible captions; a beam of 16 keeps them all.
    model = _model(vocabulary_size=6, sequence_length=3, seed=2)
    _sharpen(model, scale=2.0, seed=4)
    images = _images(3, seed=5)
    captions, scores = beam_search_decode(model, images, beam_width=16,
                                          length_penalty=length_penalty, return_scores=True)
    for image, caption, score in zip(images, captions, scores):
        best, best_score = _brute_force(model, image, 3, length_penalty)
        assert caption == best
        assert score == pytest.approx(best_score, abs=1e-4)
    # A narrow beam can only do as well or worse, never better than exhaustive search.
    _, narrow = beam_search_decode(model, images, beam_width=2, length_penalty=length_penalty,
                                   return_scores=True)
    assert np.all(narrow <= scores + 1e-6)


def test_max_length_is_checked():
    model = _model()
    with pytest.raises(ValueError, match="max_length"):
        greedy_decode(model, _images(1), max_length=model.sequence_length + 1)
    assert all(len(c) <= 2 for c in beam_search_decode(model, _images(3), 2, max_length=2))
