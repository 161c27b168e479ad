"""Building blocks shared by the attention fusion layers (`keras.ops` only).

- `PreNormTransformerBlock`: one pre-norm Transformer block, self- or cross-attention
  (queries from one sequence, keys and values from another) and a feed-forward network.
- `sinusoidal_positions`: the fixed sine/cosine position code of Vaswani et al. (2017).
- `AttentionPooling`: a learned softmax over the steps of a sequence (masked).
"""

import math

import keras
from keras import ops

from mmkeras.layers.fusion.fusion_utils import masked_mean
from mmkeras.layers.fusion.fusion_utils import masked_softmax

POOLINGS = ("mean", "last", "attention")


def sinusoidal_positions(steps, dim, dtype):
    """`(steps, dim)` sine/cosine position code: `sin(p / 10000^(2i/d))`, `cos(...)` interleaved.

    `steps` may be a tensor (dynamic length); the code needs only Range/Sin/Cos, which are
    TFLite builtins.
    """
    positions = ops.cast(ops.arange(steps), "float32")[:, None]  # (steps, 1)
    half = (dim + 1) // 2
    rates = ops.exp(
        ops.cast(ops.arange(half), "float32") * (-2.0 * math.log(10000.0) / max(dim, 1))
    )
    angles = positions * rates[None, :]  # (steps, half)
    code = ops.stack([ops.sin(angles), ops.cos(angles)], axis=-1)  # (steps, half, 2)
    code = ops.reshape(code, (-1, 2 * half))[:, :dim]
    return ops.cast(code, dtype)


@keras.saving.register_keras_serializable(package="mmkeras")
class PreNormTransformerBlock(keras.layers.Layer):
    """`x + MHA(LN(x), LN(s))`, then `x + FFN(LN(x))`: one pre-norm Transformer block.

    With `cross=True` the keys and values come from a second sequence `source` (normalised by
    its own LayerNorm), as in the cross-modal blocks of MulT; otherwise from `x` itself.
    `source_gate` `(batch, 1, 1)` scales the attention branch (0 drops it: a missing source).

    Args:
        embed_dim: int. Width of `x` (and of the output).
        num_heads: int. Attention heads; `embed_dim` must be divisible by it.
        intermediate_dim: int. Hidden width of the feed-forward network.
        dropout: float. Dropout of the attention weights and of both residual branches.
        activation: activation of the feed-forward network.
        layer_norm_epsilon: float.
        cross: bool. Keys and values from `source` (True) or from `x` (False).
        **kwargs: standard `keras.layers.Layer` arguments.
    """

    def __init__(
        self,
        embed_dim,
        num_heads,
        intermediate_dim,
        dropout=0.0,
        activation="relu",
        layer_norm_epsilon=1e-5,
        cross=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if embed_dim % num_heads:
            raise ValueError(
                f"`embed_dim` ({embed_dim}) must be divisible by `num_heads` ({num_heads})."
            )
        self.embed_dim = int(embed_dim)
        self.num_heads = int(num_heads)
        self.intermediate_dim = int(intermediate_dim)
        self.dropout = dropout
        self.activation = keras.activations.get(activation)
        self.layer_norm_epsilon = layer_norm_epsilon
        self.cross = bool(cross)

        def norm(name):
            return keras.layers.LayerNormalization(
                epsilon=layer_norm_epsilon, dtype=self.dtype_policy, name=name
            )

        self.query_norm = norm("query_norm")
        self.source_norm = norm("source_norm") if self.cross else None
        self.attention = keras.layers.MultiHeadAttention(
            num_heads=self.num_heads,
            key_dim=self.embed_dim // self.num_heads,
            dropout=dropout,
            dtype=self.dtype_policy,
            name="attention",
        )
        self.ffn_norm = norm("ffn_norm")
        self.ffn_inner = keras.layers.Dense(
            self.intermediate_dim, activation=self.activation, dtype=self.dtype_policy,
            name="ffn_inner",
        )
        self.ffn_outer = keras.layers.Dense(
            self.embed_dim, dtype=self.dtype_policy, name="ffn_outer"
        )
        self.dropout_layer = keras.layers.Dropout(dropout, dtype=self.dtype_policy, name="dropout")

    def build(self, query_shape, source_shape=None):
        query_shape = tuple(query_shape)
        source_shape = tuple(source_shape) if source_shape is not None else query_shape
        self.query_norm.build(query_shape)
        if self.cross:
            self.source_norm.build(source_shape)
        self.attention.build(query_shape, source_shape)
        self.ffn_norm.build(query_shape)
        self.ffn_inner.build(query_shape)
        self.ffn_outer.build(self.ffn_inner.compute_output_shape(query_shape))
        self.built = True

    def call(self, x, source=None, attention_mask=None, source_gate=None, training=None):
        h = self.query_norm(x)
        if self.cross:
            s = self.source_norm(source)
        else:
            s = h
        h = self.attention(
            query=h, value=s, key=s, attention_mask=attention_mask, training=training
        )
        h = self.dropout_layer(h, training=training)
        if source_gate is not None:
            h = h * source_gate
        x = x + h
        h = self.ffn_outer(self.dropout_layer(self.ffn_inner(self.ffn_norm(x)), training=training))
        return x + self.dropout_layer(h, training=training)

    def compute_output_shape(self, query_shape, source_shape=None):
        return tuple(query_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "embed_dim": self.embed_dim,
                "num_heads": self.num_heads,
                "intermediate_dim": self.intermediate_dim,
                "dropout": self.dropout,
                "activation": keras.activations.serialize(self.activation),
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "cross": self.cross,
            }
        )
        return config


def pool_sequence(sequence, token_mask, pooling, scorer=None):
    """`(batch, steps, dim)` -> `(batch, dim)` by `pooling` over the steps where `token_mask`
    `(batch, steps)` is nonzero: `"mean"`, `"last"` (the final step) or `"attention"`
    (`softmax(scorer(sequence))`, `scorer` a `Dense(1)`)."""
    if pooling == "last":
        return sequence[:, -1, :]
    if pooling == "attention":
        scores = ops.squeeze(scorer(sequence), -1)  # (batch, steps)
        weights = masked_softmax(scores, token_mask, axis=-1)
        return ops.sum(ops.expand_dims(weights, -1) * sequence, axis=1)
    return masked_mean(sequence, ops.expand_dims(token_mask, -1), axis=1)
