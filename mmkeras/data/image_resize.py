"""Images of any size and channel count -> the model's `image_shape` (tf ops, used in tf.data).

| mode | what happens |
|---|---|
| `pad` | resized to fit inside `(height, width)` with the aspect ratio kept, then padded (centred) with `fill` |
| `crop` | resized to cover `(height, width)` with the aspect ratio kept, then centre-cropped |
| `stretch` | resized to `(height, width)`, aspect ratio not kept |

Channels: gray + alpha and RGBA are composited on a `fill`-valued background, then gray ->
RGB repeats the channel and RGB -> gray uses `tf.image.rgb_to_grayscale`.
"""

import tensorflow as tf

RESIZE_MODES = ("pad", "crop", "stretch")


def to_channels(image, channels, fill=0.0):
    """uint8 `(h, w, c)` with c in 1..4 -> float32 `(h, w, channels)` in [0, 1]."""
    image = tf.cast(image, tf.float32) / 255.0
    c = tf.shape(image)[-1]

    def composite():
        alpha = image[..., -1:]
        return image[..., :-1] * alpha + fill * (1.0 - alpha)

    image = tf.cond(tf.equal(c % 2, 0), composite, lambda: image)  # 2 or 4: with alpha
    c = tf.shape(image)[-1]
    if channels == 1:
        image = tf.cond(tf.equal(c, 3), lambda: tf.image.rgb_to_grayscale(image),
                        lambda: image[..., :1])
    else:
        image = tf.cond(tf.equal(c, 1), lambda: tf.repeat(image[..., :1], 3, axis=-1),
                        lambda: image[..., :3])
    return tf.ensure_shape(image, [None, None, channels])


def fit_image(image, shape, mode="pad", fill=0.0):
    """uint8 `(h, w, c)` -> float32 `shape` `(height, width, channels)` in [0, 1]."""
    if mode not in RESIZE_MODES:
        raise ValueError(f"Unknown image resize mode {mode!r}; use {RESIZE_MODES}.")
    height, width, channels = (int(d) for d in shape)
    image = to_channels(image, channels, fill)
    if mode == "stretch":
        out = tf.image.resize(image, [height, width], antialias=True)
    else:
        size = tf.cast(tf.shape(image)[:2], tf.float32)
        scales = tf.constant([height, width], tf.float32) / size
        scale = tf.reduce_min(scales) if mode == "pad" else tf.reduce_max(scales)
        new_size = tf.maximum(tf.cast(tf.round(size * scale), tf.int32), 1)
        if mode == "pad":
            new_size = tf.minimum(new_size, [height, width])
        resized = tf.image.resize(image, new_size, antialias=True)
        if mode == "pad":
            top = (height - new_size[0]) // 2
            left = (width - new_size[1]) // 2
            out = tf.pad(resized - fill, [[top, height - new_size[0] - top],
                                          [left, width - new_size[1] - left], [0, 0]]) + fill
        else:
            top = (new_size[0] - height) // 2
            left = (new_size[1] - width) // 2
            out = resized[top:top + height, left:left + width]
    out = tf.clip_by_value(out, 0.0, 1.0)
    return tf.ensure_shape(out, [height, width, channels])
