"""Images of any size and channel count -> `image_shape` (pad / crop / stretch, alpha on the
fill colour), and the pixel limit read from the header before decoding; on the real OpenMoji
slice."""

import csv
import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from mmkeras.configs import DataConfig
from mmkeras.data import load_split
from mmkeras.data import make_dataset
from mmkeras.data.image_resize import fit_image
from mmkeras.data.manifest import check_image
from tests.datasets.openmoji_test import openmoji_small  # noqa: F401  (session fixture)


@pytest.fixture
def image_path(openmoji_small):  # noqa: F811
    with open(openmoji_small / "manifest.csv", newline="") as f:
        return openmoji_small / next(csv.DictReader(f))["image"]


def test_pad_crop_stretch(image_path):
    image = np.asarray(Image.open(image_path).convert("RGB"))  # 16x16 RGB
    x = tf.constant(image)
    pad = fit_image(x, (8, 24, 3), "pad", fill=1.0).numpy()
    # 16x16 fits 8x24 as 8x8, centred: 8 columns of fill on each side.
    assert pad.shape == (8, 24, 3)
    assert np.all(pad[:, :8] == 1.0) and np.all(pad[:, 16:] == 1.0)
    expected = tf.image.resize(image / 255.0, [8, 8], antialias=True).numpy()
    np.testing.assert_allclose(pad[:, 8:16], np.clip(expected, 0, 1), atol=1e-5)
    crop = fit_image(x, (8, 24, 3), "crop").numpy()  # covers 24x24, keeps the middle 8 rows
    full = np.clip(tf.image.resize(image / 255.0, [24, 24], antialias=True).numpy(), 0, 1)
    np.testing.assert_allclose(crop, full[8:16], atol=1e-5)
    stretch = fit_image(x, (8, 24, 3), "stretch").numpy()
    assert stretch.shape == (8, 24, 3) and not np.allclose(stretch[:, :8], 1.0)


def test_channels_and_alpha(image_path):
    rgb = np.asarray(Image.open(image_path).convert("RGB"))
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], -1)
    rgba[:4, :, 3] = 0  # a transparent band: becomes the fill colour
    out = fit_image(tf.constant(rgba), (16, 16, 3), "pad", fill=1.0).numpy()
    assert np.all(out[:4] == 1.0)
    np.testing.assert_allclose(out[8:], rgb[8:] / 255.0, atol=1e-5)
    gray = fit_image(tf.constant(rgb), (16, 16, 1), "pad").numpy()
    np.testing.assert_allclose(gray, tf.image.rgb_to_grayscale(rgb / 255.0).numpy(), atol=1e-5)
    back = fit_image(tf.constant(rgb[..., :1]), (16, 16, 3), "pad").numpy()
    assert np.all(back[..., 0] == back[..., 2])


def test_check_image_resize_and_pixel_limit(image_path, tmp_path):
    assert "image has shape (16, 16, 3), expected (20, 12, 1)" in check_image(image_path,
                                                                              (20, 12, 1))
    assert check_image(image_path, (20, 12, 1), resize="pad") is None
    assert "over the limit data.max_image_pixels=100" in check_image(
        image_path, (20, 12, 1), resize="pad", max_pixels=100)
    # A huge image whose pixel data is cut off: refused from its header alone, never decoded.
    buffer = io.BytesIO()
    Image.new("L", (4000, 3000)).save(buffer, "PNG")
    huge = tmp_path / "huge.png"
    huge.write_bytes(buffer.getvalue()[:200])
    assert "cannot decode image" in check_image(huge, (20, 12, 1), resize="pad")
    assert check_image(huge, (20, 12, 1), resize="pad", max_pixels=10**6) == (
        "image is 4000x3000 = 12000000 pixels, over the limit data.max_image_pixels=1000000")


def test_pipeline_resizes_real_images(openmoji_small):  # noqa: F811
    config = DataConfig(modalities=["image"], image_shape=[20, 12, 1], image_resize="crop",
                        max_image_pixels=10_000, batch_size=8)
    columns, report = load_split(openmoji_small, "validation", config, ["image"], 11)
    assert report.rows_kept == 11 and not report.problems
    x, _ = next(iter(make_dataset(columns, config, ["image"])))
    assert x["image"].shape == (8, 20, 12, 1)
    assert 0.0 <= float(tf.reduce_min(x["image"])) and float(tf.reduce_max(x["image"])) <= 1.0
    with pytest.raises(Exception, match="image has shape"):
        load_split(openmoji_small, "validation",
                   DataConfig(modalities=["image"], image_shape=[20, 12, 1]), ["image"], 11)
