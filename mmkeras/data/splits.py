"""Splits of the user's own data: a seeded, stratified train / validation / test assignment,
and the normalisation of a split column's values (unknown values are reported, not dropped)."""

import collections

import numpy as np

from mmkeras.data.schema import SPLIT_VALUES

SPLITS = ("train", "validation", "test")


def normalize_split(value):
    """`train` / `validation` / `test` for a split cell (`val`, `dev`, `Training`, ...), or
    None when the value is not a known split name."""
    return SPLIT_VALUES.get(str(value).strip().lower())


def stratified_splits(strata, fractions=(0.8, 0.1, 0.1), seed=0):
    """Assigns each row to a split, per stratum (its label; use one stratum for regression).

    Every stratum is shuffled with `seed` and cut at the cumulative fractions (rounded), so
    each split gets about its fraction of every label; a stratum of one row goes to train.

    Args:
        strata: one hashable value per row (the label, or a tuple of labels).
        fractions: train, validation, test fractions (summing to 1).
        seed: the shuffle seed.

    Returns:
        A list with one of `SPLITS` per row.
    """
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must be 3 non-negative numbers summing to 1, got {fractions}")
    rng = np.random.default_rng(seed)
    groups = collections.defaultdict(list)
    for row, stratum in enumerate(strata):
        groups[stratum].append(row)
    out = [None] * len(strata)
    for stratum in sorted(groups, key=repr):
        rows = np.array(groups[stratum])
        rng.shuffle(rows)
        n = len(rows)
        n_train = max(1, int(round(fractions[0] * n))) if n else 0
        n_val = int(round(fractions[1] * n))
        n_val = min(n_val, n - n_train)
        for i, row in enumerate(rows):
            out[row] = "train" if i < n_train else "validation" if i < n_train + n_val else "test"
    return out
