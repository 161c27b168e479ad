"""OpenMoji image + text dataset: preparation from the npm package, then training from the CLI."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mmkeras.datasets import avmnist
from mmkeras.datasets import openmoji
from tests.conftest import REPO

pytest.importorskip("cairosvg")


@pytest.fixture(scope="session")
def openmoji_small(data_root):
    return openmoji.prepare(size=16, per_class=10, data_root=data_root, verbose=False)


def _rows(path):
    with open(path / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_manifest_images_and_metadata(openmoji_small):
    rows = _rows(openmoji_small)
    meta = json.loads((openmoji_small / "dataset.json").read_text())
    assert list(rows[0]) == list(openmoji.MANIFEST_COLUMNS)
    assert len(meta["classes"]) == 11 and "component" not in meta["classes"]
    assert len(rows) == 110  # 10 per group: 7 train / 1 validation / 2 test.
    counts = {s: sum(r["split"] == s for r in rows) for s in openmoji.SPLITS}
    assert counts == {"train": 77, "validation": 11, "test": 22}
    assert len({r["id"] for r in rows}) == len(rows)
    for r in rows[:20]:
        assert meta["classes"][int(r["label"])] == r["group"] and r["text"].strip()
        with Image.open(openmoji_small / r["image"]) as image:
            assert image.mode == "RGB" and image.size == (16, 16)
            assert np.asarray(image).std() > 0  # Not blank.
    source = meta["sources"][0]
    assert (source["registry"], source["package"], source["version"]) == ("npm", "openmoji", "17.0.0")
    assert source["sha256"] == openmoji.SOURCE["sha256"] and "CC BY-SA" in source["licence"]
    assert meta["checksum"] == avmnist.compute_checksum(openmoji_small)


def test_prepare_is_cached(openmoji_small, data_root):
    before = (openmoji_small / "dataset.json").stat().st_mtime_ns
    assert openmoji.prepare(size=16, per_class=10, data_root=data_root, verbose=False) == openmoji_small
    assert (openmoji_small / "dataset.json").stat().st_mtime_ns == before


@pytest.mark.large
def test_trains_fused_model_from_the_command_line(openmoji_small, tmp_path):
    model_dir = tmp_path / "fused"
    sets = ["trainer.epochs=1", "trainer.verbose=0", f"data.data_dir={openmoji_small}",
            # 16 filters, not 8: TF 2.17's oneDNN kernels corrupt the heap (double free) when
            # training the ResNet encoder with an 8-filter stage on AVX512-FP16 Xeons.
            "data.image_shape=[16,16,3]", "model.image_encoder.filters=[16,16]",
            "model.image_encoder.embedding_dim=16",
            # A CNN text encoder: the config's GRU is unrolled in the graph (slow to trace).
            "model.text_encoder.type=cnn", "model.text_encoder.units=8",
            "model.text_encoder.embedding_dim=16", "model.head_units=[16]"]
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, "-m", "training.train", "--config",
         "training/configs/openmoji/early_fusion.yaml", "--model-dir", str(model_dir),
         *[x for s in sets for x in ("--set", s)]],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads((model_dir / "report.json").read_text())
    assert report["test"]["examples"] == 22 and 0.0 <= report["test"]["accuracy"] <= 1.0
    vocab = (model_dir / "vocab.txt").read_text().splitlines()
    assert "face" in vocab or "flag" in vocab
