"""The TensorFlow file decoders of the tf.data pipeline, shared with the pre-training checks.

`mmkeras.data.pipeline` decodes with these functions inside `tf.data`, and
`mmkeras.data.manifest` runs the same functions on every file before training starts
(`decode_error`), so a file that passes the check cannot fail to decode in tf.data. Pillow and
TensorFlow do not accept the same files: a PNG without its final `IEND` chunk loads in Pillow
and is rejected by `tf.io.decode_png`.
"""

import re

import tensorflow as tf


def import_tfio():
    try:
        import tensorflow_io as tfio
    except ImportError as e:  # pragma: no cover - the pinned requirements include it.
        raise ImportError(
            "tensorflow-io is needed to decode audio: pip install tensorflow-io==0.37.1"
        ) from e
    return tfio


def read_image(path, channels):
    """PNG/JPEG/GIF/BMP file -> uint8 `(height, width, channels)` (`tf.io.decode_image`)."""
    image = tf.io.decode_image(tf.io.read_file(path), channels=channels, expand_animations=False)
    return tf.ensure_shape(image, [None, None, channels])


def read_any_image(path):
    """PNG/JPEG/GIF/BMP file -> uint8 `(height, width, channels)` with the file's own channel
    count (1 gray, 2 gray + alpha, 3 RGB, 4 RGBA)."""
    image = tf.io.decode_image(tf.io.read_file(path), channels=0, expand_animations=False)
    return tf.ensure_shape(image, [None, None, None])


def file_suffix(path):
    return tf.strings.lower(tf.strings.regex_replace(path, r"^.*\.", ""))


def read_audio(path):
    """Any WAV (16-bit), FLAC, OGG Vorbis or MP3 file -> (mono float32 in [-1, 1], rate).

    WAV is decoded by TensorFlow's own `tf.audio.decode_wav`; FLAC, Vorbis and MP3 by
    tensorflow-io's `AudioIOTensor` (int16 for FLAC, float32 for Vorbis and MP3). The first
    channel is kept.

    Why not tensorflow-io for WAV too: inside a parallel `tf.data` map, `AudioIOTensor`
    returned a wrong waveform for about 0.3% of the AV-MNIST clips (different clips on each
    pass; exact with one thread), measured against Python's `wave` module. `tf.audio.decode_wav`
    is exact under the same map.
    """
    tfio = import_tfio()

    def load_wav():
        audio, rate = tf.audio.decode_wav(tf.io.read_file(path))
        return audio[:, 0], tf.cast(rate, tf.int64)

    def load(dtype, scale):
        audio = tfio.audio.AudioIOTensor(path, dtype=dtype)
        waveform = tf.cast(audio.to_tensor()[:, 0], tf.float32) / scale
        return waveform, tf.cast(audio.rate, tf.int64)

    suffix = file_suffix(path)
    return tf.case(
        [
            (tf.equal(suffix, "wav"), load_wav),
            (tf.equal(suffix, "flac"), lambda: load(tf.int16, 32768.0)),
        ],
        default=lambda: load(tf.float32, 1.0),
    )


def read_gif(path):
    """GIF file -> uint8 `(frames, height, width, 3)` (`tf.io.decode_gif`)."""
    return tf.io.decode_gif(tf.io.read_file(path))


_PATH = tf.TensorSpec([], tf.string)
IMAGE_CHANNELS = (1, 3, 4)


@tf.function(input_signature=[_PATH, tf.TensorSpec([], tf.int32)])
def _image_shape(path, channels):
    # `decode_image` needs a Python channel count: one branch per count the pipeline uses.
    return tf.case(
        [(tf.equal(channels, c), lambda c=c: tf.shape(read_image(path, c))) for c in (1, 3)],
        default=lambda: tf.shape(read_image(path, 4)),
    )


@tf.function(input_signature=[_PATH])
def _any_image_shape(path):
    return tf.shape(read_any_image(path))


@tf.function(input_signature=[_PATH])
def _audio_length(path):
    waveform, rate = read_audio(path)
    return tf.shape(waveform)[0], rate


@tf.function(input_signature=[_PATH])
def _gif_shape(path):
    return tf.shape(read_gif(path))


def _message(error):
    """TensorFlow's error text on one printable line, without the graph's call stack."""
    if isinstance(error, UnicodeDecodeError):  # TF's message quoted raw bytes of the file
        return "the decoder rejected the file (its error message is not text)"
    text = getattr(error, "message", None) or str(error)
    lines = [
        line.strip() for line in text.splitlines()
        if line.strip() and not line.strip().startswith(
            ("File ", "Graph execution error", "Detected at node")
        )
    ]
    text = " ".join(lines)
    text = re.sub(r"\{\{[^}]*\}\}\s*", "", text)
    text = re.sub(r"\s*\[\[[^\]]*\]\]", "", text)
    text = re.sub(r"\s*\[Op:[^\]]*\]", "", text)
    text = text.encode("ascii", "backslashreplace").decode("ascii").strip()
    return text[:200] or type(error).__name__


def _run(function, *args):
    """`(result, None)` or `(None, reason)`: any TensorFlow failure becomes a reason."""
    try:
        return [v.numpy() for v in tf.nest.flatten(function(*args))], None
    except Exception as e:  # noqa: BLE001 - TF raises many types (and bytes it cannot decode)
        return None, _message(e)


def image_error(path, shape, resize=False):
    """None if the pipeline's decoder reads `path` as `shape` `(h, w, c)`, else the reason.
    With `resize`, any size and channel count (the pipeline converts them)."""
    if int(shape[-1]) not in IMAGE_CHANNELS:
        return f"images must have {' or '.join(map(str, IMAGE_CHANNELS))} channels, not {shape[-1]}"
    if resize:
        result, reason = _run(_any_image_shape, str(path))
        if reason is not None:
            return f"TensorFlow cannot decode image ({reason})"
        if min(int(d) for d in result[0][:2]) == 0:
            return "image has no pixels"
        return None
    result, reason = _run(_image_shape, str(path), int(shape[-1]))
    if reason is not None:
        return f"TensorFlow cannot decode image ({reason})"
    height, width = int(result[0][0]), int(result[0][1])
    if (height, width) != tuple(shape[:2]):
        return f"image decodes to {height}x{width}, expected {shape[0]}x{shape[1]}"
    return None


def audio_error(path):
    """None if the pipeline's decoder reads `path` to at least one sample, else the reason."""
    result, reason = _run(_audio_length, str(path))
    if reason is not None:
        return f"TensorFlow cannot decode audio ({reason})"
    if int(result[0]) == 0:
        return "audio decodes to no samples"
    return None


def frame_error(path):
    """None if the pipeline's frame decoder (`read_image`, 3 channels) reads `path`."""
    _, reason = _run(_image_shape, str(path), 3)
    return None if reason is None else f"TensorFlow cannot decode frame ({reason})"


def gif_error(path):
    """None if `tf.io.decode_gif` reads `path` to at least one frame, else the reason."""
    result, reason = _run(_gif_shape, str(path))
    if reason is not None:
        return f"TensorFlow cannot decode GIF ({reason})"
    if int(result[0][0]) == 0:
        return "GIF decodes to no frames"
    return None
