"""The `tf.train.Example` schema of one multimodal example, defined once for writers and readers.

| feature          | kind                | meaning                                                  |
|------------------|---------------------|----------------------------------------------------------|
| `image`          | bytes, 1 value      | an encoded PNG or JPEG (8-bit; 1 channel for AV-MNIST)   |
| `audio`          | bytes, 1 value      | a 16-bit PCM WAV file (its first channel is used)        |
| `image_present`  | float, 1 value      | 1 present, 0 missing                                     |
| `audio_present`  | float, 1 value      | 1 present, 0 missing                                     |
| `label`          | int64, 1 value      | the class id (optional: readers that need it get -1)     |
| `text`           | bytes, 1 value      | raw UTF-8 text (tokenised later: in tf.data, or in a     |
|                  |                     | string-input export, `mmkeras.data.text`)                |
| `text_present`   | float, 1 value      | 1 present, 0 missing                                     |

Any feature may be left out: a missing encoded feature reads as `b""`, and a missing
`<m>_present` defaults to 1 when the modality's bytes are non-empty, else 0. An explicit
`<m>_present` wins (1 with empty bytes is an error when decoded; 0 ignores any bytes).

Decoding has exactly the semantics of the training pipeline (`mmkeras.data.pipeline`): images
become float32 in [0, 1] (`decode_image`, then `/ 255`), audio becomes mono float32 in [-1, 1]
(int16 / 32768) centre-cropped or zero-padded to the model's length (`fix_length`), and a
missing modality becomes zeros. Only core TensorFlow ops are used (`tf.io.decode_image`,
`tf.audio.decode_wav`), so a SavedModel that decodes in-graph loads in TF Serving as is.

Writing (numpy, PIL and `wave` only; no TensorFlow op runs):

```python
from mmkeras.data import example_schema

example = example_schema.to_example(image="digit.png", audio="seven.wav", label=7)
serialized = example.SerializeToString()
```

Reading (in a `tf.data` map or a serving signature):

```python
inputs = example_schema.parse_examples(serialized_batch, {"image": (28, 28, 1), "audio": (8000,)})
# {"image": [B, 28, 28, 1], "image_present": [B], "audio": [B, 8000], "audio_present": [B]}
```
"""

import io
import os
import pathlib
import wave

import numpy as np

from mmkeras import features

LABEL = features.LABEL
ENCODED_MODALITIES = (features.IMAGE, features.AUDIO)
# Modalities stored as a raw UTF-8 string and passed through undecoded (a tf.string tensor).
TEXT_MODALITIES = (features.TEXT,)
SERIALIZED = "examples"  # the input name of a batch of serialized Examples in a signature
_UNSET_PRESENCE = -1.0


def bytes_key(modality):
    """The name of a modality's encoded-bytes input in the `serve_raw` signature."""
    return f"{modality}_bytes"


def feature_spec(modalities, with_label=False, kinds=None):
    """The `tf.io.parse_example` spec of the schema for `modalities` (and `label`); `kinds`:
    the types of features not named after their type (`front`: `image`)."""
    import tensorflow as tf

    spec = {}
    for m in sorted(modalities):
        kind = features.modality_type(m, kinds)
        if kind not in TEXT_MODALITIES:
            _check_modality(kind)
        spec[m] = tf.io.FixedLenFeature([], tf.string, default_value="")
        spec[features.presence_key(m)] = tf.io.FixedLenFeature(
            [], tf.float32, default_value=_UNSET_PRESENCE
        )
    if with_label:
        spec[LABEL] = tf.io.FixedLenFeature([], tf.int64, default_value=-1)
    return spec


def _check_modality(modality):
    if modality not in ENCODED_MODALITIES:
        raise ValueError(
            f"No encoded form for modality '{modality}'; the schema knows {ENCODED_MODALITIES}."
        )


# Writing.


