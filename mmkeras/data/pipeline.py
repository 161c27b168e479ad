"""tf.data input pipelines: manifest rows -> decoded, batched `(features, label)` pairs.

Files are decoded in parallel: images (PNG/JPEG/GIF) and GIF videos by TensorFlow; WAV, FLAC,
OGG Vorbis and MP3 by tensorflow-io (resampled with `tfio.audio.resample` when configured);
MP4-like videos by PyAV (`av`, through `tf.numpy_function`: tensorflow-io's FFmpeg ops do not
load on TensorFlow 2.17 with the FFmpeg of current distributions); `.npy` series by numpy.
Everything is padded/cropped to fixed shapes, optionally cached, shuffled with a seed,
batched by the GLOBAL batch size, mapped by the fitted `Preprocessing` (text -> token ids,
tabular -> normalised vector) and prefetched. A masked modality (bad-input policy `mask`, or a
missing path) yields zeros and a presence flag of 0.
"""

import pathlib

import numpy as np
import tensorflow as tf

from mmkeras import features
from mmkeras.data.decoders import import_tfio
from mmkeras.data.decoders import file_suffix
from mmkeras.data.decoders import read_audio  # noqa: F401  (public here since before decoders.py)
from mmkeras.data import image_resize
from mmkeras.data.decoders import read_any_image
from mmkeras.data.decoders import read_gif
from mmkeras.data.decoders import read_image
from mmkeras.data.manifest import checkers_for
from mmkeras.data.manifest import find_manifest
from mmkeras.data.manifest import read_manifest


def decode_image(path, present, shape=(28, 28, 1), resize=None, fill=0.0):
    """PNG/JPEG file -> float32 `shape` in [0, 1]; zeros when not present.

    Without `resize` the file must already be `shape`. With `resize` (`pad`, `crop` or
    `stretch`; `mmkeras.data.image_resize`) any size and channel count is converted.
    """
    shape = tuple(int(d) for d in shape)

    def load():
        if resize is not None:
            return image_resize.fit_image(read_any_image(path), shape, resize, fill)
        return tf.cast(read_image(path, shape[-1]), tf.float32) / 255.0

    image = tf.cond(present > 0, load, lambda: tf.zeros(shape, tf.float32))
    return tf.ensure_shape(image, shape)


