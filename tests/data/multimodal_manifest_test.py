"""CSV and JSONL manifests over every modality; each bad input named (file + line) or counted."""

import csv
import json

import numpy as np
import pytest
from PIL import Image

from mmkeras.configs import load_config
from mmkeras.data import DataError
from mmkeras.data import Preprocessing
from mmkeras.data import load_split
from mmkeras.data import make_dataset
from mmkeras.data import read_manifest
from mmkeras.data.manifest import checkers_for
from mmkeras.datasets import moving_mnist

sf = pytest.importorskip("soundfile")

MODALITIES = ["audio", "image", "tabular", "text", "timeseries", "video"]
TEXTS = ["a red apple", "the blue sky", "green grass grows", "red fire truck", "blue ocean wave",
         "a green frog", "red roses", "deep blue sea"]
OVERRIDES = [
    "data.image_shape=[8,8,3]", "data.audio_samples=800", "data.audio_resample=true",
    "data.video_frames=3", "data.video_shape=[16,16,1]", "data.timeseries_steps=12",
    "data.timeseries_channels=2", "data.tabular_numeric=[height,weight]",
    "data.tabular_categorical=[colour]", "data.tabular_categorical_bins=4",
    "data.text_sequence_length=4", "data.text_max_tokens=40", "data.batch_size=4",
    "data.shuffle_buffer=0", "data.cache=false",
]


def _config(*extra):
    return load_config(None, OVERRIDES + list(extra)).data


