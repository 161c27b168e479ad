"""Real examples of a model directory's dataset, decoded as the training pipeline decodes them.

What the export checks and calibrates on: manifest rows of a split (`rows`), their tensors
(`pipeline_inputs`, one row at a time), batches of a split (`batches`), the rows of the
signature checks (`signature_check_rows`, with a modality marked missing) and warm-up
examples (`warmup_examples`).
"""

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


def signature_check_rows(config, count=SIGNATURE_CHECK_EXAMPLES):
    """The first `count` test rows; row 1 has its audio and row 2 its image marked missing."""
    from mmkeras import features

    columns = rows(config, "test", count)
    modalities = sorted(config.model.modalities)
    if len(modalities) > 1:
        for row, m in enumerate(modalities, start=1):
            if row < len(columns["label"]):
                columns[m][row] = ""
                columns[features.presence_key(m)][row] = 0.0
    return columns


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
