"""A pre-norm Transformer decoder block: causal self-attention, cross-attention, feed-forward."""

import keras

from mmkeras.api_export import mmkeras_export


@mmkeras_export("mmkeras.layers.TransformerDecoderBlock")
class TransformerDecoderBlock(keras.layers.Layer):
    """A pre-LayerNorm Transformer decoder block: causal self-attention, cross-attention to a
    memory, feed-forward; all three residual.

    Args:
        num_heads: attention heads.
        intermediate_dim: width of the feed-forward layer.
        dropout: dropout rate on attention weights and residual branches.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: `(batch, steps, dim)`, the sequence so far.
        memory: `(batch, memory_steps, memory_dim)`, e.g. image tokens.
        training: Python bool, for dropout.

    Example:
    ```python
    import numpy as np
    block = TransformerDecoderBlock(2, 32)
    block(np.zeros((2, 5, 16), "float32"), np.zeros((2, 9, 16), "float32")).shape  # (2, 5, 16)
    ```

    References:
        - [Vaswani et al., 2017](https://arxiv.org/abs/1706.03762).
    """

    def __init__(self, num_heads, intermediate_dim, dropout=0.1, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = int(num_heads)
        self.intermediate_dim = int(intermediate_dim)
        self.dropout = float(dropout)
        policy = self.dtype_policy
        self.self_attention_norm = keras.layers.LayerNormalization(
            epsilon=1e-6, dtype=policy, name="self_attention_norm"
        )
        self.cross_attention_norm = keras.layers.LayerNormalization(
            epsilon=1e-6, dtype=policy, name="cross_attention_norm"
        )
        self.ffn_norm = keras.layers.LayerNormalization(epsilon=1e-6, dtype=policy, name="ffn_norm")
        self.ffn_in = keras.layers.Dense(
            self.intermediate_dim, activation="gelu", dtype=policy, name="ffn_in"
        )
        self.residual_dropout = keras.layers.Dropout(self.dropout, dtype=policy)

    def build(self, inputs_shape, memory_shape):
        dim = inputs_shape[-1]
        key_dim = max(dim // self.num_heads, 1)
        self.self_attention = keras.layers.MultiHeadAttention(
            self.num_heads, key_dim=key_dim, dropout=self.dropout, dtype=self.dtype_policy,
            name="self_attention",
        )
        self.self_attention.build(inputs_shape, inputs_shape)
        self.cross_attention = keras.layers.MultiHeadAttention(
            self.num_heads, key_dim=key_dim, dropout=self.dropout, dtype=self.dtype_policy,
            name="cross_attention",
        )
        self.cross_attention.build(inputs_shape, memory_shape)
        self.ffn_out = keras.layers.Dense(dim, dtype=self.dtype_policy, name="ffn_out")
        for norm in (self.self_attention_norm, self.cross_attention_norm, self.ffn_norm):
            norm.build(inputs_shape)
        self.ffn_in.build(inputs_shape)
        self.ffn_out.build((*inputs_shape[:-1], self.intermediate_dim))
        self.built = True

    def call(self, inputs, memory, training=None):
        x = self.self_attention_norm(inputs)
        x = self.self_attention(x, x, use_causal_mask=True, training=training)
        x = inputs + self.residual_dropout(x, training=training)
        y = self.cross_attention_norm(x)
        y = self.cross_attention(y, memory, training=training)
        x = x + self.residual_dropout(y, training=training)
        y = self.ffn_out(self.ffn_in(self.ffn_norm(x)))
        return x + self.residual_dropout(y, training=training)

    def compute_output_shape(self, inputs_shape, memory_shape=None):
        return inputs_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads, intermediate_dim=self.intermediate_dim,
            dropout=self.dropout,
        )
        return config
