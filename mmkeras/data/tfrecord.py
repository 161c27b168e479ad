"""TFRecord files of manifest rows, in the one `tf.train.Example` schema shared with serving.

`write_tfrecords` stores each row's image / audio file bytes, text, presence flags and label
with `example_schema.to_example`; `read_tfrecords` parses them back with
`example_schema.parse_examples` into the same `(features, label)` batches as `make_dataset`
(image and audio decoded, text as strings for the fitted `Preprocessing`). Serving signatures
that take serialized Examples use the same module, so a record written here is a valid
request.
"""

import pathlib

import tensorflow as tf

from mmkeras import features
from mmkeras.data import example_schema

SUPPORTED = (*example_schema.ENCODED_MODALITIES, *example_schema.TEXT_MODALITIES)


def _check(modalities, kinds=None):
    unsupported = sorted(m for m in modalities
                         if features.modality_type(m, kinds) not in SUPPORTED)
    if unsupported:
        raise ValueError(
            f"The Example schema has no form for {unsupported}; supported: {list(SUPPORTED)}."
        )


def write_tfrecords(columns, path, modalities, num_shards=1, sample_rate=8000, kinds=None):
    """Writes manifest columns (the first result of `load_split`) as TFRecord shard files.

    Args:
        columns: `{id, label, <m>, <m>_present}` arrays.
        path: the output path; with `num_shards > 1`, `path-00000-of-0000N` and so on.
        modalities: the modalities to store (`image`, `audio`, `text`).
        num_shards: rows go to shard `i % num_shards`.
        sample_rate: used only for waveforms given as arrays (files are stored as they are).
        kinds: the types of features not named after their type (`data.modality_types`).

    Returns:
        The list of files written.
    """
    _check(modalities, kinds)
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = [path] if num_shards == 1 else [
        path.with_name(f"{path.name}-{i:05d}-of-{num_shards:05d}") for i in range(num_shards)
    ]
    tmp_names = [n.with_name(f".{n.name}.tmp") for n in names]
    writers = [tf.io.TFRecordWriter(str(n)) for n in tmp_names]
    try:
        for i in range(len(columns["label"])):
            named = {}
            for m in modalities:
                present = float(columns[features.presence_key(m)][i])
                value = str(columns[m][i])
                kind = features.modality_type(m, kinds)
                if kind == features.TEXT:
                    named[m] = (kind, value if present else "", present)
                else:
                    named[m] = (kind, value if (present and value) else None, present)
            example = example_schema.to_example(
                label=int(columns["label"][i]), sample_rate=sample_rate, named=named)
            writers[i % num_shards].write(example.SerializeToString())
    finally:
        for w in writers:
            w.close()
    for tmp, final in zip(tmp_names, names):
        tmp.replace(final)
    return names


def read_tfrecords(files, data_config, modalities, training=False, batch_size=None,
                   input_context=None, preprocessing=None):
    """TFRecord files -> `(features, label)` batches, like `make_dataset`.

    Shards by file first when an `input_context` is given (one file per input pipeline, if
    there are enough files), else by record.
    """
    kinds = getattr(data_config, "modality_types", None)
    _check(modalities, kinds)
    files = [str(f) for f in files]
    batch_size = batch_size or data_config.batch_size
    ds = tf.data.Dataset.from_tensor_slices(files)
    if input_context is not None:
        if len(files) >= input_context.num_input_pipelines:
            ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        batch_size = input_context.get_per_replica_batch_size(batch_size)
    ds = ds.interleave(
        tf.data.TFRecordDataset, num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=bool(data_config.deterministic),
    )
    if input_context is not None and len(files) < input_context.num_input_pipelines:
        ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    shapes = {}
    for m in modalities:
        kind = features.modality_type(m, kinds)
        if kind == features.IMAGE:
            shapes[m] = tuple(data_config.image_shape)
        elif kind == features.AUDIO:
            shapes[m] = (data_config.audio_samples,)
        else:
            shapes[m] = ()
    if data_config.cache:
        ds = ds.cache()
    if training and data_config.shuffle_buffer:
        ds = ds.shuffle(data_config.shuffle_buffer, seed=data_config.seed)
    ds = ds.batch(batch_size)

    def parse(serialized):
        x = example_schema.parse_examples(serialized, shapes, with_label=True, kinds=kinds)
        y = x.pop(features.LABEL)
        if preprocessing is not None:
            x = preprocessing.apply(x)
        return x, y

    ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