def _make(root, fmt="jsonl"):
    """A tiny dataset of 8 rows (6 train, 2 test) with real files of every kind."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(8):
        split = "train" if i < 6 else "test"
        label = i % 3
        Image.fromarray((rng.random((8, 8, 3)) * 255).astype("uint8")).save(root / f"im{i}.png")
        tone = 0.3 * np.sin(2 * np.pi * (300 + 100 * label) * np.arange(1600) / 16000)
        sf.write(str(root / f"a{i}.flac"), tone.astype("float32"), 16000, format="FLAC")
        np.save(root / f"ts{i}.npy", rng.normal(size=(10 + i, 2)).astype("float32"))
        moving_mnist.write_gif(root / f"v{i}.gif", (rng.random((4, 16, 16)) * 255).astype("uint8"))
        rows.append({"id": f"r{i}", "split": split, "label": label, "image": f"im{i}.png",
                     "audio": f"a{i}.flac", "timeseries": f"ts{i}.npy", "video": f"v{i}.gif",
                     "text": TEXTS[i], "height": 1.5 + 0.1 * i, "weight": 60 + i,
                     "colour": ["red", "blue", "green"][label]})
    return _write(root, rows, fmt)


def _write(root, rows, fmt):
    if fmt == "jsonl":
        path = root / "manifest.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        path = root / "manifest.csv"
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return path


def _read(path, split="train", bad_input="error", config=None):
    config = config or _config()
    return read_manifest(path, split, MODALITIES, 3, bad_input=bad_input,
                         checkers=checkers_for(config), numeric_columns=config.tabular_numeric,
                         categorical_columns=config.tabular_categorical)


def _rows(path):
    if path.suffix == ".jsonl":
        return [json.loads(l) for l in path.read_text().splitlines()]
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_reads_every_modality(tmp_path, fmt):
    path = _make(tmp_path, fmt)
    columns, report = _read(path)
    assert report.rows_kept == 6 and report.skipped == 0 and not report.problems
    assert columns["tabular"].shape == (6, 2) and columns["tabular_categories"].shape == (6, 1)
    assert columns["text"][1] == "the blue sky"
    assert columns["video"][0].endswith("v0.gif")


def test_pipeline_decodes_every_modality(tmp_path):
    path = _make(tmp_path)
    config = _config()
    columns, _ = load_split(tmp_path, "train", config, MODALITIES, 3)
    preprocessing = Preprocessing.fit(columns, config, MODALITIES)
    with pytest.raises(ValueError, match="Preprocessing"):
        make_dataset(columns, config, MODALITIES)
    ds = make_dataset(columns, config, MODALITIES, preprocessing=preprocessing, threads=2)
    x, y = next(iter(ds))
    assert x["image"].shape == (4, 8, 8, 3)
    assert x["audio"].shape == (4, 800)  # 1,600 samples at 16 kHz -> 800 at 8 kHz.
    assert x["video"].shape == (4, 3, 16, 16, 1)
    assert x["timeseries"].shape == (4, 12, 2)
    assert x["text"].dtype == "int32" and x["text"].shape == (4, 4)
    assert x["tabular"].shape == (4, 3)
    tab = np.asarray(x["tabular"])
    np.testing.assert_allclose(tab[:, 0], (columns["tabular"][:4, 0] - columns["tabular"][:, 0].mean())
                               / columns["tabular"][:, 0].std(), rtol=1e-4)
    assert set(tab[:, 2]) <= {1.0, 2.0, 3.0}  # Known colours; 0 = unknown.
    ts = np.asarray(x["timeseries"][0])
    np.testing.assert_allclose(ts[:10], np.load(tmp_path / "ts0.npy"), rtol=1e-6)
    assert not ts[10:].any()  # Zero-padded to 12 steps.
    assert "tabular_categories" not in x


# (what to break, modality, expected words in the message)
BREAKAGES = {
    "missing_audio": ("audio", "file not found"),
    "truncated_flac": ("audio", "cannot decode audio"),
    "stereo_flac": ("audio", "2 channels, expected 1"),
    "corrupt_png": ("image", "cannot decode image"),
    "grey_png": ("image", "expected (8, 8, 3)"),
    "empty_text": ("text", "text is empty"),
    "nan_number": ("tabular", "tabular column 'weight' is 'nan'"),
    "not_a_number": ("tabular", "'heavy' is not a number"),
    "missing_video": ("video", "file not found"),
    "corrupt_gif": ("video", "cannot decode GIF"),
    "nan_series": ("timeseries", "NaN"),
    "wrong_series_channels": ("timeseries", "3 channels, expected 2"),
}


def _break(root, path, kind):
    rows = _rows(path)
    row = rows[1]
    if kind == "missing_audio":
        (root / row["audio"]).unlink()
    elif kind == "truncated_flac":
        data = (root / row["audio"]).read_bytes()
        (root / row["audio"]).write_bytes(data[: len(data) // 3])
    elif kind == "stereo_flac":
        sf.write(str(root / row["audio"]), np.zeros((800, 2), "float32"), 16000, format="FLAC")
    elif kind == "corrupt_png":
        (root / row["image"]).write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    elif kind == "grey_png":
        Image.new("L", (8, 8)).save(root / row["image"])
    elif kind == "empty_text":
        row["text"] = "   "
    elif kind == "nan_number":
        row["weight"] = "nan"
    elif kind == "not_a_number":
        row["weight"] = "heavy"
    elif kind == "missing_video":
        (root / row["video"]).unlink()
    elif kind == "corrupt_gif":
        (root / row["video"]).write_bytes(b"GIF89a" + b"\0" * 5)
    elif kind == "nan_series":
        np.save(root / row["timeseries"], np.full((5, 2), np.nan, "float32"))
    elif kind == "wrong_series_channels":
        np.save(root / row["timeseries"], np.zeros((5, 3), "float32"))
    _write(root, rows, path.suffix[1:])
    return row


@pytest.mark.parametrize("kind", sorted(BREAKAGES))
def test_error_names_file_line_and_reason(tmp_path, kind):
    path = _make(tmp_path)
    _break(tmp_path, path, kind)
    modality, reason = BREAKAGES[kind]
    with pytest.raises(DataError) as info:
        _read(path)
    message = str(info.value)
    assert f"{path}, line 2 (id r1)" in message  # JSONL: line 2 is the second row.
    assert reason in message
    if modality not in ("text", "tabular"):
        assert f"{modality} file {tmp_path}" in message


@pytest.mark.parametrize("kind", ["truncated_flac", "empty_text", "nan_number", "corrupt_gif"])
def test_skip_and_mask_count(tmp_path, kind):
    path = _make(tmp_path)
    _break(tmp_path, path, kind)
    modality, reason = BREAKAGES[kind]
    columns, report = _read(path, bad_input="skip")
    assert report.skipped == 1 and report.rows_kept == 5 and len(columns["label"]) == 5
    assert "r1" not in columns["id"]
    columns, report = _read(path, bad_input={"default": "error", modality: "mask"})
    assert report.masked == {modality: 1} and report.skipped == 0 and report.rows_kept == 6
    assert len(report.problems) == 1 and reason in report.problems[0]
    assert columns[f"{modality}_present"].tolist() == [1, 0, 1, 1, 1, 1]


def test_masked_rows_flow_through_tf_data_as_zeros(tmp_path):
    path = _make(tmp_path)
    for kind in ("truncated_flac", "empty_text", "nan_number", "corrupt_gif", "nan_series"):
        _break(tmp_path, path, kind)
    config = _config("data.bad_input=mask")
    columns, report = load_split(tmp_path, "train", config, MODALITIES, 3)
    assert report.masked == {"audio": 1, "text": 1, "tabular": 1, "video": 1, "timeseries": 1}
    preprocessing = Preprocessing.fit(columns, config, MODALITIES)
    x, _ = next(iter(make_dataset(columns, config, MODALITIES, preprocessing=preprocessing)))
    for m in ("audio", "video", "timeseries", "text"):
        assert float(x[f"{m}_present"][1]) == 0.0 and not np.asarray(x[m][1]).any()
        assert np.asarray(x[m][0]).any()


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_label_out_of_range_is_named_or_skipped(tmp_path, fmt):
    path = _make(tmp_path, fmt)
    rows = _rows(path)
    rows[2]["label"] = 7
    _write(tmp_path, rows, fmt)
    line = 3 if fmt == "jsonl" else 4  # CSV has a header line.
    with pytest.raises(DataError, match=rf"line {line} \(id r2\): label 7 is not an integer in \[0, 3\)|line {line} \(id r2\): label '7'"):
        _read(path)
    _, report = _read(path, bad_input="mask")  # A label cannot be masked: skipped.
    assert report.skipped == 1 and report.masked == {}


def test_bad_json_line_is_named(tmp_path):
    path = _make(tmp_path)
    path.write_text(path.read_text() + "{not json\n")
    with pytest.raises(DataError, match="line 9: not JSON"):
        _read(path)


def test_tabular_needs_its_columns(tmp_path):
    path = _make(tmp_path)
    with pytest.raises(DataError, match="tabular_numeric"):
        read_manifest(path, "train", ["tabular"], 3)
    with pytest.raises(DataError, match=r"missing columns \['age'\]"):
        read_manifest(path, "train", ["tabular"], 3, numeric_columns=["age"])
