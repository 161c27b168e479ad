"""The captioning script: tokenisation, baselines, and a tiny end-to-end run on real OpenMoji."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from tests.conftest import REPO
from training import train_captioning as tc

pytest.importorskip("cairosvg")

TINY = [
    "trainer.epochs=1", "trainer.verbose=0", "data.batch_size=16", "data.image_shape=[16,16,3]",
    "model.image_encoder.type=cnn", "model.image_encoder.filters=[8]",
    "model.image_encoder.embedding_dim=16", "captioning.hidden_dim=16",
    "captioning.num_layers=1", "captioning.num_heads=2", "captioning.intermediate_dim=32",
    "captioning.min_count=1", "captioning.max_words=6", "captioning.beam_width=2",
    "captioning.samples=5", "captioning.constant_candidates=20",
]


@pytest.fixture(scope="session")
def openmoji_tiny(data_root):
    from mmkeras.datasets import openmoji

    return openmoji.prepare(size=16, per_class=10, data_root=data_root, verbose=False)


def test_tokenize_vocabulary_and_encoding():
    assert tc.tokenize("flag: St. Lucia") == ["flag", ":", "st", ".", "lucia"]
    assert tc.tokenize("Woman’s hat, T-shirt") == ["woman", "’", "s", "hat", ",", "t", "-", "shirt"]
    vocab = tc.build_vocabulary(["flag: Peru", "flag: Chad", "red heart"], min_count=2)
    assert vocab == ["<pad>", "<unk>", "<start>", "<end>", ":", "flag"]
    inputs, targets = tc.encode_captions(["flag: Peru", "a b c d"], vocab, max_words=3)
    assert inputs.tolist() == [[2, 5, 4, 1], [2, 1, 1, 1]]
    assert targets.tolist() == [[5, 4, 1, 3], [1, 1, 1, 3]]  # cut to 3 words, then <end>
    assert tc.detokenize(["flag", ":", "st", ".", "lucia"]) == "flag: st. lucia"


def test_baselines():
    train = [["flag", ":", "peru"], ["red", "heart"], ["red", "heart"], ["grinning", "face"]]
    assert tc.most_frequent_caption(train) == ["red", "heart"]
    val = [[["flag", ":", "chad"]], [["flag", ":", "mali"]], [["red", "apple"]]]
    best, score = tc.best_constant_caption(train, val)
    assert best == ["flag", ":", "peru"] and score > 0
    images = np.arange(4 * 3, dtype="float32").reshape(4, 3)
    test = images[[3, 0]] + 0.1
    assert tc.nearest_neighbour_captions(images, test, train) == [train[3], train[0]]
    assert tc.sample_rows(10, 3) == [0, 4, 9] and tc.sample_rows(2, 5) == [0, 1]


def test_tiny_end_to_end_run(openmoji_tiny, tmp_path):
    model_dir = tmp_path / "captioner"
    sets = [*TINY, f"data.data_dir={openmoji_tiny}"]
    assert tc.main(["--config", "training/configs/openmoji/captioning.yaml", "--model-dir",
                    str(model_dir), *[x for s in sets for x in ("--set", s)]]) == 0
    for name in ("config.yaml", "model.keras", "caption_vocab.txt", "history.csv",
                 "report.json", "samples.md"):
        assert (model_dir / name).is_file(), name
    vocab = tc.load_vocabulary(model_dir)
    assert vocab[:4] == list(tc.SPECIAL_TOKENS) and "flag" in vocab and ":" in vocab
    report = json.loads((model_dir / "report.json").read_text())
    assert report["test_set"]["images"] == 22
    rows = [*report["bleu"].values(), *report["baselines"].values()]
    assert set(report["bleu"]) == {"greedy", "beam2"} and len(rows) == 6
    for row in rows:
        for n in range(1, 5):
            assert 0.0 <= row[f"bleu{n}"] <= 1.0
    assert len(report["samples"]) == 5
    assert (model_dir / "samples.md").read_text().count("\n| ") == 6  # header + 5 rows
    assert yaml.safe_load((model_dir / "config.yaml").read_text())["captioning"]["beam_width"] == 2


def test_unknown_config_key_exits_2(tmp_path, capsys):
    code = tc.main(["--config", "training/configs/openmoji/captioning.yaml", "--model-dir",
                    str(tmp_path / "x"), "--set", "captioning.beam=3"])
    assert code == 2 and "captioning.beam" in capsys.readouterr().err


@pytest.mark.large
def test_two_cpu_replicas_from_the_command_line(openmoji_tiny, tmp_path):
    """MirroredStrategy over 2 logical CPUs (a subprocess: devices are set before TF starts)."""
    model_dir = tmp_path / "two_replicas"
    # Keras builds the model on the first batch averaged over the replicas, so that batch must
    # split evenly: 10 (11 validation images would give 6 + 5 with a batch of 16).
    sets = [*TINY, "data.batch_size=10", "runtime.cpu_replicas=2",
            f"data.data_dir={openmoji_tiny}"]
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, "-m", "training.train_captioning", "--config",
         "training/configs/openmoji/captioning.yaml", "--model-dir", str(model_dir),
         *[x for s in sets for x in ("--set", s)]],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads((model_dir / "report.json").read_text())
    assert report["replicas"] == 2 and report["strategy"] == "MirroredStrategy"
