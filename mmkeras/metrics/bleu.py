"""Corpus BLEU (Papineni et al., 2002) computed by sacreBLEU, on the caller's token lists.

sacreBLEU (Post, 2018) is the reference implementation that published BLEU figures are
computed with, so mmkeras scores with it rather than with its own n-gram counting. Captions
here are already tokenised (the captioner's vocabulary), so the token lists are joined with
spaces and scored with `tokenize="none"`: sacreBLEU splits them back on whitespace and applies
no tokeniser of its own. Tokens must not contain whitespace.

What sacreBLEU computes (and these functions return as fractions in [0, 1], not 0-100):
- clipped n-gram precisions summed over the corpus; the brevity penalty against the closest
  reference length per hypothesis (the shorter on ties); `BLEU = BP * exp(mean log p_n)`;
- a hypothesis may have any number of references (missing ones are passed as `None`);
- `BLEU-n` (as captioning papers report BLEU-1..4) is the score with `max_order = n`.

Smoothing (Chen & Cherry, 2014), for short captions where 3- and 4-gram matches are rare:
- `"epsilon"` (their method 1, sacreBLEU's `floor` with `effective_order=True`): an order with
  no match gets precision `epsilon / total`, and orders with no hypothesis n-gram at all (every
  hypothesis shorter than n) are left out of the mean, as sacreBLEU's sentence-level setting
  does. Without that, a corpus of 2-3 token captions (OpenMoji's average is 2.4) would score
  BLEU-4 = 0 for every candidate, and the best-constant-caption baseline could not rank them;
- `"add_one"` (their method 2, sacreBLEU's `add-k` with k = 1): orders n > 1 get
  `(matches + 1) / (total + 1)`.
As in sacreBLEU, a corpus with no matching unigram at all scores 0 whatever the smoothing;
unsmoothed, an order with no hypothesis n-gram has precision 0 (so BLEU 0).

Example:
```python
from mmkeras.metrics import bleu
hyp = [["flag", ":", "peru"]]
refs = [[["flag", ":", "peru"], ["peru", "flag"]]]
bleu.corpus_bleu(hyp, refs, max_order=3)["bleu"]  # 1.0
```

References:
    - [Papineni et al., 2002](https://aclanthology.org/P02-1040/), BLEU.
    - [Post, 2018](https://aclanthology.org/W18-6319/), sacreBLEU.
    - [Chen & Cherry, 2014](https://aclanthology.org/W14-3346/), smoothing techniques for
      sentence-level BLEU.
"""

from sacrebleu.metrics import BLEU

SMOOTHINGS = (None, "epsilon", "add_one")
_SACREBLEU_SMOOTHING = {None: "none", "epsilon": "floor", "add_one": "add-k"}


def _streams(hypotheses, references):
    """sacreBLEU's inputs: hypothesis strings and reference streams padded with None."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference lists.")
    refs = [[" ".join(map(str, r)) for r in refs] for refs in references]
    if any(not r for r in refs):
        raise ValueError("Every hypothesis needs at least one reference.")
    width = max((len(r) for r in refs), default=0)
    streams = [[r[i] if i < len(r) else None for r in refs] for i in range(width)]
    return [" ".join(map(str, h)) for h in hypotheses], streams


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
        "hypothesis_length", "reference_length"}`; `bleu` and `precisions` in [0, 1].
    """
    if smoothing not in SMOOTHINGS:
        raise ValueError(f"smoothing must be one of {SMOOTHINGS}, got {smoothing!r}.")
    hyps, streams = _streams(hypotheses, references)
    metric = BLEU(
        tokenize="none", smooth_method=_SACREBLEU_SMOOTHING[smoothing],
        smooth_value=1 if smoothing == "add_one" else epsilon,
        max_ngram_order=max_order, effective_order=smoothing == "epsilon",
    )
    score = metric.corpus_score(hyps, streams)
    added = 1 if smoothing == "add_one" else 0  # sacreBLEU reports add-k counts incremented
    matches = [int(round(c - (added if i > 0 and score.totals[i] > 0 else 0)))
               for i, c in enumerate(score.counts)]
    totals = [int(round(t - (added if i > 0 and t > 0 else 0))) for i, t in enumerate(score.totals)]
    return {
        "bleu": score.score / 100.0,
        "precisions": [p / 100.0 for p in score.precisions],
        "brevity_penalty": float(score.bp),
        "matches": matches,
        "totals": totals,
        "hypothesis_length": int(score.sys_len),
        "reference_length": int(score.ref_len),
    }


def bleu_scores(hypotheses, references, max_order=4, smoothing=None, epsilon=0.1):
    """`{"bleu1": ..., "bleu<max_order>": ...}`: BLEU-1..N of a corpus."""
    return {
        f"bleu{n}": corpus_bleu(hypotheses, references, n, smoothing, epsilon)["bleu"]
        for n in range(1, max_order + 1)
    }
