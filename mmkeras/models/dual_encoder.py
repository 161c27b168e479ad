"""A two-tower (dual) encoder trained to align two modalities in one embedding space.

Each modality's encoder is followed by a projection to `embedding_dim` and L2 normalisation;
a `LogitScale` layer holds the learnable temperature (and SigLIP's bias). The pair loss is
given to `compile` (`CLIPLoss`, `SigLIPLoss` or `CCALoss`) and computed in a custom
`train_step` on the embeddings of the whole global batch (the losses all-gather across
replicas), so training under `MirroredStrategy` with any number of replicas optimises the
same objective as on one device.
"""

import keras
from keras import ops

from mmkeras.api_export import mmkeras_export
from mmkeras.layers.logit_scale import LogitScale
from mmkeras.layers.subspace_projection import scatter_alignment_penalty
from mmkeras.losses import PAIR_LOSSES
from mmkeras.losses.contrastive_loss import ContrastiveLoss
from mmkeras.losses.contrastive_loss import l2_normalize
from mmkeras.losses.distributed import num_replicas_in_sync


def embedding_key(modality):
    """The output name of a modality's embedding, e.g. `"image_embedding"`."""
    return f"{modality}_embedding"


@mmkeras_export("mmkeras.models.DualEncoder")
class DualEncoder(keras.Model):
    """Two encoders + projections into a shared, L2-normalised embedding space.

    Args:
        encoders: a dict of two modality names to encoder models (`keras.Input(name=<m>)` ->
            `(batch, d_m)`), e.g. from `mmkeras.models.build_encoder`.
        embedding_dim: the shared embedding size.
        projection_units: hidden units of an MLP before each final projection (empty: a
            linear projection, as in CLIP).
        temperature: initial temperature of the `LogitScale` layer.
        learn_temperature: learn the temperature.
        max_logit_scale: clip of the logit scale (CLIP: 100).
        logit_bias: None, or the initial learnable logit bias (SigLIP: -10).
        normalize: L2-normalise the embeddings (CCA training sets this to False).
        projection_norm: None, or `"batch"`: batch-normalise each projection's output (no
            learned scale). Encoders ending in ReLU put every embedding of a modality in one
            narrow cone (mean cosine ~0.98 at initialisation); centring per batch spreads them
            over the sphere, which speeds up contrastive training from scratch a lot.
        scatter_alignment: weight `lambda` of the subspace projection's scatter-alignment
            penalty `lambda * sum_m ||S_m - S_mean||_F^2` on the batch's embeddings
            (`S_m = Z_m^T Z_m / n`; `mmkeras.layers.subspace_projection`), added to the pair
            loss: both modalities spread their examples alike in the shared space. 0: off.
        **kwargs: `keras.Model` arguments (`name`).

    Call arguments:
        inputs: a dict holding (at least) one tensor per modality, keyed by modality name.

    Returns:
        `{"<m>_embedding": (batch, embedding_dim)}` for both modalities.

    Example:
    ```python
    import numpy as np
    import keras
    import mmkeras
    def tower(name, dim):
        x = keras.Input((dim,), name=name)
        return keras.Model(x, keras.layers.Dense(8)(x), name=f"{name}_encoder")
    model = mmkeras.models.DualEncoder({"image": tower("image", 5), "audio": tower("audio", 3)},
                                       embedding_dim=4)
    model.compile(optimizer="adam", loss=mmkeras.losses.CLIPLoss())
    x = {"image": np.ones((16, 5), "float32"), "audio": np.ones((16, 3), "float32")}
    model.fit(x, epochs=1, verbose=0)
    model.predict(x, verbose=0)["image_embedding"].shape  # (16, 4)
    ```

    References:
        - [Radford et al., 2021](https://arxiv.org/abs/2103.00020), CLIP.
    """

    def __init__(
        self,
        encoders,
        embedding_dim=64,
        projection_units=(),
        temperature=0.07,
        learn_temperature=True,
        max_logit_scale=100.0,
        logit_bias=None,
        normalize=True,
        projection_norm=None,
        scatter_alignment=0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if scatter_alignment < 0:
            raise ValueError(f"scatter_alignment must be >= 0, got {scatter_alignment}.")
        if projection_norm not in (None, "batch"):
            raise ValueError(f"projection_norm must be None or 'batch', got {projection_norm!r}.")
        if len(encoders) != 2:
            raise ValueError(f"DualEncoder takes exactly two encoders, got {sorted(encoders)}.")
        self.modalities = tuple(sorted(encoders))
        self.encoders = dict(encoders)
        self.embedding_dim = int(embedding_dim)
        self.projection_units = [int(u) for u in projection_units]
        self.temperature = float(temperature)
        self.learn_temperature = bool(learn_temperature)
        self.max_logit_scale = None if max_logit_scale is None else float(max_logit_scale)
        self.logit_bias = None if logit_bias is None else float(logit_bias)
        self.normalize = bool(normalize)
        self.projection_norm = projection_norm
        self.scatter_alignment = float(scatter_alignment)
        self.projections = {}
        for m in self.modalities:
            units = [*self.projection_units, self.embedding_dim]
            layers = [
                keras.layers.Dense(
                    u,
                    activation="relu" if i < len(units) - 1 else None,
                    name=f"{m}_projection{i}" if i < len(units) - 1 else f"{m}_projection",
                )
                for i, u in enumerate(units)
            ]
            if projection_norm == "batch":
                layers.append(
                    keras.layers.BatchNormalization(
                        momentum=0.9, scale=False, name=f"{m}_projection_norm"
                    )
                )
            shape = self.encoders[m].output_shape
            for layer in layers:
                layer.build(shape)
                shape = layer.compute_output_shape(shape)
            self.projections[m] = layers
        self.logit_scale = LogitScale(
            temperature=self.temperature,
            learnable=self.learn_temperature,
            max_scale=self.max_logit_scale,
            bias=self.logit_bias,
            name="logit_scale",
        )
        self.pair_loss = None
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.temperature_tracker = keras.metrics.Mean(name="temperature")
        self.built = True

    def build(self, input_shape=None):
        self.built = True

    def call(self, inputs, training=None):
        outputs = {}
        for m in self.modalities:
            z = self.encoders[m](inputs[m], training=training)
            for layer in self.projections[m]:
                z = layer(z, training=training) if self.projection_norm else layer(z)
            z = ops.cast(z, "float32")
            outputs[embedding_key(m)] = l2_normalize(z) if self.normalize else z
        if self.scatter_alignment:
            # The subspace projection's penalty: both modalities spread their examples alike
            # in the shared space (`mmkeras.layers.subspace_projection`), on this batch.
            self.add_loss(self.scatter_alignment * scatter_alignment_penalty(
                [outputs[embedding_key(m)] for m in self.modalities], normalize=True))
        return outputs

    def compile(self, optimizer="adam", loss="clip", **kwargs):
        """Like `keras.Model.compile`; `loss` is the pair loss: a `CLIPLoss`, `SigLIPLoss`,
        `CCALoss` (or `"clip"`, `"siglip"`, `"cca"`) reading `y_pred` as a dict of embeddings
        plus `logit_scale` / `logit_bias`."""
        if isinstance(loss, str):
            if loss not in PAIR_LOSSES:
                raise ValueError(f"Unknown pair loss '{loss}'. Known: {sorted(PAIR_LOSSES)}.")
            loss = PAIR_LOSSES[loss](embedding_keys=[embedding_key(m) for m in self.modalities])
        self.pair_loss = loss
        if not isinstance(loss, ContrastiveLoss):  # e.g. CCA: no logits, nothing to learn
            for variable in self.logit_scale.weights:
                variable.trainable = False
        super().compile(optimizer=optimizer, **kwargs)

    def get_compile_config(self):
        if self.pair_loss is None or self.optimizer is None:
            return None
        return {
            "optimizer": keras.optimizers.serialize(self.optimizer),
            "loss": keras.losses.serialize(self.pair_loss),
        }

    def compile_from_config(self, config):
        optimizer = keras.optimizers.deserialize(config["optimizer"])
        self.compile(optimizer=optimizer, loss=keras.losses.deserialize(config["loss"]))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    @property
    def metrics(self):
        if isinstance(self.pair_loss, ContrastiveLoss):
            return [self.loss_tracker, self.temperature_tracker]
        return [self.loss_tracker]

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if self.pair_loss is None:
            raise ValueError("Call compile(loss=...) before training the DualEncoder.")
        pair = dict(y_pred)
        pair["logit_scale"] = self.logit_scale.scale()
        if self.logit_bias is not None:
            pair["logit_bias"] = self.logit_scale.bias()
        loss = self.pair_loss(y, pair)  # mean over local rows, / replicas
        if self.losses:
            loss = loss + ops.sum(self.losses) / num_replicas_in_sync()
        return loss

    def _track(self, loss):
        # The loss was divided by the replicas for the gradient sum: undo it for the log.
        self.loss_tracker.update_state(loss * num_replicas_in_sync())
        if isinstance(self.pair_loss, ContrastiveLoss):
            self.temperature_tracker.update_state(1.0 / self.logit_scale.scale())
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):
        import tensorflow as tf

        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(x=x, y=y, y_pred=y_pred, training=True)
            scaled = self.optimizer.scale_loss(loss)
        weights = self.trainable_weights
        gradients = tape.gradient(scaled, weights)
        self.optimizer.apply_gradients(zip(gradients, weights))
        return self._track(loss)

    def test_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        y_pred = self(x, training=False)
        loss = self.compute_loss(x=x, y=y, y_pred=y_pred, training=False)
        return self._track(loss)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "encoders": {m: keras.layers.serialize(e) for m, e in self.encoders.items()},
                "embedding_dim": self.embedding_dim,
                "projection_units": self.projection_units,
                "temperature": self.temperature,
                "learn_temperature": self.learn_temperature,
                "max_logit_scale": self.max_logit_scale,
                "logit_bias": self.logit_bias,
                "normalize": self.normalize,
                "projection_norm": self.projection_norm,
                "scatter_alignment": self.scatter_alignment,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["encoders"] = {
            m: keras.layers.deserialize(e) for m, e in config["encoders"].items()
        }
        return cls(**config)
