"""End-to-end fusion: one Transformer encoder over the tokens of every modality."""

import keras
from keras import ops

from mmkeras.api_export import mmkeras_export
from mmkeras.layers.fusion.base_fusion import BaseFusion
from mmkeras.layers.fusion.fusion_blocks import pool_sequence
from mmkeras.layers.fusion.fusion_blocks import sinusoidal_positions
from mmkeras.layers.fusion.fusion_utils import sequence_mask

POSITIONAL_EMBEDDINGS = ("sinusoidal", "none")
TRANSFORMER_POOLINGS = ("cls", "mean", "attention")


@mmkeras_export("mmkeras.layers.TransformerFusion")
class TransformerFusion(BaseFusion):
    """Joint self-attention over the concatenated token sequences of all modalities.

    Each modality's tokens are projected to `embed_dim` and tagged with a learned
    modality-type embedding and (`positional_embedding="sinusoidal"`) a sine/cosine position
    code that restarts for each modality, `T_m = X_m W_m + b_m + E_m + P`; the sequences are
    concatenated (sorted-modality order) behind an optional learned `[CLS]` token and run
    through `num_layers` pre-norm Transformer blocks (`keras.layers.MultiHeadAttention` and a
    two-layer feed-forward network, each with a residual connection), then a final
    `LayerNormalization`. The output is pooled by `pooling`: the `[CLS]` state, the mean of
    the present tokens' states, or a learned attention pooling over them.

    A rank-2 `(batch, dim_m)` input (an encoder's pooled embedding) becomes `vector_tokens`
    tokens (its projection to `vector_tokens * embed_dim`, reshaped); with the default 1 it
    is one token per modality and the encoder keeps every position-dependent feature it
    learned. Rank-2 and rank-3 inputs can be mixed. Without positions the tokens of a
    sequence are an unordered bag (the layer's earlier default, `positional_embedding="none"`,
    which configs saved without the key still load with).

    The tokens of a missing modality are masked out of every attention's keys (a padding mask
    built from the presence flags) and out of the mean pooling, so they never reach the
    output. A row with no modality present gives the state of a `[CLS]` token that attended
    only to itself (a learned constant), or zeros without `[CLS]`.

    Per-modality projections and type embeddings are created in `build()`, where the
    modalities become known.

    Args:
        embed_dim: int. Token size inside the encoder and size of the fused vector.
        num_heads: int. Attention heads; `embed_dim` must be divisible by it.
        num_layers: int. Number of Transformer blocks.
        intermediate_dim: optional int. Hidden size of the feed-forward networks; defaults to
            `2 * embed_dim`.
        dropout: float. Dropout rate (attention weights and residual branches).
        activation: activation of the feed-forward networks.
        use_cls_token: bool. Prepend a learned `[CLS]` token.
        layer_norm_epsilon: float. Epsilon of the layer normalisations.
        positional_embedding: `"sinusoidal"` or `"none"`.
        pooling: `"cls"` (needs `use_cls_token`), `"mean"` or `"attention"`; None: `"cls"`
            with a `[CLS]` token, else `"mean"`.
        vector_tokens: int. Tokens made from each rank-2 (pooled) input.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: dict of `(batch, steps_m, dim_m)` sequences (lengths and sizes may differ) or
            `(batch, dim_m)` pooled vectors.
        presence: optional dict of `(batch,)` flags (1 present, 0 missing).
        training: Python bool, turns dropout on.

    Example:
    ```python
    import numpy as np
    import mmkeras
    fused = mmkeras.layers.TransformerFusion(embed_dim=8, num_heads=2, num_layers=1)(
        {"audio": np.ones((2, 5, 3)), "text": np.ones((2, 7, 4))},
        presence={"audio": np.array([1.0, 0.0])},
    )  # shape (2, 8)
    ```

    References:
        - [Vaswani et al., 2017](https://arxiv.org/abs/1706.03762), the Transformer.
        - [Nagrani et al., 2021](https://arxiv.org/abs/2107.00135), multimodal Transformers
          with joint token sequences.
    """

    input_kind = "any"
    accepts_sequences = True

    def __init__(
        self,
        embed_dim=64,
        num_heads=4,
        num_layers=2,
        intermediate_dim=None,
        dropout=0.0,
        activation="relu",
        use_cls_token=True,
        layer_norm_epsilon=1e-5,
        positional_embedding="sinusoidal",
        pooling=None,
        vector_tokens=1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if embed_dim % num_heads:
            raise ValueError(
                f"`embed_dim` ({embed_dim}) must be divisible by `num_heads` ({num_heads})."
            )
        self.embed_dim = int(embed_dim)
        self.num_heads = int(num_heads)
        self.num_layers = int(num_layers)
        self.intermediate_dim = None if intermediate_dim is None else int(intermediate_dim)
        self.dropout = dropout
        self.activation = keras.activations.get(activation)
        self.use_cls_token = use_cls_token
        self.layer_norm_epsilon = layer_norm_epsilon
        if positional_embedding not in POSITIONAL_EMBEDDINGS:
            raise ValueError(
                f"`positional_embedding` must be one of {POSITIONAL_EMBEDDINGS}, "
                f"got {positional_embedding!r}."
            )
        if pooling is not None and pooling not in TRANSFORMER_POOLINGS:
            raise ValueError(f"`pooling` must be one of {TRANSFORMER_POOLINGS}, got {pooling!r}.")
        if pooling == "cls" and not use_cls_token:
            raise ValueError("`pooling='cls'` needs `use_cls_token=True`.")
        if int(vector_tokens) < 1:
            raise ValueError(f"`vector_tokens` must be >= 1, got {vector_tokens}.")
        self.positional_embedding = positional_embedding
        self.pooling = pooling
        self.vector_tokens = int(vector_tokens)
        self._pooling = pooling or ("cls" if use_cls_token else "mean")
        self.pool_scorer = None
        if self._pooling == "attention":
            self.pool_scorer = keras.layers.Dense(
                1, use_bias=False, dtype=self.dtype_policy, name="pool_score"
            )

        hidden = self.intermediate_dim or 2 * self.embed_dim

        def norm(name):
            return keras.layers.LayerNormalization(
                epsilon=layer_norm_epsilon, dtype=self.dtype_policy, name=name
            )

        self.attention_norms = [norm(f"attention_norm_{i}") for i in range(self.num_layers)]
        self.attention_layers = [
            keras.layers.MultiHeadAttention(
                num_heads=self.num_heads,
                key_dim=self.embed_dim // self.num_heads,
                dropout=dropout,
                dtype=self.dtype_policy,
                name=f"attention_{i}",
            )
            for i in range(self.num_layers)
        ]
        self.ffn_norms = [norm(f"ffn_norm_{i}") for i in range(self.num_layers)]
        self.ffn_inner = [
            keras.layers.Dense(
                hidden, activation=self.activation, dtype=self.dtype_policy, name=f"ffn_inner_{i}"
            )
            for i in range(self.num_layers)
        ]
        self.ffn_outer = [
            keras.layers.Dense(self.embed_dim, dtype=self.dtype_policy, name=f"ffn_outer_{i}")
            for i in range(self.num_layers)
        ]
        self.dropout_layer = keras.layers.Dropout(dropout, dtype=self.dtype_policy, name="dropout")
        self.final_norm = norm("final_norm")

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config.setdefault("positional_embedding", "none")  # saved before positions existed
        return cls(**config)

    def build_fusion(self, shapes):
        for name, shape in zip(self.modality_names, shapes):
            if len(shape) not in (2, 3):
                raise ValueError(
                    f"TransformerFusion expects sequence inputs of rank 3 (or rank-2 vectors); "
                    f"modality '{name}' has shape {shape}."
                )
        units = [self.embed_dim * (self.vector_tokens if len(s) == 2 else 1) for s in shapes]
        self.kernels, self.biases = [], []
        for name, shape, width in zip(self.modality_names, shapes, units):
            kernel, bias = self._projection(name, shape, width)
            self.kernels.append(kernel)
            self.biases.append(bias)
        self.type_embeddings = self.add_weight(
            name="type_embeddings",
            shape=(len(shapes), self.embed_dim),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
        )
        if self.use_cls_token:
            self.cls_token = self.add_weight(
                name="cls_token",
                shape=(self.embed_dim,),
                initializer=keras.initializers.RandomNormal(stddev=0.02),
            )
        steps = [self.vector_tokens if len(shape) == 2 else shape[1] for shape in shapes]
        length = None if None in steps else sum(steps) + int(self.use_cls_token)
        tokens = (shapes[0][0], length, self.embed_dim)
        for i in range(self.num_layers):
            self.attention_norms[i].build(tokens)
            self.attention_layers[i].build(tokens, tokens)
            self.ffn_norms[i].build(tokens)
            self.ffn_inner[i].build(tokens)
            self.ffn_outer[i].build(self.ffn_inner[i].compute_output_shape(tokens))
        self.final_norm.build(tokens)
        if self.pool_scorer is not None:
            self.pool_scorer.build(tokens)

    def _projection(self, name, shape, units):
        kernel = self.add_weight(
            name=f"{name}_kernel", shape=(shape[-1], units), initializer="glorot_uniform"
        )
        bias = self.add_weight(name=f"{name}_bias", shape=(units,), initializer="zeros")
        return kernel, bias

    def fuse(self, tensors, flags, training=None):
        tokens = []
        masks = []
        for i, (tensor, flag) in enumerate(zip(tensors, flags)):
            x = self.masked(ops.cast(tensor, self.compute_dtype), flag)
            t = ops.matmul(x, self.kernels[i]) + self.biases[i]
            if len(x.shape) == 2:
                t = ops.reshape(t, (-1, self.vector_tokens, self.embed_dim))
            t = t + self.type_embeddings[i]
            if self.positional_embedding == "sinusoidal":
                t = t + sinusoidal_positions(ops.shape(t)[1], self.embed_dim, t.dtype)[None]
            tokens.append(t)
            masks.append(sequence_mask(t, flag))
        if self.use_cls_token:
            cls = ops.zeros_like(tokens[0][:, :1, :]) + self.cls_token
            tokens.insert(0, cls)
            masks.insert(0, ops.ones_like(masks[0][:, :1]))
        x = ops.concatenate(tokens, axis=1)  # (batch, length, embed_dim)
        mask = ops.concatenate(masks, axis=1)  # (batch, length)
        attention_mask = ops.expand_dims(ops.ones_like(mask), -1) * ops.expand_dims(mask, 1) > 0
        for i in range(self.num_layers):
            h = self.attention_norms[i](x)
            h = self.attention_layers[i](
                query=h, value=h, key=h, attention_mask=attention_mask, training=training
            )
            x = x + self.dropout_layer(h, training=training)
            h = self.ffn_outer[i](self.ffn_inner[i](self.ffn_norms[i](x)))
            x = x + self.dropout_layer(h, training=training)
        x = self.final_norm(x)
        if self._pooling == "cls":
            return x[:, 0, :]
        if self.use_cls_token:  # pool over the modality tokens only
            x, mask = x[:, 1:, :], mask[:, 1:]
        return pool_sequence(x, mask, self._pooling, self.pool_scorer)

    def fused_output_shape(self, shapes):
        return (shapes[0][0], self.embed_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "embed_dim": self.embed_dim,
                "num_heads": self.num_heads,
                "num_layers": self.num_layers,
                "intermediate_dim": self.intermediate_dim,
                "dropout": self.dropout,
                "activation": keras.activations.serialize(self.activation),
                "use_cls_token": self.use_cls_token,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "positional_embedding": self.positional_embedding,
                "pooling": self.pooling,
                "vector_tokens": self.vector_tokens,
            }
        )
        return config