def encode_png(image):
    """An 8-bit grayscale PNG of `image`: uint8, or float in [0, 1]; `(H, W)` or `(H, W, 1)`."""
    from PIL import Image

    array = np.asarray(image)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 2:
        raise ValueError(f"encode_png takes (H, W) or (H, W, 1) images, got shape {array.shape}.")
    if array.dtype != np.uint8:
        array = np.clip(np.round(array.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def encode_wav(waveform, sample_rate=8000):
    """A mono 16-bit PCM WAV of `waveform`: int16, or float in [-1, 1] (scaled by 32768)."""
    array = np.asarray(waveform)
    if array.ndim != 1:
        raise ValueError(f"encode_wav takes a 1-D waveform, got shape {array.shape}.")
    if array.dtype != np.int16:
        array = np.clip(np.round(array.astype(np.float64) * 32768.0), -32768, 32767)
        array = array.astype(np.int16)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(array.astype("<i2").tobytes())
    return buffer.getvalue()


def _encoded(value, modality, sample_rate):
    """bytes as is; a path is read; an array is encoded (PNG / WAV)."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, (str, os.PathLike)):
        return pathlib.Path(value).read_bytes()
    if modality == features.IMAGE:
        return encode_png(value)
    return encode_wav(value, sample_rate)


def to_example(
    image=None, audio=None, label=None, *, image_present=None, audio_present=None,
    sample_rate=8000, text=None, text_present=None, named=None,
):
    """Builds a `tf.train.Example` in the schema.

    Args:
        image: encoded image bytes, a path to a PNG/JPEG file, or an array (encoded as PNG);
            None when the example has no image.
        audio: WAV bytes, a path to a WAV file, or a waveform (encoded as 16-bit WAV at
            `sample_rate`); None when the example has no audio.
        label: the class id, or None to leave it out.
        image_present: the presence flag to write (default: 1 if `image` is given, else 0).
        audio_present: likewise for audio.
        sample_rate: sampling rate of WAVs encoded from arrays.
        text: the raw text (str or UTF-8 bytes); None leaves the text features out.
        text_present: the text's presence flag (default: 1 if `text` is non-empty, else 0).
        named: `{feature: (type, value, present)}` of features not named after their type
            (`{"front": ("image", "front.png", 1.0), "title": ("text", "hat", None)}`),
            written like `image` / `audio` / `text` under their own names.

    Returns:
        A `tf.train.Example` (call `.SerializeToString()` for the wire form).
    """
    from tensorflow.core.example import example_pb2
    from tensorflow.core.example import feature_pb2

    feature = {}
    given = {features.IMAGE: (features.IMAGE, image, image_present),
             features.AUDIO: (features.AUDIO, audio, audio_present)}
    if text is not None or text_present is not None:  # Left out entirely when not given.
        given[features.TEXT] = (features.TEXT, text, text_present)
    given.update(named or {})
    for m, (kind, value, present) in given.items():
        if kind in TEXT_MODALITIES:
            if value is not None:
                raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
                feature[m] = feature_pb2.Feature(bytes_list=feature_pb2.BytesList(value=[raw]))
            flag = float(present) if present is not None else float(bool(value))
        else:
            _check_modality(kind)
            if value is not None:
                feature[m] = feature_pb2.Feature(bytes_list=feature_pb2.BytesList(
                    value=[_encoded(value, kind, sample_rate)]))
            flag = float(present) if present is not None else float(value is not None)
        feature[features.presence_key(m)] = feature_pb2.Feature(
            float_list=feature_pb2.FloatList(value=[flag])
        )
    if label is not None:
        feature[LABEL] = feature_pb2.Feature(int64_list=feature_pb2.Int64List(value=[int(label)]))
    return example_pb2.Example(features=feature_pb2.Features(feature=feature))


# Reading (TensorFlow graph code: usable in tf.data and in serving signatures).


def decode_image_bytes(encoded, present, shape=(28, 28, 1), resize=None, fill=0.0):
    """Encoded PNG/JPEG (scalar string) -> float32 `shape` in [0, 1]; zeros when not present.

    The same computation as `mmkeras.data.pipeline.decode_image`, from bytes instead of a path:
    with `resize` (`pad`, `crop`, `stretch`: the model's `data.image_resize`) an image of any
    size and channel count is fitted to `shape` as in training (`mmkeras.data.image_resize`).
    """
    import tensorflow as tf

    from mmkeras.data import image_resize  # (this module imports TensorFlow lazily)

    shape = tuple(int(d) for d in shape)

    def load():
        if resize is not None:
            any_image = tf.io.decode_image(encoded, expand_animations=False)
            return image_resize.fit_image(any_image, shape, resize, fill)
        image = tf.io.decode_image(encoded, channels=shape[-1], expand_animations=False)
        image = tf.ensure_shape(image, [None, None, shape[-1]])
        return tf.cast(image, tf.float32) / 255.0

    image = tf.cond(present > 0, load, lambda: tf.zeros(shape, tf.float32))
    return tf.ensure_shape(image, shape)


WAV_RATE_MODES = ("resample", "reject")


def decode_wav_bytes(encoded, present, num_samples, sample_rate=None, wav_rate="resample"):
    """16-bit WAV (scalar string) -> mono float32 `(num_samples,)`; zeros when not present.

    The same values as `mmkeras.data.pipeline.decode_audio` (tensorflow-io, int16 / 32768,
    first channel, `fix_length`): `tf.audio.decode_wav` scales int16 by 2**-15 as well, and
    it is a core op, so a serving graph needs no tensorflow-io kernels.

    Args:
        sample_rate: the model's rate in Hz; None reads the samples whatever the WAV's rate.
        wav_rate: what a WAV at another rate gets: `"resample"` (band-limited, in the graph:
            `mmkeras.data.audio_resample`, before `fix_length`) or `"reject"` (an
            InvalidArgumentError naming both rates when the graph runs).
    """
    import tensorflow as tf

    from mmkeras.data.audio_resample import resample
    from mmkeras.data.pipeline import fix_length

    if wav_rate not in WAV_RATE_MODES:
        raise ValueError(f"wav_rate must be one of {WAV_RATE_MODES}, got {wav_rate!r}.")
    num_samples = int(num_samples)

    def load():
        audio, rate = tf.audio.decode_wav(encoded, desired_channels=-1)
        audio = audio[:, 0]
        if sample_rate is not None:
            with tf.name_scope("wav_rate"):
                target = tf.constant(int(sample_rate), tf.int32)
                if wav_rate == "reject":
                    check = tf.debugging.Assert(tf.equal(rate, target), [tf.strings.format(
                        "audio WAV sample rate is {} Hz but the model takes {} Hz: resample "
                        "the audio to {} Hz (or export with wav_rate=resample)",
                        [rate, target, target])])
                    with tf.control_dependencies([check]):
                        audio = tf.identity(audio)
                else:
                    audio = resample(audio, rate, target)
        return fix_length(audio, num_samples)

    audio = tf.cond(present > 0, load, lambda: tf.zeros([num_samples], tf.float32))
    return tf.ensure_shape(audio, [num_samples])


def decode_batch(encoded, present, shapes, audio_sample_rate=None, wav_rate="resample",
                 image_resize=None, image_fill=0.0, kinds=None):
    """Decodes a batch of encoded modalities into model inputs.

    Args:
        encoded: `{modality: string tensor [batch]}`.
        present: `{modality: float32 tensor [batch]}` (1 present, 0 missing).
        shapes: `{modality: per-example shape}`, e.g. `{"image": (28, 28, 1), "audio": (8000,)}`.
        audio_sample_rate, wav_rate: the model's audio rate and what a WAV at another rate
            gets (`decode_wav_bytes`); None: the rate is not checked.
        image_resize, image_fill: how an image of another size is fitted (`data.image_resize`,
            `data.image_fill`; None: images must already have the model's shape).
        kinds: `{modality: type}` of modalities not named after their type (`front`:
            `image`; `features.modality_type`).

    Returns:
        `{modality: float32 [batch, *shape], "<modality>_present": float32 [batch]}`.
    """
    import tensorflow as tf

    inputs = {}
    for m in sorted(shapes):
        flags = tf.cast(present[m], tf.float32)
        kind = features.modality_type(m, kinds)
        if kind in TEXT_MODALITIES:  # Raw strings pass through; a missing text is "".
            inputs[m] = tf.where(flags > 0, encoded[m], "")
            inputs[features.presence_key(m)] = flags
            continue
        _check_modality(kind)
        shape = tuple(int(d) for d in shapes[m])
        if kind == features.IMAGE:
            def decode(args, shape=shape):
                return decode_image_bytes(args[0], args[1], shape, image_resize, image_fill)
        else:
            def decode(args, shape=shape):
                return decode_wav_bytes(args[0], args[1], shape[0], audio_sample_rate, wav_rate)
        inputs[m] = tf.map_fn(
            decode,
            (encoded[m], flags),
            fn_output_signature=tf.TensorSpec(shape, tf.float32),
        )
        inputs[features.presence_key(m)] = flags
    return inputs


def parse_examples(serialized, shapes, with_label=False, audio_sample_rate=None,
                   wav_rate="resample", image_resize=None, image_fill=0.0, kinds=None):
    """Serialized Examples `[batch]` -> model inputs (see `decode_batch`) [and `label`]."""
    import tensorflow as tf

    parsed = tf.io.parse_example(serialized, feature_spec(shapes, with_label=with_label,
                                                          kinds=kinds))
    encoded, present = {}, {}
    for m in shapes:
        encoded[m] = parsed[m]
        flag = parsed[features.presence_key(m)]
        inferred = tf.cast(tf.strings.length(parsed[m]) > 0, tf.float32)
        present[m] = tf.where(flag < 0, inferred, flag)
    inputs = decode_batch(encoded, present, shapes, audio_sample_rate, wav_rate, image_resize,
                          image_fill, kinds=kinds)
    if with_label:
        inputs[LABEL] = parsed[LABEL]
    return inputs
