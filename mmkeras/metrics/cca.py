"""Canonical correlations as a metric: a streaming Keras metric and a numpy linear CCA.

- `CanonicalCorrelation` (Keras metric) accumulates first and second moments of two views
  over batches (float64 sums, so the result is exact for the whole evaluation set and the
  replicas' states add up under a strategy) and reports their canonical correlations.
- `LinearCCA` (numpy) fits CCA projections on one set and scores the correlations of the
  projections on another: the honest figure, since in-sample CCA with many dimensions finds
  spurious correlations even between independent views.
"""

import keras
import numpy as np
from keras import ops

from mmkeras.api_export import mmkeras_export
from mmkeras.losses.cca_loss import _eigvalsh

REDUCTIONS = ("mean", "sum", "none")


def _inverse_sqrt(matrix):
    w, v = np.linalg.eigh(matrix)
    return (v / np.sqrt(np.maximum(w, 1e-300))) @ v.T


def cca_from_moments(count, sum_x, sum_y, sum_xx, sum_yy, sum_xy, regularization=1e-4):
    """Canonical correlations (largest first) from sums over rows (numpy, float64)."""
    n = float(count)
    mean_x, mean_y = sum_x / n, sum_y / n
    d = max(n - 1.0, 1.0)
    sxx = (sum_xx - n * np.outer(mean_x, mean_x)) / d + regularization * np.eye(len(mean_x))
    syy = (sum_yy - n * np.outer(mean_y, mean_y)) / d + regularization * np.eye(len(mean_y))
    sxy = (sum_xy - n * np.outer(mean_x, mean_y)) / d
    t = _inverse_sqrt(sxx) @ sxy @ _inverse_sqrt(syy)
    return np.clip(np.linalg.svd(t, compute_uv=False), 0.0, 1.0)


