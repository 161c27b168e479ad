"""Corpus BLEU (Papineni et al., 2002) with optional smoothing for short captions.

The score of a corpus of hypotheses, each with one or more references (token lists):

- the **modified (clipped) n-gram precision** of order n: every hypothesis n-gram counts at
  most as many times as it occurs in the one reference where it occurs most often; matches
  and hypothesis n-grams are summed over the whole corpus before dividing;
- the **brevity penalty** `BP = exp(1 - r / c)` when the total hypothesis length `c` is at
  most the effective reference length `r` (summed over the corpus, per hypothesis the
  reference length closest to the hypothesis length, the shorter on ties), else 1;
- `BLEU = BP * exp(sum_n w_n log p_n)`, uniform weights `w_n = 1 / N`.

`BLEU-n` (as captioning papers report BLEU-1..4) is the score with `N = n`.

Without smoothing a corpus with no matching n-gram of some order scores 0. Short captions (an
OpenMoji caption is 2.4 tokens on average) make 3- and 4-gram matches rare, so two smoothings
of Chen & Cherry (2014) are offered:

- `"epsilon"` (their method 1): an order with no match gets precision `epsilon / total`;
- `"add_one"` (their method 2, Lin & Och 2004): orders n > 1 get `(matches + 1) / (total + 1)`.

An order with no hypothesis n-gram at all (every hypothesis shorter than n) has precision 0
unsmoothed, `epsilon` with `"epsilon"` and 1 with `"add_one"` (for n > 1).

Pure Python + numpy. Tokenisation is the caller's: pass token lists, the same tokeniser for
hypotheses and references.

Example:
```python
from mmkeras.metrics import bleu
hyp = [["flag", ":", "peru"]]
refs = [[["flag", ":", "peru"], ["peru", "flag"]]]
bleu.corpus_bleu(hyp, refs, max_order=3)["bleu"]  # 1.0
```

References:
    - [Papineni et al., 2002](https://aclanthology.org/P02-1040/), BLEU.
    - [Chen & Cherry, 2014](https://aclanthology.org/W14-3346/), smoothing techniques for
      sentence-level BLEU.
"""

import collections
import math

SMOOTHINGS = (None, "epsilon", "add_one")


def ngram_counts(tokens, n):
    """`Counter` of the n-grams (tuples) of a token list."""
    tokens = list(tokens)
    return collections.Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def closest_reference_length(hypothesis_length, reference_lengths):
    """The reference length closest to `hypothesis_length` (the shorter one on ties)."""
    return min(reference_lengths, key=lambda r: (abs(r - hypothesis_length), r))


def corpus_statistics(hypotheses, references, max_order=4):
    """Sufficient statistics of corpus BLEU.

    Args:
        hypotheses: a list of token lists.
        references: a list (one entry per hypothesis) of lists of token lists.
        max_order: the highest n-gram order.

    Returns:
        `{"matches": [m_1..m_N], "totals": [t_1..t_N], "hypothesis_length": c,
        "reference_length": r}`: clipped matches and hypothesis n-grams per order, summed.
    """
    if len(hypotheses) != len(references):
        raise ValueError(
            f"{len(hypotheses)} hypotheses but {len(references)} reference lists."
        )
    matches = [0] * max_order
    totals = [0] * max_order
    hyp_length = ref_length = 0
    for hyp, refs in zip(hypotheses, references):
        hyp = list(hyp)
        refs = [list(r) for r in refs]
        if not refs:
            raise ValueError("Every hypothesis needs at least one reference.")
        hyp_length += len(hyp)
        ref_length += closest_reference_length(len(hyp), [len(r) for r in refs])
        for n in range(1, max_order + 1):
            counts = ngram_counts(hyp, n)
            max_ref = collections.Counter()
            for ref in refs:
                max_ref |= ngram_counts(ref, n)  # element-wise max over the references
            matches[n - 1] += sum(min(c, max_ref[g]) for g, c in counts.items())
            totals[n - 1] += max(len(hyp) - n + 1, 0)
    return {"matches": matches, "totals": totals, "hypothesis_length": hyp_length,
            "reference_length": ref_length}


def precisions(matches, totals, smoothing=None, epsilon=0.1):
    """Per-order (smoothed) precisions from the corpus statistics."""
    if smoothing not in SMOOTHINGS:
        raise ValueError(f"smoothing must be one of {SMOOTHINGS}, got {smoothing!r}.")
    out = []
    for i, (m, t) in enumerate(zip(matches, totals)):
        if smoothing == "add_one" and i > 0:
            out.append((m + 1.0) / (t + 1.0))
        elif t == 0:
            out.append(epsilon if smoothing == "epsilon" else 0.0)
        elif m == 0 and smoothing == "epsilon":
            out.append(epsilon / t)
        else:
            out.append(m / t)
    return out


def brevity_penalty(hypothesis_length, reference_length):
    """`1` if `c > r`, else `exp(1 - r / c)`; 0 for an empty corpus of hypotheses."""
    if hypothesis_length == 0:
        return 0.0
    if hypothesis_length > reference_length:
        return 1.0
    return math.exp(1.0 - reference_length / hypothesis_length)


def corpus_bleu(hypotheses, references, max_order=4, smoothing=None, epsilon=0.1):
    """Corpus BLEU with uniform weights over orders 1..`max_order`.

    Args:
        hypotheses: a list of token lists.
        references: a list (one entry per hypothesis) of lists of reference token lists.
        max_order: N, the highest n-gram order (BLEU-N).
        smoothing: None, `"epsilon"` (Chen & Cherry method 1) or `"add_one"` (method 2).
        epsilon: the numerator given to orders without a match (`"epsilon"`).

    Returns:
        `{"bleu", "precisions", "brevity_penalty", "matches", "totals",
        "hypothesis_length", "reference_length"}`.
    """
    stats = corpus_statistics(hypotheses, references, max_order)
    p = precisions(stats["matches"], stats["totals"], smoothing, epsilon)
    bp = brevity_penalty(stats["hypothesis_length"], stats["reference_length"])
    if min(p) <= 0.0:
        score = 0.0
    else:
        score = bp * math.exp(sum(math.log(x) for x in p) / max_order)
    return {"bleu": score, "precisions": p, "brevity_penalty": bp, **stats}


def bleu_scores(hypotheses, references, max_order=4, smoothing=None, epsilon=0.1):
    """`{"bleu1": ..., "bleu<max_order>": ...}`: BLEU-1..N of a corpus (one pass)."""
    stats = corpus_statistics(hypotheses, references, max_order)
    bp = brevity_penalty(stats["hypothesis_length"], stats["reference_length"])
    out = {}
    for n in range(1, max_order + 1):
        p = precisions(stats["matches"][:n], stats["totals"][:n], smoothing, epsilon)
        out[f"bleu{n}"] = 0.0 if min(p) <= 0.0 else bp * math.exp(sum(map(math.log, p)) / n)
    return out
