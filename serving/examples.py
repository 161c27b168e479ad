"""Real examples of a model directory's dataset, decoded as the training pipeline decodes them.

What the export checks and calibrates on: manifest rows of a split (`rows`), their tensors
(`pipeline_inputs`, one row at a time), batches of a split (`batches`), the rows of the
signature checks (`signature_check_rows`, with a modality marked missing) and warm-up
examples (`warmup_examples`).
"""

import io
import pathlib

import numpy as np

WARMUP_EXAMPLES = 4
SIGNATURE_CHECK_EXAMPLES = 6


def rows(config, split, count=None):
    """The first `count` checked manifest rows of a split (`load_split` columns)."""
    from mmkeras.data import load_split
    from mmkeras.data.sources import dataset_dir_for

    dataset_dir = dataset_dir_for(config.data, prepare=False)
    columns, _ = load_split(dataset_dir, split, config.data, config.model.modalities,
                            config.model.num_classes,
                            target=getattr(config.model, "target", "multiclass"))
    return {k: np.array(v[:count], copy=True) for k, v in columns.items()}


def batches(config, max_examples, batch_size=64, split="test", preprocessing=None):
    """`(inputs, labels)` numpy batches of a split through `make_dataset` (with the model
    directory's fitted `preprocessing`: token ids for text, normalised tabular vectors)."""
    from mmkeras.data import load_split, make_dataset
    from mmkeras.data.sources import dataset_dir_for

    data = config.data
    dataset_dir = dataset_dir_for(data, prepare=False)
    columns, _ = load_split(dataset_dir, split, data, config.model.modalities, config.model.num_classes,
                            target=getattr(config.model, "target", "multiclass"))
    if max_examples:
        columns = {k: v[:max_examples] for k, v in columns.items()}
    ds = make_dataset(columns, data, sorted(config.model.modalities), batch_size=batch_size,
                      preprocessing=preprocessing)
    for x, y in ds:
        yield {k: v.numpy() for k, v in x.items()}, y.numpy()


UNSEEN_CATEGORY = "(not in the training split)"


def signature_check_rows(config, count=SIGNATURE_CHECK_EXAMPLES):
    """The first `count` test rows; with several modalities, row i (from 1) has the i-th
    modality (sorted) marked missing (for AV-MNIST: row 1 audio, row 2 image). With tabular
    columns, the last row whose tabular modality is present gets a NaN in its first numeric
    column and an unseen value in its first categorical column (imputed / looked up as
    unknown, in tf.data and in the serving graph alike)."""
    from mmkeras import features

    columns = rows(config, "test", count)
    modalities = sorted(config.model.modalities)
    if len(modalities) > 1:
        for row, m in enumerate(modalities, start=1):
            if row < len(columns["label"]):
                _mark_missing(columns, m, row)
    if features.TABULAR in modalities:
        present = np.flatnonzero(columns[features.presence_key(features.TABULAR)] > 0)
        if len(present):
            row = present[-1]
            if columns[features.TABULAR].shape[1]:
                columns[features.TABULAR] = columns[features.TABULAR].astype(np.float32)
                columns[features.TABULAR][row, 0] = np.nan
            if columns["tabular_categories"].shape[1]:
                categories = columns["tabular_categories"].astype(object)
                categories[row, 0] = UNSEEN_CATEGORY
                columns["tabular_categories"] = categories.astype(str)
    return columns


def _mark_missing(columns, m, row):
    """What the manifest reader gives a masked modality: zeros / "" and flag 0."""
    from mmkeras import features

    if m == features.TABULAR:
        columns[m][row] = 0.0
        columns["tabular_categories"][row] = ""
    else:
        columns[m][row] = ""
    columns[features.presence_key(m)][row] = 0.0


def raw_batch(columns, raw):
    """The `serve_raw` inputs of manifest rows: file bytes (`b""` when missing), UTF-8 text,
    tabular cells by column name (floats, NaN kept; category strings), the flags.

    Args:
        columns: `rows` / `signature_check_rows` columns.
        raw: `serving.serving_module.raw_features(model, preprocessing)`.
    """
    from serving import raw_inputs

    batch = {}
    position = {raw_inputs.NUMERIC: 0, raw_inputs.CATEGORICAL: 0}
    for f in raw:
        if f.kind in raw_inputs.BYTES_KINDS:
            batch[f.name] = np.array(
                [pathlib.Path(p).read_bytes() if p else b"" for p in columns[f.modality]],
                dtype=object)
        elif f.kind == raw_inputs.TEXT:
            batch[f.name] = np.array([str(t).encode("utf-8") for t in columns[f.modality]],
                                     dtype=object)
        elif f.kind == raw_inputs.NUMERIC:
            j = position[f.kind]
            batch[f.name] = np.asarray(columns[f.modality][:, j], np.float32)
            position[f.kind] += 1
        elif f.kind == raw_inputs.CATEGORICAL:
            j = position[f.kind]
            batch[f.name] = np.array(
                [str(v).encode("utf-8") for v in columns["tabular_categories"][:, j]],
                dtype=object)
            position[f.kind] += 1
        elif f.kind == raw_inputs.PRESENCE:
            batch[f.name] = np.asarray(columns[f.name], np.float32)
        else:
            batch[f.name] = np.asarray(columns[f.modality], np.float32)
    return batch


