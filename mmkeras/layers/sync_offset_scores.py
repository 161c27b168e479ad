"""Offset scores of two time-aligned embedding streams: cosine similarity at each candidate shift."""

import math

import keras
from keras import ops

from mmkeras.api_export import mmkeras_export


@mmkeras_export("mmkeras.layers.SyncOffsetScores")
class SyncOffsetScores(keras.layers.Layer):
    """Offset logits and a sync logit from per-time-step video and audio embeddings.

    For each candidate offset `d` in `-max_offset..max_offset`, the logit is
    `scale * mean_t cos(video[t], audio[t + max_offset + d])`: audio longer than the video by
    `max_offset` steps on each side is compared at every offset over all video steps.
    `scale = 1 / temperature` is learned on a log scale and clipped at `max_scale`.

    Args:
        max_offset: the largest offset in steps (`2 * max_offset + 1` candidates).
        temperature: initial temperature.
        learnable: learn the scale.
        max_scale: upper clip of the scale.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        video: `(batch, steps, dim)` video embeddings.
        audio: `(batch, steps + 2 * max_offset, dim)` audio embeddings.

    Returns:
        `(offset_logits (batch, 2 * max_offset + 1), sync_logit (batch,))`; offset index `k`
        is offset `k - max_offset`. A positive offset means the audio is late.

    Example:
    ```python
    import numpy as np
    layer = SyncOffsetScores(max_offset=1, temperature=1.0)
    v = np.random.normal(size=(1, 5, 4)).astype("float32")
    a = np.concatenate([np.ones((1, 1, 4)), v, np.ones((1, 1, 4))], axis=1).astype("float32")
    offsets, sync = layer(v, a)  # offsets[0, 1] == 1.0, the maximum: in sync
    ```

    References:
        - [Chung and Zisserman, 2016](https://www.robots.ox.ac.uk/~vgg/publications/2016/Chung16a/),
          "Out of time: automated lip sync in the wild" (SyncNet).
    """

    def __init__(self, max_offset, temperature=0.1, learnable=True, max_scale=100.0, **kwargs):
        super().__init__(**kwargs)
        if int(max_offset) < 1:
            raise ValueError(f"max_offset must be >= 1, got {max_offset}.")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}.")
        self.max_offset = int(max_offset)
        self.temperature = float(temperature)
        self.learnable = bool(learnable)
        self.max_scale = float(max_scale)
        self.log_scale = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(math.log(1.0 / self.temperature)),
            trainable=self.learnable,
            name="log_scale",
            dtype="float32",
        )
        self.built = True

    def scale(self):
        return ops.exp(ops.minimum(ops.convert_to_tensor(self.log_scale), math.log(self.max_scale)))

    def _check_shapes(self, video_shape, audio_shape):
        steps, audio_steps = video_shape[1], audio_shape[1]
        if steps is None or audio_steps is None:
            raise ValueError("SyncOffsetScores needs a static number of time steps.")
        if audio_steps != steps + 2 * self.max_offset:
            raise ValueError(
                f"audio has {audio_steps} steps; expected video steps {steps} + 2 * max_offset "
                f"{self.max_offset} = {steps + 2 * self.max_offset}.")
        return steps

    def call(self, video, audio):
        steps = self._check_shapes(video.shape, audio.shape)
        video = ops.cast(video, "float32")
        audio = ops.cast(audio, "float32")
        video = video / ops.sqrt(ops.maximum(ops.sum(ops.square(video), -1, keepdims=True), 1e-12))
        audio = audio / ops.sqrt(ops.maximum(ops.sum(ops.square(audio), -1, keepdims=True), 1e-12))
        similarities = ops.stack(
            [ops.mean(ops.sum(video * audio[:, k:k + steps, :], axis=-1), axis=-1)
             for k in range(2 * self.max_offset + 1)],
            axis=-1,
        )
        # The scores are float32 (as the inputs were cast); under mixed precision the scale
        # variable is read in float16, so it is cast too.
        logits = ops.cast(self.scale(), "float32") * similarities
        s = self.max_offset
        others = ops.concatenate([logits[:, :s], logits[:, s + 1:]], axis=-1)
        sync = logits[:, s] - ops.logsumexp(others, axis=-1) + math.log(2 * s)
        return logits, sync

    def compute_output_shape(self, video_shape, audio_shape):
        batch = video_shape[0]
        return (batch, 2 * self.max_offset + 1), (batch,)

    def get_config(self):
        config = super().get_config()
        config.update({"max_offset": self.max_offset, "temperature": self.temperature,
                       "learnable": self.learnable, "max_scale": self.max_scale})
        return config
