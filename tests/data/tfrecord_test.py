"""TFRecords in the shared Example schema give the same batches as the file pipeline."""

import numpy as np
import tensorflow as tf

from mmkeras.configs import load_config
from mmkeras.data import load_split
from mmkeras.data import make_dataset
from mmkeras.data import example_schema
from mmkeras.data.tfrecord import read_tfrecords
from mmkeras.data.tfrecord import write_tfrecords

MODALITIES = ["audio", "image"]


def test_round_trip_matches_the_file_pipeline(avmnist_small, tmp_path):
    config = load_config(None, ["data.batch_size=8", "data.shuffle_buffer=0", "data.cache=false"])
    columns, _ = load_split(avmnist_small, "validation", config.data, MODALITIES, 10)
    columns["audio_present"][1] = 0.0  # A masked row survives the round trip.
    files = write_tfrecords(columns, tmp_path / "val.tfrecord", MODALITIES, num_shards=2)
    assert [f.name for f in files] == ["val.tfrecord-00000-of-00002", "val.tfrecord-00001-of-00002"]
    from_files = make_dataset(columns, config.data, MODALITIES)
    # Shard i holds rows i, i + 2, ...: read them back in row order with one shard at a time.
    expected = {k: np.concatenate([np.asarray(x[k]) for x, _ in from_files]) for k in
                ["image", "audio", "audio_present"]}
    labels = np.concatenate([np.asarray(y) for _, y in from_files])
    for shard in range(2):
        ds = read_tfrecords([files[shard]], config.data, MODALITIES)
        got = {k: np.concatenate([np.asarray(x[k]) for x, _ in ds]) for k in expected}
        got_labels = np.concatenate([np.asarray(y) for _, y in ds])
        rows = slice(shard, None, 2)
        np.testing.assert_array_equal(got_labels, labels[rows])
        np.testing.assert_allclose(got["image"], expected["image"][rows], atol=1e-6)
        np.testing.assert_allclose(got["audio"], expected["audio"][rows], atol=1e-6)
        np.testing.assert_array_equal(got["audio_present"], expected["audio_present"][rows])


def test_text_feature_in_the_schema():
    example = example_schema.to_example(text="grinning face", label=3)
    parsed = example_schema.parse_examples(
        tf.constant([example.SerializeToString(),
                     example_schema.to_example(text_present=0.0, label=1).SerializeToString()]),
        {"text": ()}, with_label=True)
    assert [t.decode() for t in parsed["text"].numpy()] == ["grinning face", ""]
    np.testing.assert_array_equal(parsed["text_present"], [1.0, 0.0])
    np.testing.assert_array_equal(parsed["label"], [3, 1])


def test_two_image_features_round_trip(avmnist_small, tmp_path):
    """`front` and `back`, both images (`data.modality_types`), in one Example each."""
    config = load_config(None, ["data.batch_size=8", "data.shuffle_buffer=0", "data.cache=false",
                                "data.modality_types={front: image, back: image}"])
    columns, _ = load_split(avmnist_small, "validation", config.data, ["image"], 10)
    n = 8
    two = {"id": columns["id"][:n], "label": columns["label"][:n],
           "front": columns["image"][:n], "front_present": columns["image_present"][:n],
           "back": columns["image"][n:2 * n], "back_present": columns["image_present"][n:2 * n]}
    two["back_present"][2], two["back"][2] = 0.0, ""
    names = ["back", "front"]
    files = write_tfrecords(two, tmp_path / "two.tfrecord", names,
                            kinds=config.data.modality_types)
    x, y = next(iter(read_tfrecords(files, config.data, names)))
    want, want_y = next(iter(make_dataset(two, config.data, names)))
    np.testing.assert_array_equal(y, want_y)
    for key in ("front", "back", "back_present"):
        np.testing.assert_allclose(x[key], want[key], atol=1e-6)
    assert not np.asarray(x["back"][2]).any() and np.asarray(x["front"][2]).any()
