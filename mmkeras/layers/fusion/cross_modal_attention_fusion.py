"""Model-level fusion by cross-modal attention between modality sequences (MulT)."""

import math

import keras
from keras import ops

from mmkeras.api_export import mmkeras_export
from mmkeras.layers.fusion.base_fusion import BaseFusion
from mmkeras.layers.fusion.fusion_blocks import POOLINGS
from mmkeras.layers.fusion.fusion_blocks import PreNormTransformerBlock
from mmkeras.layers.fusion.fusion_blocks import pool_sequence
from mmkeras.layers.fusion.fusion_blocks import sinusoidal_positions
from mmkeras.layers.fusion.fusion_utils import sequence_mask

ARCHITECTURES = ("mult", "legacy")


@mmkeras_export("mmkeras.layers.CrossModalAttentionFusion")
class CrossModalAttentionFusion(BaseFusion):
    """The Multimodal Transformer (MulT): every modality's stream attends to every other's.

    `architecture="mult"` (the default) follows Tsai et al. (2019):
    1. Each modality is projected to `embed_dim` by a temporal `Conv1D` (kernel
       `conv_kernel_size`, "same" padding) and given sinusoidal positions (`positional_embedding`),
       then embedding dropout. A pooled `(batch, dim)` embedding becomes `vector_tokens` tokens
       (a Dense projection to `vector_tokens * embed_dim`, reshaped; see "Pooled inputs" below).
    2. For every ordered pair (target `t`, source `s != t`) a stack of `num_layers` pre-norm
       cross-modal blocks updates the target stream,
       `Z = Z + MHA(LN(Z), LN(X_s))`, `Z = Z + FFN(LN(Z))` (queries from the target, keys and
       values from the source), then a final LayerNorm.
    3. The target's streams from all its sources are concatenated along the features
       (width `(M - 1) * embed_dim`) and run through `self_attention_layers` pre-norm
       self-attention blocks and a LayerNorm.
    4. Each target stream is pooled over its steps (`pooling`: `"mean"`, `"last"` as in MulT,
       or `"attention"`) and the pooled vectors are concatenated in sorted-modality order:
       an output of size `M * (M - 1) * embed_dim` (`2 * embed_dim` for two modalities).

    `architecture="legacy"` is the layer's earlier form (linear projection, ONE post-norm
    cross-attention per pair summed over sources, `LN(S_t + sum_s MHA_ts)`, no feed-forward,
    no positions, mean pooling; output `M * embed_dim`): configs saved before the MulT form
    existed (no `architecture` key) load as legacy.

    Missing modalities: a missing source is masked out of the keys and its attention branch
    is dropped (gated by its flag), so the target keeps its own stream; a missing target's
    block of the output is zero. A row with no modality present gives zeros.

    Pooled inputs: with rank-2 `(batch, dim)` inputs (the encoders' pooled embeddings) and
    `vector_tokens=1` each modality is a length-1 sequence. Cross-attention over one key is
    then a softmax over one entry (weight 1): the block passes the projected source value
    through, and the layer is a stack of pre-norm residual MLP blocks mixing the two
    modalities, which keeps every position-dependent feature the encoders learned. With
    `vector_tokens=k > 1` the embedding is split into `k` learned slots that attend to each
    other. Rank-2 and rank-3 inputs can be mixed.

    Per-modality and per-pair layers are created in `build()`, where the modalities become
    known.

    Args:
        embed_dim: int. Common width of the projected streams.
        num_heads: int. Attention heads; `embed_dim` must be divisible by it.
        dropout: float. Dropout of the attention weights, residual branches and embeddings.
        layer_norm_epsilon: float. Epsilon of the layer normalisations.
        architecture: `"mult"` or `"legacy"` (see above).
        num_layers: int. Cross-modal blocks per (target, source) pair.
        self_attention_layers: int. Self-attention blocks over each target's fused stream.
        intermediate_dim: optional int. Feed-forward width per block; default 4x the width.
        conv_kernel_size: int. Kernel of the temporal projection of rank-3 inputs.
        positional_embedding: bool. Add sinusoidal positions to each projected stream.
        pooling: `"mean"`, `"last"` or `"attention"`.
        vector_tokens: int. Tokens made from each rank-2 (pooled) input.
        activation: activation of the feed-forward networks.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: dict of `(batch, steps_m, dim_m)` sequences (lengths and sizes may differ) or
            `(batch, dim_m)` pooled vectors (`"mult"` only).
        presence: optional dict of `(batch,)` flags (1 present, 0 missing).
        training: Python bool, turns dropout on.

    Example:
    ```python
    import numpy as np
    import mmkeras
    fused = mmkeras.layers.CrossModalAttentionFusion(embed_dim=8, num_heads=2)(
        {"audio": np.ones((2, 5, 3)), "text": np.ones((2, 7, 4))},
        presence={"audio": np.array([1.0, 0.0])},
    )  # shape (2, 16)
    ```

    References:
        - [Tsai et al., 2019](https://arxiv.org/abs/1906.00295), Multimodal Transformer (MulT).
        - [Xiong et al., 2020](https://arxiv.org/abs/2002.04745), pre-norm Transformers.
    """

    input_kind = "any"
    accepts_sequences = True
    min_modalities = 2

    def __init__(
        self,
        embed_dim=32,
        num_heads=2,
        dropout=0.0,
        layer_norm_epsilon=1e-5,
        architecture="mult",
        num_layers=2,
        self_attention_layers=1,
        intermediate_dim=None,
        conv_kernel_size=3,
        positional_embedding=True,
        pooling="mean",
        vector_tokens=1,
        activation="relu",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if embed_dim % num_heads:
            raise ValueError(
                f"`embed_dim` ({embed_dim}) must be divisible by `num_heads` ({num_heads})."
            )
        if architecture not in ARCHITECTURES:
            raise ValueError(
                f"`architecture` must be one of {ARCHITECTURES}, got {architecture!r}."
            )
        if pooling not in POOLINGS:
            raise ValueError(f"`pooling` must be one of {POOLINGS}, got {pooling!r}.")
        if int(vector_tokens) < 1 or int(num_layers) < 1 or int(self_attention_layers) < 0:
            raise ValueError(
                "`vector_tokens` and `num_layers` must be >= 1 and `self_attention_layers` >= 0."
            )
        self.embed_dim = int(embed_dim)
        self.num_heads = int(num_heads)
        self.dropout = dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        self.architecture = architecture
        self.num_layers = int(num_layers)
        self.self_attention_layers = int(self_attention_layers)
        self.intermediate_dim = None if intermediate_dim is None else int(intermediate_dim)
        self.conv_kernel_size = int(conv_kernel_size)
        self.positional_embedding = bool(positional_embedding)
        self.pooling = pooling
        self.vector_tokens = int(vector_tokens)
        self.activation = keras.activations.get(activation)
        self.embed_dropout = keras.layers.Dropout(
            dropout, dtype=self.dtype_policy, name="embed_dropout"
        )

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config.setdefault("architecture", "legacy")  # saved before the MulT form existed
        return cls(**config)

    # ------------------------------------------------------------------ build

    def build_fusion(self, shapes):
        for name, shape in zip(self.modality_names, shapes):
            if len(shape) not in (2, 3) or (self.architecture == "legacy" and len(shape) != 3):
                raise ValueError(
                    f"CrossModalAttentionFusion expects sequence inputs of rank 3"
                    f"{' (or rank-2 vectors)' if self.architecture == 'mult' else ''}; "
                    f"modality '{name}' has shape {shape}."
                )
        if self.architecture == "legacy":
            self._build_legacy(shapes)
        else:
            self._build_mult(shapes)

    def _block(self, width, name, cross):
        return PreNormTransformerBlock(
            width, self.num_heads, self.intermediate_dim or 4 * width, dropout=self.dropout,
            activation=self.activation, layer_norm_epsilon=self.layer_norm_epsilon, cross=cross,
            dtype=self.dtype_policy, name=name,
        )

    def _norm(self, name):
        return keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name=name
        )

    def _stream_shape(self, shape):
        steps = self.vector_tokens if len(shape) == 2 else shape[1]
        return (shape[0], steps, self.embed_dim)

    def _build_mult(self, shapes):
        names = self.modality_names
        self.projections = []
        for name, shape in zip(names, shapes):
            if len(shape) == 2:
                layer = keras.layers.Dense(
                    self.vector_tokens * self.embed_dim, dtype=self.dtype_policy,
                    name=f"{name}_token_projection",
                )
            else:
                layer = keras.layers.Conv1D(
                    self.embed_dim, self.conv_kernel_size, padding="same",
                    dtype=self.dtype_policy, name=f"{name}_temporal_projection",
                )
            layer.build(shape)
            self.projections.append(layer)
        streams = [self._stream_shape(shape) for shape in shapes]
        fused_width = (len(names) - 1) * self.embed_dim
        self.cross_blocks, self.cross_norms = [], []
        self.self_blocks, self.self_norms, self.pool_scorers = [], [], []
        for t, target in enumerate(names):
            for s, source in enumerate(names):
                if s == t:
                    continue
                stack = []
                for i in range(self.num_layers):
                    block = self._block(self.embed_dim, f"{target}_from_{source}_block_{i}", True)
                    block.build(streams[t], streams[s])
                    stack.append(block)
                self.cross_blocks.append(stack)
                norm = self._norm(f"{target}_from_{source}_norm")
                norm.build(streams[t])
                self.cross_norms.append(norm)
            fused_shape = streams[t][:2] + (fused_width,)
            stack = []
            for i in range(self.self_attention_layers):
                block = self._block(fused_width, f"{target}_self_block_{i}", False)
                block.build(fused_shape)
                stack.append(block)
            self.self_blocks.append(stack)
            norm = self._norm(f"{target}_self_norm")
            norm.build(fused_shape)
            self.self_norms.append(norm)
            scorer = None
            if self.pooling == "attention":
                scorer = keras.layers.Dense(
                    1, use_bias=False, dtype=self.dtype_policy, name=f"{target}_pool_score"
                )
                scorer.build(fused_shape)
            self.pool_scorers.append(scorer)

    def _build_legacy(self, shapes):
        names = self.modality_names
        self.kernels, self.biases = self.add_modality_projections(shapes, self.embed_dim)
        self.cross_attention_layers = []
        self.layer_norms = []
        for t, target in enumerate(names):
            query_shape = (shapes[t][0], shapes[t][1], self.embed_dim)
            for s, source in enumerate(names):
                if s == t:
                    continue
                attention = keras.layers.MultiHeadAttention(
                    num_heads=self.num_heads,
                    key_dim=self.embed_dim // self.num_heads,
                    dropout=self.dropout,
                    dtype=self.dtype_policy,
                    name=f"{target}_from_{source}_attention",
                )
                attention.build(query_shape, (shapes[s][0], shapes[s][1], self.embed_dim))
                self.cross_attention_layers.append(attention)
            norm = self._norm(f"{target}_norm")
            norm.build(query_shape)
            self.layer_norms.append(norm)

    # ------------------------------------------------------------------ call

    def fuse(self, tensors, flags, training=None):
        if self.architecture == "legacy":
            return self._fuse_legacy(tensors, flags, training)
        return self._fuse_mult(tensors, flags, training)

    def _project(self, i, tensor, flag, training):
        x = self.masked(ops.cast(tensor, self.compute_dtype), flag)
        z = self.projections[i](x)
        if len(x.shape) == 2:
            z = ops.reshape(z, (-1, self.vector_tokens, self.embed_dim))
        # As in MulT, scale the projection by sqrt(d) so the positions do not swamp it.
        z = z * ops.cast(math.sqrt(self.embed_dim), z.dtype)
        if self.positional_embedding:
            z = z + sinusoidal_positions(ops.shape(z)[1], self.embed_dim, z.dtype)[None]
        z = self.embed_dropout(z, training=training)
        return self.masked(z, flag)

    def _fuse_mult(self, tensors, flags, training):
        streams = [
            self._project(i, tensor, flag, training)
            for i, (tensor, flag) in enumerate(zip(tensors, flags))
        ]
        token_masks = [sequence_mask(z, flag) for z, flag in zip(streams, flags)]
        pooled = []
        pair = 0
        for t, (target, flag) in enumerate(zip(streams, flags)):
            query_ones = ops.expand_dims(ops.ones_like(token_masks[t]), -1)  # (batch, T, 1)
            fused = []
            for s, (source, source_flag) in enumerate(zip(streams, flags)):
                if s == t:
                    continue
                attention_mask = query_ones * ops.expand_dims(token_masks[s], 1) > 0
                gate = ops.expand_dims(source_flag, -1)  # (batch, 1, 1)
                h = target
                for block in self.cross_blocks[pair]:
                    h = block(
                        h, source=source, attention_mask=attention_mask, source_gate=gate,
                        training=training,
                    )
                fused.append(self.cross_norms[pair](h))
                pair += 1
            h = fused[0] if len(fused) == 1 else ops.concatenate(fused, axis=-1)
            self_mask = query_ones * ops.expand_dims(token_masks[t], 1) > 0
            for block in self.self_blocks[t]:
                h = block(h, attention_mask=self_mask, training=training)
            h = self.self_norms[t](h)
            vector = pool_sequence(h, token_masks[t], self.pooling, self.pool_scorers[t])
            pooled.append(self.masked(vector, flag))
        return ops.concatenate(pooled, axis=-1)

    def _fuse_legacy(self, tensors, flags, training):
        sequences = []
        token_masks = []
        for tensor, flag, kernel, bias in zip(tensors, flags, self.kernels, self.biases):
            x = self.masked(ops.cast(tensor, self.compute_dtype), flag)
            sequences.append(self.masked(ops.matmul(x, kernel) + bias, flag))
            token_masks.append(sequence_mask(x, flag))  # (batch, steps)
        pooled = []
        layers = iter(self.cross_attention_layers)
        for t, (query, flag) in enumerate(zip(sequences, flags)):
            total = query
            query_ones = ops.expand_dims(ops.ones_like(token_masks[t]), -1)  # (batch, T, 1)
            for s, (source, source_flag) in enumerate(zip(sequences, flags)):
                if s == t:
                    continue
                attention_mask = query_ones * ops.expand_dims(token_masks[s], 1) > 0
                attended = next(layers)(
                    query=query,
                    value=source,
                    key=source,
                    attention_mask=attention_mask,
                    training=training,
                )
                total = total + self.masked(attended, source_flag)
            hidden = self.layer_norms[t](total)
            pooled.append(self.masked(ops.mean(hidden, axis=1), flag))
        return ops.concatenate(pooled, axis=-1)

    def fused_output_shape(self, shapes):
        m = len(shapes)
        if self.architecture == "legacy":
            return (shapes[0][0], m * self.embed_dim)
        return (shapes[0][0], m * (m - 1) * self.embed_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "embed_dim": self.embed_dim,
                "num_heads": self.num_heads,
                "dropout": self.dropout,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "architecture": self.architecture,
                "num_layers": self.num_layers,
                "self_attention_layers": self.self_attention_layers,
                "intermediate_dim": self.intermediate_dim,
                "conv_kernel_size": self.conv_kernel_size,
                "positional_embedding": self.positional_embedding,
                "pooling": self.pooling,
                "vector_tokens": self.vector_tokens,
                "activation": keras.activations.serialize(self.activation),
            }
        )
        return config