def fix_length(waveform, num_samples):
    """Centre-crops or zero-pads a 1-D waveform to `num_samples`."""
    length = tf.shape(waveform)[0]
    start = tf.maximum((length - num_samples) // 2, 0)
    waveform = waveform[start : start + num_samples]
    pad = num_samples - tf.shape(waveform)[0]
    waveform = tf.pad(waveform, [[pad // 2, pad - pad // 2]])
    return tf.ensure_shape(waveform, [num_samples])


def decode_audio(path, present, num_samples, sample_rate=None, resample=False):
    """Audio file -> mono float32 `(num_samples,)` in [-1, 1]; zeros when not present.

    Args:
        path: scalar string, a WAV / FLAC / OGG / MP3 file.
        present: scalar float flag.
        num_samples: output length (centre crop / zero pad after resampling).
        sample_rate: the model's rate (needed when `resample`).
        resample: resample from the file's rate to `sample_rate` (`tfio.audio.resample`).
    """
    tfio = import_tfio()

    def load():
        waveform, rate = read_audio(path)
        if resample:
            target = tf.constant(int(sample_rate), tf.int64)
            waveform = tf.cond(
                tf.equal(rate, target),
                lambda: waveform,
                lambda: tfio.audio.resample(waveform[:, None], rate, target)[:, 0],
            )
        return fix_length(waveform, num_samples)

    return tf.cond(present > 0, load, lambda: tf.zeros([num_samples], tf.float32))


def sample_frames(frames, num_frames):
    """Picks `num_frames` evenly spaced frames (repeating frames of short clips)."""
    count = tf.shape(frames)[0]
    index = tf.linspace(0.0, tf.cast(count - 1, tf.float32), num_frames)
    return tf.gather(frames, tf.cast(tf.round(index), tf.int32))


def _to_frames(frames, shape):
    """uint8 `(t, h, w, c)` -> float32 `(t, *shape)` in [0, 1] (channels, then size)."""
    height, width, channels = shape
    frames = tf.ensure_shape(frames, [None, None, None, None])
    source_channels = tf.shape(frames)[-1]
    if channels == 1:
        frames = tf.cond(
            tf.equal(source_channels, 1),
            lambda: frames[..., :1],
            lambda: tf.cast(tf.image.rgb_to_grayscale(frames[..., :3]), frames.dtype),
        )
    else:
        frames = tf.cond(
            tf.equal(source_channels, 1),
            lambda: tf.repeat(frames[..., :1], 3, axis=-1),
            lambda: frames[..., :3],
        )
    frames = tf.image.convert_image_dtype(frames, tf.float32)
    frames = tf.image.resize(frames, [height, width], antialias=True)
    return tf.clip_by_value(frames, 0.0, 1.0)


def _path_str(p):
    """A `tf.numpy_function` path argument (bytes, or a 0-d bytes array) -> str."""
    p = p.item() if isinstance(p, np.ndarray) else p
    return p.decode("utf-8") if isinstance(p, bytes) else str(p)


def _decode_video_file(path):
    """MP4-like file -> uint8 `(t, h, w, 3)` via PyAV (host Python, `tf.numpy_function`)."""

    def decode(p):
        import av

        with av.open(_path_str(p)) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        if not frames:
            raise ValueError(f"{p!r} has no video frames")
        return np.stack(frames).astype(np.uint8)

    frames = tf.numpy_function(decode, [path], tf.uint8, stateful=False)
    return tf.ensure_shape(frames, [None, None, None, 3])


def _decode_frame_folder(path):
    # `MatchingFiles` returns the names sorted; `*.*g` covers .png, .jpg and .jpeg.
    files = tf.io.matching_files(tf.strings.join([path, "/*.*g"]))

    def frame(f):
        return read_image(f, 3)

    first = frame(files[0])
    size = tf.shape(first)[:2]
    return tf.map_fn(
        lambda f: tf.cast(tf.image.resize(frame(f), size), tf.uint8),
        files,
        fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8),
    )


def decode_video(path, present, num_frames, shape=(64, 64, 1)):
    """A GIF, an MP4-like file or a folder of frames -> float32 `(num_frames, *shape)`.

    GIFs decode with `tf.io.decode_gif`, frame folders (sorted `*.png` / `*.jpg`) with
    `tf.io.decode_image`, other files with PyAV. Frames are converted to `shape[-1]` channels,
    resized to `shape[:2]` and `num_frames` are sampled evenly.
    """
    shape = tuple(int(d) for d in shape)
    out_shape = (int(num_frames), *shape)

    def load():
        suffix = file_suffix(path)
        is_gif = tf.equal(suffix, "gif")
        is_dir = tf.logical_not(
            tf.strings.regex_full_match(suffix, "mp4|m4v|webm|avi|mov|mkv|gif")
        )
        frames = tf.case(
            [
                (is_gif, lambda: read_gif(path)),
                (is_dir, lambda: _decode_frame_folder(path)),
            ],
            default=lambda: _decode_video_file(path),
        )
        return _to_frames(sample_frames(frames, num_frames), shape)

    video = tf.cond(present > 0, load, lambda: tf.zeros(out_shape, tf.float32))
    return tf.ensure_shape(video, out_shape)


def decode_timeseries(path, present, steps, channels):
    """`.npy` `(steps', channels)` -> float32 `(steps, channels)`: start-crop / zero-pad."""

    def load():
        series = tf.numpy_function(
            lambda p: np.load(_path_str(p), allow_pickle=False).astype(np.float32),
            [path], tf.float32, stateful=False,
        )
        series = tf.ensure_shape(series, [None, channels])[:steps]
        return tf.pad(series, [[0, steps - tf.shape(series)[0]], [0, 0]])

    series = tf.cond(present > 0, load, lambda: tf.zeros([steps, channels], tf.float32))
    return tf.ensure_shape(series, [steps, channels])


def load_split(dataset_dir, split, data_config, modalities, num_classes, target="multiclass"):
    """Reads and checks the manifest rows of a split: `(columns, ManifestReport)`.

    `target` is the label's kind (`model.target`: class ids, multi-hot lists or numbers).

    The manifest is `dataset_dir/manifest.csv` or `manifest.jsonl`; the row checks follow
    `data_config` (image shape, audio rate unless resampled, series channels).
    """
    return read_manifest(
        find_manifest(pathlib.Path(dataset_dir)),
        split,
        modalities,
        num_classes,
        bad_input=data_config.bad_input,
        max_examples=data_config.max_examples,
        checkers=checkers_for(data_config),
        numeric_columns=data_config.tabular_numeric,
        categorical_columns=data_config.tabular_categorical,
        empty_is_missing=data_config.empty_is_missing,
        target=target,
        modality_types=getattr(data_config, "modality_types", None),
    )


def decode_row(row, data_config, modalities):
    """Decodes one manifest row (a dict of tensors) into model features (before preprocessing).

    Each feature is decoded by its type (`features.modality_type` with
    `data_config.modality_types`): two image features `front` and `back` both decode as images.
    """
    c = data_config
    types = getattr(c, "modality_types", None)
    x = {}
    for m in modalities:
        present = row[features.presence_key(m)]
        kind = features.modality_type(m, types)
        if kind == features.IMAGE:
            x[m] = decode_image(row[m], present, c.image_shape, c.image_resize, c.image_fill)
        elif kind == features.AUDIO:
            x[m] = decode_audio(
                row[m], present, c.audio_samples, c.audio_sample_rate, c.audio_resample
            )
        elif kind == features.VIDEO:
            x[m] = decode_video(row[m], present, c.video_frames, c.video_shape)
        elif kind == features.TIMESERIES:
            x[m] = decode_timeseries(row[m], present, c.timeseries_steps, c.timeseries_channels)
        elif kind == features.TEXT:
            x[m] = tf.where(present > 0, row[m], "")
        elif kind == features.TABULAR:
            x[m] = row[m]
            x["tabular_categories"] = row["tabular_categories"]
        else:
            raise ValueError(f"No decoder for modality '{m}'.")
        x[features.presence_key(m)] = present
    return x


def make_dataset(
    columns, data_config, modalities, training=False, batch_size=None, input_context=None,
    repeat=False, preprocessing=None, threads=None,
):
    """Builds the `tf.data.Dataset` of `(features, label)` batches from manifest columns.

    Args:
        columns: the first result of `load_split`.
        data_config: an `mmkeras.configs.DataConfig`.
        modalities: the model's modalities (keys of the feature dict, plus `<m>_present`).
        training: shuffle (seeded by `data_config.seed`) when True.
        batch_size: the global batch size (default `data_config.batch_size`).
        input_context: a `tf.distribute.InputContext`: shards by input pipeline and returns
            per-replica batches (for custom multi-worker loops).
        repeat: repeat forever (the caller sets steps per epoch).
        preprocessing: a fitted `mmkeras.data.preprocessing.Preprocessing`; required when
            `modalities` include `text` or `tabular`.
        threads: size of a private tf.data thread pool (None: the shared default pool).
    """
    batch_size = batch_size or data_config.batch_size
    types = getattr(data_config, "modality_types", None)
    needs = [m for m in modalities
             if features.modality_type(m, types) in (features.TEXT, features.TABULAR)]
    if needs and preprocessing is None:
        raise ValueError(
            f"Modalities {sorted(needs)} need a fitted Preprocessing (Preprocessing.fit on the "
            "training split's columns): pass preprocessing=..."
        )
    tensors = {"label": columns["label"]}
    for m in modalities:
        tensors[m] = columns[m]
        tensors[features.presence_key(m)] = columns[features.presence_key(m)]
        if m == features.TABULAR:
            tensors["tabular_categories"] = columns["tabular_categories"]
    ds = tf.data.Dataset.from_tensor_slices(tensors)
    if input_context is not None:
        ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        batch_size = input_context.get_per_replica_batch_size(batch_size)

    def decode(row):
        return decode_row(row, data_config, modalities), row["label"]

    options = tf.data.Options()
    options.deterministic = bool(data_config.deterministic)
    if threads:
        options.threading.private_threadpool_size = int(threads)
        options.threading.max_intra_op_parallelism = 1
    ds = ds.with_options(options)
    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    if data_config.cache:
        ds = ds.cache()
    if training and data_config.shuffle_buffer:
        ds = ds.shuffle(
            data_config.shuffle_buffer, seed=data_config.seed, reshuffle_each_iteration=True
        )
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size)
    if preprocessing is not None and needs:
        ds = ds.map(lambda x, y: (preprocessing.apply(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