def wav_for_other_audio(batch, x, raw, sample_rate):
    """`serve_raw` takes 16-bit WAV: audio files in another format (OGG, FLAC, MP3: what the
    training pipeline also reads) are sent as the WAV a client would make of them, the
    pipeline's waveform at the model's rate, and the reference inputs `x` get that WAV's
    16-bit samples, so both sides see the same audio. Changes `batch` and `x` in place;
    returns how many files were converted."""
    from mmkeras import features
    from mmkeras.data import example_schema

    converted = 0
    for f in raw:
        if f.kind != features.AUDIO:
            continue
        for i, data in enumerate(batch[f.name]):
            if not data or bytes(data[:4]) == b"RIFF":
                continue
            wav = example_schema.encode_wav(np.asarray(x[f.modality][i]), sample_rate)
            batch[f.name][i] = wav
            quantized = np.clip(np.round(np.asarray(x[f.modality][i], np.float64) * 32768.0),
                                -32768, 32767) / 32768.0
            x[f.modality][i] = quantized.astype(np.float32)
            converted += 1
    return converted


def fitted_png_for_client(batch, x, raw):
    """A model trained with `data.image_resize` fits images inside `serve_raw`; the TFLite client
    step (`serving.client.tflite_inputs`) takes images already at the model's shape. Sends the
    pipeline's fitted image as an 8-bit PNG (what a client that resizes first would send) and
    gives the reference inputs `x` the same 8-bit pixels. Changes `batch` and `x` in place."""
    from PIL import Image

    from mmkeras import features

    for f in raw:
        if f.kind != features.IMAGE:
            continue
        for i, data in enumerate(batch[f.name]):
            if not data:
                continue
            pixels = np.clip(np.round(np.asarray(x[f.modality][i]) * 255.0), 0, 255)
            pixels = pixels.astype(np.uint8)
            buffer = io.BytesIO()
            Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(
                buffer, format="PNG")
            batch[f.name][i] = buffer.getvalue()
            x[f.modality][i] = (pixels / 255.0).astype(np.float32)


def raw_examples(batch, raw):
    """`tf.train.Example`s of a `raw_batch`: a missing modality's features and NaN numbers are
    left out; flags are written in even rows and left to be inferred in odd rows, except for
    a present modality none of whose features is left (a one-column table's NaN cell): the
    server would infer it missing, so its flag is written."""
    from mmkeras import features
    from serving import raw_inputs

    def flag_of(modality, i):
        key = features.presence_key(modality)
        return float(batch[key][i]) if key in batch else 1.0

    result = []
    n = len(next(iter(batch.values())))
    for i in range(n):
        values, given = {}, set()
        for f in raw:
            if f.kind == raw_inputs.PRESENCE:
                continue
            value = batch[f.name][i]
            if flag_of(f.modality, i) == 0 or (
                    f.kind == raw_inputs.NUMERIC and np.isnan(value)):
                continue
            values[f.name] = value
            given.add(f.modality)
        for f in raw:
            if f.kind == raw_inputs.PRESENCE:
                flag = flag_of(f.modality, i)
                if i % 2 == 0 or (flag == 1 and f.modality not in given):
                    values[f.name] = flag
        result.append(raw_inputs.to_example(values, raw))
    return result


def nan_cells(batch, raw):
    """How many NaN numbers a `raw_batch` holds (the checks say what they covered)."""
    from serving import raw_inputs

    return int(sum(np.isnan(batch[f.name]).sum() for f in raw if f.kind == raw_inputs.NUMERIC))


def pipeline_inputs(columns, config, modalities, preprocessing=None):
    """The training pipeline's decoding (`pipeline.decode_row`) of manifest rows, one at a time,
    then the model directory's fitted `preprocessing` if given (what `serving_default` takes).

    Row by row rather than through `make_dataset`: tensorflow-io's audio decoding returns wrong
    samples for some clips when several calls run at once (a parallel `tf.data` map), which
    would make these checks flaky; one call at a time it is exact.
    """
    import tensorflow as tf

    from mmkeras.data import pipeline

    rows = []
    for i in range(len(columns["label"])):
        row = {k: tf.constant(v[i]) for k, v in columns.items() if k != "id"}
        rows.append(pipeline.decode_row(row, config.data, modalities))
    x = {k: tf.stack([r[k] for r in rows]) for k in rows[0]}
    return preprocessing.apply(x) if preprocessing is not None else x


def warmup_examples(config, count=WARMUP_EXAMPLES, preprocessing=None):
    x = pipeline_inputs(rows(config, "test", count), config, sorted(config.model.modalities),
                        preprocessing)
    return {k: v.numpy() for k, v in x.items()}
