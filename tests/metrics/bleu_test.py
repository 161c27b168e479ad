"""Corpus BLEU (sacreBLEU on token lists) against closed-form values."""

import math

import pytest

from mmkeras.metrics import bleu


def _t(text):
    return text.split()


def test_identical_hypothesis_scores_one():
    hyp = _t("a grinning face with big eyes")
    out = bleu.corpus_bleu([hyp], [[hyp]])
    assert out["bleu"] == pytest.approx(1.0)
    assert out["precisions"] == [1.0, 1.0, 1.0, 1.0] and out["brevity_penalty"] == 1.0
    assert bleu.bleu_scores([hyp], [[hyp]]) == pytest.approx(
        {"bleu1": 1.0, "bleu2": 1.0, "bleu3": 1.0, "bleu4": 1.0})


def test_brevity_penalty_hand_computed():
    # All n-grams of the 4-token hypothesis match; c = 4, r = 6: BP = exp(1 - 6/4).
    out = bleu.corpus_bleu([_t("the cat sat on")], [[_t("the cat sat on the mat")]])
    assert out["precisions"] == [1.0, 1.0, 1.0, 1.0]
    assert out["bleu"] == pytest.approx(math.exp(-0.5))


def test_two_sentence_corpus_hand_computed():
    hyps = [_t("a b c d"), _t("a b")]
    refs = [[_t("a b c d")], [_t("a c e")]]
    out = bleu.corpus_bleu(hyps, refs)
    # Sums over the corpus: 1-grams 4+1 of 4+2, 2-grams 3+0 of 3+1, 3-grams 2 of 2, 4-grams 1 of 1.
    assert out["matches"] == [5, 3, 2, 1] and out["totals"] == [6, 4, 2, 1]
    assert (out["hypothesis_length"], out["reference_length"]) == (6, 7)
    expected = math.exp(1 - 7 / 6) * (5 / 6 * 3 / 4 * 1 * 1) ** 0.25
    assert out["bleu"] == pytest.approx(expected)
    scores = bleu.bleu_scores(hyps, refs)
    assert scores["bleu1"] == pytest.approx(math.exp(1 - 7 / 6) * 5 / 6)
    assert scores["bleu2"] == pytest.approx(math.exp(1 - 7 / 6) * math.sqrt(5 / 6 * 3 / 4))
    assert scores["bleu4"] == pytest.approx(expected)


def test_repeated_words_are_clipped_by_the_best_reference():
    # Papineni et al.'s example: "the" occurs at most twice in a reference.
    hyp = _t("the the the the the the the")
    refs = [_t("the cat is on the mat"), _t("there is a cat on the mat")]
    out = bleu.corpus_bleu([hyp], [refs], max_order=1)
    assert out["precisions"] == [pytest.approx(2 / 7)]
    assert out["reference_length"] == 7 and out["brevity_penalty"] == 1.0  # closest: 7
    assert out["bleu"] == pytest.approx(2 / 7)


def test_closest_reference_length_prefers_the_shorter_on_ties():
    hyp = _t("a b c d")
    assert bleu.corpus_bleu([hyp], [[_t("a b c d e"), _t("a b c")]])["reference_length"] == 3
    assert bleu.corpus_bleu([hyp], [[_t("x y z u v w"), hyp, _t("a b c")]])["reference_length"] == 4


def test_hypotheses_with_different_numbers_of_references():
    hyps = [_t("a b c"), _t("d e")]
    refs = [[_t("a b c")], [_t("x y"), _t("z"), _t("d e")]]
    out = bleu.corpus_bleu(hyps, refs, max_order=2)
    assert out["matches"] == [5, 3] and out["totals"] == [5, 3]
    assert out["bleu"] == pytest.approx(1.0)


def test_no_overlap_is_zero_with_or_without_smoothing():
    # sacreBLEU: a corpus without a single matching unigram scores 0 whatever the smoothing.
    hyps, refs = [_t("red apple")], [[_t("flag : peru")]]
    for smoothing in bleu.SMOOTHINGS:
        assert bleu.corpus_bleu(hyps, refs, smoothing=smoothing)["bleu"] == 0.0
    # One unigram match: unsmoothed 0 (no bigram match), epsilon-smoothed positive.
    hyps, refs = [_t("red flag")], [[_t("flag : peru")]]
    assert bleu.corpus_bleu(hyps, refs)["bleu"] == 0.0
    assert bleu.corpus_bleu(hyps, refs, max_order=2, smoothing="epsilon")["bleu"] == (
        pytest.approx(math.exp(1 - 3 / 2) * (1 / 2 * 0.1 / 1) ** 0.5))


def test_smoothing_hand_computed():
    hyps, refs = [_t("a b c")], [[_t("a b d")]]
    # p1 = 2/3, p2 = 1/2, p3 = 0/1, p4: no 4-gram in the hypothesis.
    assert bleu.corpus_bleu(hyps, refs)["bleu"] == 0.0
    # No 4-gram in the hypothesis: epsilon smoothing leaves order 4 out (effective order 3).
    assert bleu.corpus_bleu(hyps, refs, smoothing="epsilon")["bleu"] == pytest.approx(
        (2 / 3 * 1 / 2 * 0.1) ** (1 / 3))
    eps = bleu.corpus_bleu(hyps, refs, max_order=3, smoothing="epsilon", epsilon=0.1)
    assert eps["precisions"] == pytest.approx([2 / 3, 1 / 2, 0.1])
    assert eps["bleu"] == pytest.approx((2 / 3 * 1 / 2 * 0.1) ** (1 / 3))
    add1 = bleu.corpus_bleu(hyps, refs, smoothing="add_one")
    assert add1["precisions"] == pytest.approx([2 / 3, 2 / 3, 1 / 2, 1.0])
    assert add1["bleu"] == pytest.approx((2 / 3 * 2 / 3 * 1 / 2 * 1.0) ** 0.25)


def test_empty_hypothesis_and_bad_arguments():
    assert bleu.corpus_bleu([[]], [[_t("a b")]], smoothing="epsilon")["bleu"] == 0.0
    with pytest.raises(ValueError, match="reference lists"):
        bleu.corpus_bleu([_t("a")], [])
    with pytest.raises(ValueError, match="smoothing"):
        bleu.corpus_bleu([_t("a")], [[_t("a")]], smoothing="nist")
