"""Moment matching between two samples of embeddings: a *non-adversarial* way to align the
distributions of two modalities (or domains) in a shared space.

- `linear_mmd`: the (biased) maximum mean discrepancy with a linear kernel,
  `||mean(x) - mean(y)||^2`: matches first moments only.
- `central_moment_discrepancy` (CMD, Zellinger et al., 2017): the distance of the means plus
  the distances of the element-wise central moments of orders 2..K,
  `CMD_K = ||E x - E y|| / |b - a| + sum_{k=2..K} ||c_k(x) - c_k(y)|| / |b - a|^k`,
  `c_k(x) = E (x - E x)^k` (per dimension), for features bounded in `[a, b]`.

Both are computed on the batch given (under `tf.distribute`, on each replica's slice):
estimates of the population discrepancies, exact for the samples themselves.

Unlike an adversarial discriminator, these terms cannot be "fooled": they are zero only when
the matched moments are equal. They do not constrain dependencies between dimensions (CMD
matches each dimension's marginal moments), so a probe that reads a correlation can still
separate samples whose CMD is zero.
"""

from keras import ops


def _check(x, y):
    x = ops.cast(x, "float32")
    y = ops.cast(y, "float32")
    if len(x.shape) != 2 or len(y.shape) != 2:
        raise ValueError(f"Expected (batch, features) samples, got {x.shape} and {y.shape}.")
    return x, y


def linear_mmd(x, y):
    """Squared MMD with the linear kernel `k(a, b) = a . b`: `||mean(x) - mean(y)||^2`.

    Args:
        x: `(n, d)` sample of one distribution.
        y: `(m, d)` sample of the other.

    Returns:
        A scalar: 0 for samples with equal means; `||mu||^2` for `y = x + mu`.
    """
    x, y = _check(x, y)
    diff = ops.mean(x, axis=0) - ops.mean(y, axis=0)
    return ops.sum(ops.square(diff))


def central_moment_discrepancy(x, y, moments=5, bound=1.0):
    """Central moment discrepancy (Zellinger et al., 2017) of order `moments`.

    Args:
        x: `(n, d)` sample of one distribution.
        y: `(m, d)` sample of the other.
        moments: the highest order `K >= 1` matched (the paper uses 5).
        bound: `|b - a|`, the width of the interval the features lie in (the paper's
            normalisation: each order `k` is divided by `bound**k`). For unbounded features
            (e.g. layer-normalised embeddings) it is a scale: 1 weighs every order equally.

    Returns:
        A scalar: 0 for identical samples; `||mu|| / bound` for `y = x + mu` (a shift leaves
        every central moment unchanged).

    References:
        - [Zellinger et al., 2017](https://arxiv.org/abs/1702.08811), central moment
          discrepancy for domain-invariant representation learning.
    """
    if moments < 1:
        raise ValueError(f"moments must be >= 1, got {moments}.")
    if bound <= 0:
        raise ValueError(f"bound must be > 0, got {bound}.")
    x, y = _check(x, y)
    mean_x, mean_y = ops.mean(x, axis=0), ops.mean(y, axis=0)
    # sqrt(sum(d^2) + tiny): differentiable at 0 (a zero distance would give a NaN gradient).
    def norm(d):
        return ops.sqrt(ops.sum(ops.square(d)) + 1e-12)

    total = norm(mean_x - mean_y) / bound
    centred_x, centred_y = x - mean_x, y - mean_y
    for k in range(2, moments + 1):
        c_x = ops.mean(ops.power(centred_x, k), axis=0)
        c_y = ops.mean(ops.power(centred_y, k), axis=0)
        total = total + norm(c_x - c_y) / bound ** k
    return total


def paired_squared_distance(x, y):
    """The mean squared Euclidean distance between the rows of `x` and `y` that are *pairs*
    (row i of both comes from the same example, e.g. an image and the audio it was paired
    with): 0 when every pair coincides. Unlike the moment discrepancies it needs aligned rows,
    and it aligns each pair, not only the two distributions."""
    x, y = _check(x, y)
    if x.shape[0] is not None and y.shape[0] is not None and x.shape[0] != y.shape[0]:
        raise ValueError(f"Paired samples need as many rows, got {x.shape} and {y.shape}.")
    return ops.mean(ops.sum(ops.square(x - y), axis=-1))


MOMENT_MATCHING = {"cmd": central_moment_discrepancy, "linear_mmd": linear_mmd,
                   "paired": paired_squared_distance}


def moment_matching_loss(kind, samples, **kwargs):
    """The mean of `kind` (`cmd`, `linear_mmd`, or `paired`: rows must be aligned) over every
    pair of the `samples` (a list of `(n_i, d)` tensors, e.g. one per modality)."""
    if kind not in MOMENT_MATCHING:
        raise ValueError(f"moment matching must be one of {sorted(MOMENT_MATCHING)}, got '{kind}'.")
    if len(samples) < 2:
        raise ValueError(f"Moment matching needs two or more samples, got {len(samples)}.")
    fn = MOMENT_MATCHING[kind]
    pairs = [fn(a, b, **kwargs) for i, a in enumerate(samples) for b in samples[i + 1:]]
    return ops.sum(ops.stack(pairs)) / len(pairs)
