"""tf.data for a captioner: decoded images with teacher-forced caption tokens."""

import numpy as np
import tensorflow as tf

from mmkeras.data.pipeline import decode_image

# The feature key of the decoder input (as `mmkeras.models.captioner.CAPTION_TOKENS`; the data
# side knows no model).
CAPTION_TOKENS = "caption_tokens"


def caption_dataset(paths, inputs, targets, data_config, training=False):
    """`({"image", "caption_tokens"}, targets)` batches (GLOBAL batch size) of image `paths`
    with the encoded captions (`caption_vocabulary.encode_captions`)."""
    shape = tuple(data_config.image_shape)

    def decode(path, tokens, target):
        image = decode_image(path, tf.constant(1.0), shape)
        return {"image": image, CAPTION_TOKENS: tokens}, target

    ds = tf.data.Dataset.from_tensor_slices((paths, inputs, targets))
    options = tf.data.Options()
    options.deterministic = bool(data_config.deterministic)
    ds = ds.with_options(options).map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    if data_config.cache:
        ds = ds.cache()
    if training and data_config.shuffle_buffer:
        ds = ds.shuffle(data_config.shuffle_buffer, seed=data_config.seed,
                        reshuffle_each_iteration=True)
    return ds.batch(data_config.batch_size).prefetch(tf.data.AUTOTUNE)


def load_images(paths, data_config):
    """All images of `paths` as one float32 numpy array `(n, h, w, c)` in [0, 1]."""
    shape = tuple(data_config.image_shape)
    ds = tf.data.Dataset.from_tensor_slices(paths).map(
        lambda p: decode_image(p, tf.constant(1.0), shape), num_parallel_calls=tf.data.AUTOTUNE
    ).batch(256)
    return np.concatenate([np.asarray(b) for b in ds])
