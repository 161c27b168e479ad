"""Decision-level fusion: combine per-modality class probabilities with a chosen combiner."""

import keras
from keras import ops

from mmkeras.api_export import mmkeras_export
from mmkeras.layers.fusion.base_fusion import BaseFusion
from mmkeras.layers.fusion.fusion_utils import masked_softmax


@mmkeras_export("mmkeras.layers.DecisionFusion")
class DecisionFusion(BaseFusion):
    """Combines per-modality class probabilities `P_m` (each from its own head) into one.

    Combiners, each taken over the modalities present in a row:
    - `"mean"`: `sum_m P_m / M_present`.
    - `"weighted"`: `sum_m w_m P_m` with `w = softmax(r)` over the present modalities and `r`
      one learned logit per modality.
    - `"product"`: product of experts, `softmax(sum_m log P_m)` = `prod_m P_m`, renormalised
      (probabilities are clipped at `epsilon` before the log).
    - `"vote"`: majority vote. At inference each modality casts one hard vote for its arg-max
      class (a modality whose own top classes tie splits its vote equally); the output is the
      share of votes per class, e.g. votes for classes (0, 0, 1) give `[2/3, 1/3]`. A tie
      between classes in the vote count (frequent with two modalities) is broken by the mean
      probability: `tie_break * mean_m P_m` is added before renormalising, too small to
      overturn a vote. Hard votes are piecewise constant and have no gradient, so in training
      (`training=True`) the layer returns the mean combiner instead, its differentiable
      relaxation: the heads learn through the soft vote and predict with the hard one.
    - `"stacking"`: a meta-classifier, `softmax([F_1 p_1, ..., F_M p_M, p_1, ..., p_M] K + c)`
      over the concatenated features `F_m` of the present modalities (missing ones zeroed) and
      the presence flags `p_m`. With `stacking_input="log_probs"` (default) `F_m = log P_m`
      (floored at `epsilon`) and `meta_initializer="identity"` starts `K` as one identity
      block per modality (zeros for the flags), so the meta-classifier starts as the product
      of experts and learns to reweight classes and modalities from there. A randomly
      initialised `K` over raw probabilities (`stacking_input="probs"`,
      `meta_initializer="glorot_uniform"`, the earlier behaviour and what configs saved
      without these keys load with) scrambles the classes at the start: each head then has
      to learn through a random class mapping and the weaker modality's head barely learns.

    A row with no modality present gets the uniform distribution (all combiners). The weights
    of `"weighted"` and `"stacking"` are created in `build()`.

    Args:
        combiner: one of `"mean"`, `"weighted"`, `"product"`, `"vote"`, `"stacking"`.
        epsilon: float. Probability floor of `"product"`.
        tie_break: float. Weight of the mean probability added to the vote shares of
            `"vote"` to break ties (must stay below `1 / num_modalities`).
        stacking_input: `"log_probs"` or `"probs"`: what the `"stacking"` meta-classifier
            reads.
        meta_initializer: `"identity"` (see above) or any Keras initializer of the
            `"stacking"` kernel.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: dict of `(batch, num_classes)` probability vectors.
        presence: optional dict of `(batch,)` flags (1 present, 0 missing).

    Example:
    ```python
    import numpy as np
    import mmkeras
    probs = mmkeras.layers.DecisionFusion(combiner="vote")(
        {
            "audio": np.array([[0.6, 0.4]]),
            "image": np.array([[0.9, 0.1]]),
            "text": np.array([[0.2, 0.8]]),
        }
    )  # [[2/3, 1/3]]
    ```

    References:
        - [Kittler et al., 1998](https://doi.org/10.1109/34.667881), On combining classifiers.
        - [Wolpert, 1992](https://doi.org/10.1016/S0893-6080(05)80023-1), stacked
          generalization.
    """

    same_dims = True
    combiners = ("mean", "weighted", "product", "vote", "stacking")

    stacking_inputs = ("log_probs", "probs")

    def __init__(
        self,
        combiner="mean",
        epsilon=1e-7,
        tie_break=1e-3,
        stacking_input="log_probs",
        meta_initializer="identity",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if combiner not in self.combiners:
            raise ValueError(f"Unknown combiner '{combiner}'; choose one of {self.combiners}.")
        if stacking_input not in self.stacking_inputs:
            raise ValueError(
                f"`stacking_input` must be one of {self.stacking_inputs}, got {stacking_input!r}."
            )
        self.combiner = combiner
        self.epsilon = epsilon
        self.tie_break = tie_break
        self.stacking_input = stacking_input
        self.meta_initializer = (
            "identity" if meta_initializer == "identity"
            else keras.initializers.get(meta_initializer)
        )

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        # Saved before the log-probability stacking existed: the earlier meta-classifier.
        config.setdefault("stacking_input", "probs")
        config.setdefault("meta_initializer", "glorot_uniform")
        return cls(**config)

    def _meta_initializer(self, num_modalities, num_classes):
        if self.meta_initializer != "identity":
            return self.meta_initializer
        eye = [[float(i == j) for j in range(num_classes)] for i in range(num_classes)]
        rows = eye * num_modalities + [[0.0] * num_classes] * num_modalities
        return keras.initializers.Constant(rows)

    def build_fusion(self, shapes):
        num_modalities, num_classes = len(shapes), shapes[0][-1]
        if self.combiner == "weighted":
            self.modality_logits = self.add_weight(
                name="modality_logits", shape=(num_modalities,), initializer="zeros"
            )
        elif self.combiner == "stacking":
            self.meta_kernel = self.add_weight(
                name="meta_kernel",
                shape=(num_modalities * (num_classes + 1), num_classes),
                initializer=self._meta_initializer(num_modalities, num_classes),
            )
            self.meta_bias = self.add_weight(
                name="meta_bias", shape=(num_classes,), initializer="zeros"
            )

    def fuse(self, tensors, flags, training=None):
        probs = [self.masked(ops.cast(t, self.compute_dtype), f) for t, f in zip(tensors, flags)]
        count = sum(flags[1:], flags[0])
        mean = sum(probs[1:], probs[0]) / ops.maximum(count, 1.0)
        if self.combiner == "mean" or (self.combiner == "vote" and training):
            fused = mean
        elif self.combiner == "weighted":
            mask = ops.concatenate(flags, axis=-1)
            logits = ops.expand_dims(self.modality_logits, 0) * ops.ones_like(mask)
            weights = masked_softmax(logits, mask, axis=-1)
            terms = [weights[:, i : i + 1] * p for i, p in enumerate(probs)]
            fused = sum(terms[1:], terms[0])
        elif self.combiner == "product":
            logs = [
                self.masked(ops.log(ops.maximum(p, self.epsilon)), f) for p, f in zip(probs, flags)
            ]
            fused = ops.softmax(sum(logs[1:], logs[0]), axis=-1)
        elif self.combiner == "vote":
            votes = []
            for p, f in zip(probs, flags):
                hits = ops.cast(p >= ops.max(p, axis=-1, keepdims=True), self.compute_dtype)
                votes.append(self.masked(hits / ops.sum(hits, axis=-1, keepdims=True), f))
            shares = sum(votes[1:], votes[0]) / ops.maximum(count, 1.0)
            fused = (shares + self.tie_break * mean) / (1.0 + self.tie_break)
        else:
            if self.stacking_input == "log_probs":
                features = [
                    self.masked(ops.log(ops.maximum(p, self.epsilon)), f)
                    for p, f in zip(probs, flags)
                ]
            else:
                features = probs
            meta_inputs = ops.concatenate(features + list(flags), axis=-1)
            fused = ops.softmax(ops.matmul(meta_inputs, self.meta_kernel) + self.meta_bias)
        uniform = ops.ones_like(fused) / fused.shape[-1]
        return ops.where(count > 0, fused, uniform)

    def fused_output_shape(self, shapes):
        return shapes[0]

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "combiner": self.combiner,
                "epsilon": self.epsilon,
                "tie_break": self.tie_break,
                "stacking_input": self.stacking_input,
                "meta_initializer": (
                    "identity" if self.meta_initializer == "identity"
                    else keras.initializers.serialize(self.meta_initializer)
                ),
            }
        )
        return config
