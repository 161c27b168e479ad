"""The task exports' comparison of a signature's outputs with the Keras reference
(`serving.tasks.base.compare`) and the pick of each signature's inputs (`inputs_of`)."""

import numpy as np
import tensorflow as tf

from serving.tasks import base


def test_compare_floats_relative_to_the_reference_scale():
    want = {"code": np.array([[0.5, -0.25]]), "logit": np.array([40.0, -2.0])}
    # code: |diff| 5e-6 against 1e-5 * max(1, 0.5); logit: 5e-4 against 1e-5 * 40 = 4e-4.
    close = {"code": want["code"] + 5e-6, "logit": want["logit"] + 5e-4}
    report = base.compare(close, want, 1e-5)
    assert report["outputs"]["code"]["passed"] and not report["outputs"]["logit"]["passed"]
    assert report["outputs"]["logit"]["tolerance"] == 1e-5 * 40
    assert abs(report["outputs"]["logit"]["max_abs_diff"] - 5e-4) < 1e-12
    assert not report["passed"]
    assert base.compare(close, want, 1e-4)["passed"]  # logit bound 4e-3


def test_compare_integers_and_strings_row_by_row_and_missing_outputs():
    want = {"token_ids": np.array([[4, 5, 0], [6, 0, 0]], np.int32),
            "caption": np.array([b"red heart", b"flag"], dtype=object)}
    got = {"token_ids": np.array([[4, 5, 0], [6, 7, 0]], np.int32),
           "caption": np.array([b"red heart", b"flag"], dtype=object)}
    report = base.compare(got, want, 1e-5)
    assert report["outputs"]["token_ids"] == {"agreement": 0.5, "passed": False}
    assert report["outputs"]["caption"] == {"agreement": 1.0, "passed": True}
    assert not report["passed"]
    missing = base.compare({"token_ids": want["token_ids"]}, want, 1e-5)
    assert not missing["passed"] and missing["outputs"]["caption"]["shape"] is None
    wrong_shape = base.compare({**want, "token_ids": want["token_ids"][:, :2]}, want, 1e-5)
    assert not wrong_shape["passed"]
    assert base.compare(dict(want), want, 1e-5)["passed"]


def test_inputs_of_picks_and_renames_the_rows_of_a_signature():
    endpoint = base.Endpoint(
        "embed_text_strings", None, {"text": tf.TensorSpec([None], tf.string)},
        row_keys={"text": "raw_text"})
    rows = {"text": np.zeros((2, 3), np.int32), "raw_text": np.array([b"a", b"b"], object),
            "image": np.zeros((2, 4), np.float32)}
    inputs = base.inputs_of(endpoint, rows)
    assert list(inputs) == ["text"] and inputs["text"].tolist() == [b"a", b"b"]
    image = base.Endpoint("embed_image", None, {"image": tf.TensorSpec([None, 4], tf.float32)})
    assert base.inputs_of(image, {"image": np.zeros((2, 4))})["image"].dtype == np.float32
