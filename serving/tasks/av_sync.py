"""Audio-video synchronisation (an `AVSyncModel`): offset scores and the in-sync probability.

| signature         | inputs                                   | outputs                               |
|-------------------|------------------------------------------|---------------------------------------|
| `serving_default` | `video` f32 [B, F, 28, 28, 1] in [0, 1], | `offset_logits` f32 [B, 2S+1] (offset |
|                   | `audio` f32 [B, (F + 2S) * frame_samples]|   k - S frames at index k),           |
|                   | in [-1, 1]: the window whose middle      | `offset_probabilities` f32 [B, 2S+1]  |
|                   | F frames are in sync with the video      |   (softmax over the offsets),         |
|                   |                                          | `offset_frames` i32 [B]: the most     |
|                   |                                          |   likely offset (> 0: audio late),    |
|                   |                                          | `sync_logit` f32 [B],                 |
|                   |                                          | `sync_probability` f32 [B]: sigmoid of|
|                   |                                          |   the sync logit (offset 0 against    |
|                   |                                          |   the shifted ones, uniform prior)    |

The inputs are what `mmkeras.data.av_sync_pipeline` feeds the model (frames / 255, 16-bit
samples / 32768). The signature converts to TFLite with builtin ops (the log-mel front end
included, as for the classification models).
"""

import pathlib

import numpy as np
import tensorflow as tf

from mmkeras import features
from mmkeras.data.av_sync_pipeline import make_av_sync_dataset
from mmkeras.datasets import av_sync as av_sync_dataset
from mmkeras.models.av_sync_model import OFFSET_LOGITS
from mmkeras.models.av_sync_model import SYNC_LOGIT
from serving.errors import DEFAULT_SIGNATURE
from serving.tasks import base

OFFSET_PROBABILITIES = "offset_probabilities"
OFFSET_FRAMES = "offset_frames"
SYNC_PROBABILITY = "sync_probability"


def dataset_dir(config):
    """The prepared dataset of a model directory's config (not prepared here)."""
    if config.data.data_dir:
        return pathlib.Path(config.data.data_dir)
    s = config.av_sync
    return av_sync_dataset.dataset_dir(
        train=s.train_examples, validation=s.validation_examples, test=s.test_examples,
        duration=s.duration, fps=s.fps, margin_frames=s.margin_frames, noise_std=s.noise_std,
        visual=s.visual, jitter_frames=s.jitter_frames, seed=config.data.seed,
        data_root=config.data.data_root)


class AVSyncServing(base.TaskServing):
    task = "av_sync"

    def endpoints(self):
        model = self.model
        specs = {t.name: base.input_spec(t, t.name) for t in model.inputs}
        max_offset = model.max_offset

        def serve(inputs):
            out = model({k: inputs[k] for k in specs}, training=False)
            logits = tf.cast(out[OFFSET_LOGITS], tf.float32)
            sync = tf.cast(out[SYNC_LOGIT], tf.float32)
            return {
                OFFSET_LOGITS: logits,
                OFFSET_PROBABILITIES: tf.nn.softmax(logits, axis=-1),
                OFFSET_FRAMES: tf.argmax(logits, axis=-1, output_type=tf.int32) - max_offset,
                SYNC_LOGIT: sync,
                SYNC_PROBABILITY: tf.sigmoid(sync),
            }

        return [base.Endpoint(DEFAULT_SIGNATURE, serve, specs)]

    def check_rows(self, count=base.CHECK_EXAMPLES):
        """Test examples at every offset in turn (`-S..S`), so in-sync and shifted pairs mix."""
        split = av_sync_dataset.load_split(dataset_dir(self.config), "test", count)
        n = len(split["audio"])
        s = self.model.max_offset
        shifts = (np.arange(n) % (2 * s + 1)) - s
        ds = make_av_sync_dataset(split, max_offset=s, batch_size=max(n, 1), shifts=shifts)
        x, _ = next(iter(ds))
        return {features.VIDEO: x[features.VIDEO].numpy(), features.AUDIO: x[features.AUDIO].numpy()}

    def reference(self, rows):
        out = self.model(rows, training=False)
        logits = np.asarray(out[OFFSET_LOGITS], np.float64)
        sync = np.asarray(out[SYNC_LOGIT], np.float64)
        return {DEFAULT_SIGNATURE: {
            OFFSET_LOGITS: logits,
            OFFSET_PROBABILITIES: base.softmax(logits),
            OFFSET_FRAMES: (logits.argmax(axis=-1) - self.model.max_offset).astype(np.int32),
            SYNC_LOGIT: sync,
            SYNC_PROBABILITY: base.sigmoid(sync),
        }}
