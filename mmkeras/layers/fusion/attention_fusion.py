"""Model-level fusion by learned attention over modalities."""

import keras
from keras import ops

from mmkeras.api_export import mmkeras_export
from mmkeras.layers.fusion.base_fusion import BaseFusion
from mmkeras.layers.fusion.fusion_utils import masked_softmax


@mmkeras_export("mmkeras.layers.AttentionFusion")
class AttentionFusion(BaseFusion):
    """Attention-weighted sum of modality vectors, the weights softmaxed over present modalities.

    Each modality vector is (optionally) projected to `output_dim`, `H_m = X_m W_m + b_m`,
    (with `normalize=True`) layer-normalised by its own `LayerNormalization`, and scored with
    additive attention, `s_m = (v . tanh(H_m A + c)) / temperature + beta_m` (`A`, `c`, `v`
    shared by all modalities, `beta_m` a learned per-modality prior). The weights
    `alpha = softmax(s)` are taken over the modalities present in each row (a missing modality
    gets weight exactly 0) and the output is `sum_m alpha_m H_m`. A row with no modality present
    gives zeros (and all-zero weights).

    Stability: encoders' ReLU embeddings start at different scales, and a scorer that sees
    raw scales hands nearly all the weight to one modality in the first steps; the other
    encoder then gets little gradient and the run depends on the seed. Normalising each
    modality (`normalize=True`) puts them on one scale, and a zero-initialised `v`
    (`score_initializer="zeros"`) starts every row at uniform weights, so both encoders learn
    before the attention commits. `normalize=False, score_initializer="glorot_uniform"` is the
    earlier behaviour (configs saved without these keys load with it).

    Per-modality weights are created in `build()`, where the modalities become known.

    Args:
        units: int. Hidden size of the attention scorer.
        output_dim: optional int. If set, every modality is projected to this size first; if
            None, the modalities must all have the same size and are used as they are.
        return_weights: bool. If True, `call` returns a dict `{"fused": (batch, dim),
            "weights": (batch, num_modalities)}`, weights in sorted-modality order, so the
            attention can be inspected (or exported as a second model output).
        normalize: bool. Layer-normalise each modality (after the projection).
        temperature: float > 0. Divides the attention scores (higher: softer weights).
        score_initializer: initializer of the scorer's output vector `v`.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: dict of `(batch, dim_m)` tensors.
        presence: optional dict of `(batch,)` flags (1 present, 0 missing).

    Example:
    ```python
    import numpy as np
    import mmkeras
    out = mmkeras.layers.AttentionFusion(units=8, return_weights=True)(
        {"image": np.ones((2, 4)), "audio": np.zeros((2, 4))},
        presence={"audio": np.array([1.0, 0.0])},
    )
    out["fused"].shape, out["weights"]  # (2, 4); row 1's weights are [0, 1]
    ```

    References:
        - [Bahdanau et al., 2015](https://arxiv.org/abs/1409.0473), additive attention.
        - [Hori et al., 2017](https://arxiv.org/abs/1701.03126), attention-based multimodal
          fusion.
    """

    def __init__(
        self,
        units=32,
        output_dim=None,
        return_weights=False,
        normalize=True,
        temperature=1.0,
        score_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not temperature > 0:
            raise ValueError(f"`temperature` must be > 0, got {temperature}.")
        self.units = int(units)
        self.output_dim = None if output_dim is None else int(output_dim)
        self.return_weights = return_weights
        self.normalize = bool(normalize)
        self.temperature = float(temperature)
        self.score_initializer = keras.initializers.get(score_initializer)
        self.score_hidden = keras.layers.Dense(
            self.units, activation="tanh", dtype=self.dtype_policy, name="score_hidden"
        )
        self.score_output = keras.layers.Dense(
            1, use_bias=False, kernel_initializer=self.score_initializer,
            dtype=self.dtype_policy, name="score_output",
        )

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        # Saved before the stabilised defaults existed: keep the earlier behaviour.
        config.setdefault("normalize", False)
        config.setdefault("score_initializer", "glorot_uniform")
        return cls(**config)

    def _fused_dim(self, shapes):
        return self.output_dim if self.output_dim is not None else shapes[0][-1]

    def build_fusion(self, shapes):
        if self.output_dim is None and len({shape[-1] for shape in shapes}) > 1:
            dims = {name: shape[-1] for name, shape in zip(self.modality_names, shapes)}
            raise ValueError(
                f"AttentionFusion with `output_dim=None` needs modalities of one size, got {dims}."
            )
        self.kernels, self.biases = [], []
        if self.output_dim is not None:
            self.kernels, self.biases = self.add_modality_projections(shapes, self.output_dim)
        self.modality_bias = self.add_weight(
            name="modality_bias", shape=(len(shapes),), initializer="zeros"
        )
        dim = self._fused_dim(shapes)
        self.norms = []
        if self.normalize:
            for name in self.modality_names:
                norm = keras.layers.LayerNormalization(dtype=self.dtype_policy, name=f"{name}_norm")
                norm.build((None, dim))
                self.norms.append(norm)
        self.score_hidden.build((None, dim))
        self.score_output.build((None, self.units))

    def fuse(self, tensors, flags, training=None):
        hidden = []
        for i, (tensor, flag) in enumerate(zip(tensors, flags)):
            h = self.masked(ops.cast(tensor, self.compute_dtype), flag)
            if self.output_dim is not None:
                h = self.masked(ops.matmul(h, self.kernels[i]) + self.biases[i], flag)
            if self.normalize:
                h = self.masked(self.norms[i](h), flag)
            hidden.append(h)
        stacked = ops.stack(hidden, axis=1)  # (batch, M, dim)
        scores = ops.squeeze(self.score_output(self.score_hidden(stacked)), axis=-1)
        if self.temperature != 1.0:
            scores = scores / ops.cast(self.temperature, scores.dtype)
        scores = scores + ops.cast(self.modality_bias, self.compute_dtype)
        mask = ops.concatenate(flags, axis=-1)  # (batch, M)
        weights = masked_softmax(scores, mask, axis=-1)
        fused = ops.sum(ops.expand_dims(weights, -1) * stacked, axis=1)
        if self.return_weights:
            return {"fused": fused, "weights": weights}
        return fused

    def fused_output_shape(self, shapes):
        fused = (shapes[0][0], self._fused_dim(shapes))
        if self.return_weights:
            return {"fused": fused, "weights": (shapes[0][0], len(shapes))}
        return fused

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "output_dim": self.output_dim,
                "return_weights": self.return_weights,
                "normalize": self.normalize,
                "temperature": self.temperature,
                "score_initializer": keras.initializers.serialize(self.score_initializer),
            }
        )
        return config