def canonical_correlations_numpy(x, y, regularization=1e-4):
    """In-sample canonical correlations of `(n, dx)` and `(n, dy)` paired rows, largest first."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    return cca_from_moments(
        len(x), x.sum(0), y.sum(0), x.T @ x, y.T @ y, x.T @ y, regularization
    )


class LinearCCA:
    """Linear CCA in numpy: `fit` on paired rows, then `transform` / `score` new rows.

    Args:
        num_components: components kept (None: `min(dx, dy)`).
        regularization: ridge added to each covariance, relative to its mean variance
            (`r * trace(S) / d`), so the same value suits features of any scale.
    """

    def __init__(self, num_components=None, regularization=1e-3):
        self.num_components = num_components
        self.regularization = regularization

    def fit(self, x, y):
        x = np.asarray(x, np.float64)
        y = np.asarray(y, np.float64)
        self.mean_x_, self.mean_y_ = x.mean(0), y.mean(0)
        xc, yc = x - self.mean_x_, y - self.mean_y_
        d = max(len(x) - 1, 1)
        sxx, syy, sxy = xc.T @ xc / d, yc.T @ yc / d, xc.T @ yc / d
        sxx += self.regularization * np.trace(sxx) / len(sxx) * np.eye(len(sxx))
        syy += self.regularization * np.trace(syy) / len(syy) * np.eye(len(syy))
        wx, wy = _inverse_sqrt(sxx), _inverse_sqrt(syy)
        u, s, vt = np.linalg.svd(wx @ sxy @ wy)
        k = self.num_components or min(x.shape[1], y.shape[1])
        self.x_weights_ = wx @ u[:, :k]
        self.y_weights_ = wy @ vt.T[:, :k]
        self.train_correlations_ = s[:k]
        return self

    def transform(self, x, y):
        return (
            (np.asarray(x, np.float64) - self.mean_x_) @ self.x_weights_,
            (np.asarray(y, np.float64) - self.mean_y_) @ self.y_weights_,
        )

    def canonical_embeddings(self, x, y):
        """Both views in the shared canonical space: the projections of `transform` (whitened:
        unit variance and uncorrelated on the fitting rows) with component `k` scaled by its
        fitted correlation `rho_k`.

        In this space the pairs of the two views are comparable: under a linear-Gaussian model
        the best prediction of one view's variates from the other's is `rho * u`, so strongly
        correlated components count most and uncorrelated ones (rho ~ 0) drop out. Raw deep
        CCA outputs are not comparable this way: their objective is blind to any invertible
        linear map of either view, so their scale and rotation are arbitrary.
        """
        u, v = self.transform(x, y)
        return u * self.train_correlations_, v * self.train_correlations_

    def score(self, x, y):
        """Per-component Pearson correlation of the projected held-out views."""
        u, v = self.transform(x, y)
        u = u - u.mean(0)
        v = v - v.mean(0)
        denominator = np.sqrt((u * u).sum(0) * (v * v).sum(0))
        return (u * v).sum(0) / np.maximum(denominator, 1e-300)


@mmkeras_export("mmkeras.metrics.CanonicalCorrelation")
class CanonicalCorrelation(keras.metrics.Metric):
    """Canonical correlations between two views, accumulated over batches.

    `update_state(x, y)` adds a batch of paired rows; `result()` solves CCA on the moments of
    every row seen so far (float64), so the figure is that of the whole evaluation set, not a
    mean of per-batch values (small batches would inflate them).

    Args:
        dim_x, dim_y: the two views' dimensions.
        num_components: correlations kept, largest first (None: `min(dim_x, dim_y)`).
        regularization: ridge added to both covariances.
        reduction: `"mean"` (mean correlation, in [0, 1]), `"sum"` or `"none"` (the vector).
        **kwargs: `keras.metrics.Metric` arguments (`name`, `dtype`).

    Example:
    ```python
    import numpy as np
    import mmkeras
    x = np.random.default_rng(0).normal(size=(500, 3)).astype("float32")
    metric = mmkeras.metrics.CanonicalCorrelation(3, 3)
    metric.update_state(x, 2.0 * x + 1.0)
    float(metric.result())  # about 1.0
    ```
    """

    def __init__(
        self,
        dim_x,
        dim_y,
        num_components=None,
        regularization=1e-4,
        reduction="mean",
        name="canonical_correlation",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}.")
        self.dim_x, self.dim_y = int(dim_x), int(dim_y)
        self.num_components = None if num_components is None else int(num_components)
        self.regularization = float(regularization)
        self.reduction = reduction

        def state(shape, name):
            return self.add_variable(shape=shape, initializer="zeros", dtype="float64", name=name)

        self.count = state((), "count")
        self.sum_x = state((self.dim_x,), "sum_x")
        self.sum_y = state((self.dim_y,), "sum_y")
        self.sum_xx = state((self.dim_x, self.dim_x), "sum_xx")
        self.sum_yy = state((self.dim_y, self.dim_y), "sum_yy")
        self.sum_xy = state((self.dim_x, self.dim_y), "sum_xy")

    def update_state(self, x, y, sample_weight=None):
        x = ops.cast(ops.convert_to_tensor(x), "float64")
        y = ops.cast(ops.convert_to_tensor(y), "float64")
        if sample_weight is not None:
            w = ops.reshape(ops.cast(ops.convert_to_tensor(sample_weight), "float64"), (-1, 1))
        else:
            w = ops.ones((ops.shape(x)[0], 1), "float64")
        xw, yw = x * w, y * w
        self.count.assign_add(ops.sum(w))
        self.sum_x.assign_add(ops.sum(xw, axis=0))
        self.sum_y.assign_add(ops.sum(yw, axis=0))
        self.sum_xx.assign_add(ops.matmul(ops.transpose(xw), x))
        self.sum_yy.assign_add(ops.matmul(ops.transpose(yw), y))
        self.sum_xy.assign_add(ops.matmul(ops.transpose(xw), y))

    def result(self):
        n = ops.maximum(self.count, 2.0)
        mean_x, mean_y = self.sum_x / n, self.sum_y / n
        d = n - 1.0
        sxx = (self.sum_xx - n * ops.outer(mean_x, mean_x)) / d
        syy = (self.sum_yy - n * ops.outer(mean_y, mean_y)) / d
        sxy = (self.sum_xy - n * ops.outer(mean_x, mean_y)) / d
        sxx = sxx + self.regularization * ops.eye(self.dim_x, dtype="float64")
        syy = syy + self.regularization * ops.eye(self.dim_y, dtype="float64")
        lx = ops.solve_triangular(ops.cholesky(sxx), ops.eye(self.dim_x, dtype="float64"), lower=True)
        ly = ops.solve_triangular(ops.cholesky(syy), ops.eye(self.dim_y, dtype="float64"), lower=True)
        t = ops.matmul(ops.matmul(lx, sxy), ops.transpose(ly))
        gram = ops.matmul(ops.transpose(t), t) if self.dim_y <= self.dim_x else ops.matmul(t, ops.transpose(t))
        rho = ops.sqrt(ops.clip(ops.flip(_eigvalsh(gram), axis=0), 0.0, 1.0))
        if self.num_components is not None:
            rho = rho[: self.num_components]
        if self.reduction == "mean":
            return ops.cast(ops.mean(rho), "float32")
        if self.reduction == "sum":
            return ops.cast(ops.sum(rho), "float32")
        return ops.cast(rho, "float32")

    def reset_state(self):
        for variable in self.variables:
            variable.assign(ops.zeros(variable.shape, "float64"))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "dim_x": self.dim_x,
                "dim_y": self.dim_y,
                "num_components": self.num_components,
                "regularization": self.regularization,
                "reduction": self.reduction,
            }
        )
        return config
