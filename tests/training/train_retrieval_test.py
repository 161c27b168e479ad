"""The retrieval task (`task: retrieval`, training/tasks/retrieval.py): text modality end to
end through `python -m training.train`, distinct test items, and the evaluation space of deep
CCA (`mmkeras.metrics.paired_embeddings`)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO
from mmkeras.configs.cross_modal_config import CrossModalConfig
from mmkeras.metrics import paired_embeddings
from training.tasks import retrieval as retrieval_task


def test_distinct_item_rows_keep_the_first_pair_of_every_repeated_item():
    columns = {
        "label": np.array([0, 1, 0, 1, 2]),
        "image": np.array(["a.png", "b.png", "c.png", "d.png", "e.png"]),
        "text": np.array(["cat", "dog", "cat", "owl", "dog"]),
    }
    np.testing.assert_array_equal(
        retrieval_task.distinct_item_rows(columns, ["image", "text"]), [0, 1, 3]
    )
    # Unique on one modality: the same rows as the clip-only rule of before.
    np.testing.assert_array_equal(
        retrieval_task.distinct_item_rows(columns, ["text"]),
        retrieval_task.distinct_clip_rows(columns, "text"),
    )


def _deep_cca_like_outputs(n, seed):
    """16-d outputs of two views whose class signal lives in 3 low-variance directions, under
    13 high-variance directions shared by no pair, mixed by a fixed invertible map: what deep
    CCA may return, since its objective ignores any invertible linear map of each view."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=n)
    means = np.random.default_rng(7).normal(size=(10, 3))
    mix = np.random.default_rng(8).normal(size=(2, 16, 16))
    views = []
    for v in range(2):
        signal = means[labels] + 0.5 * rng.normal(size=(n, 3))
        noise = 5.0 * rng.normal(size=(n, 13))
        views.append(np.concatenate([signal, noise], axis=1) @ mix[v] + 3.0)
    return {"image_embedding": views[0], "audio_embedding": views[1]}, labels


def test_deep_cca_retrieval_is_compared_in_the_canonical_space():
    train, _ = _deep_cca_like_outputs(3000, seed=0)
    test, labels = _deep_cca_like_outputs(400, seed=1)
    figures = {}
    for space in ("embedding", "canonical"):
        cross_modal = CrossModalConfig(loss="cca", eval_space=space)
        figures[space] = paired_embeddings.evaluate_embeddings(
            test, labels, train, ["audio", "image"], cross_modal
        )
    assert paired_embeddings.resolve_eval_space(CrossModalConfig(loss="cca")) == "canonical"
    assert paired_embeddings.resolve_eval_space(CrossModalConfig(loss="clip")) == "embedding"
    for space, report in figures.items():
        assert report["retrieval"]["space"] == space
        ours = report["retrieval"]["image_to_audio"]["class"]["ours"]["R@1"]
        chance = report["retrieval"]["image_to_audio"]["class"]["random"]["R@1"]
        if space == "embedding":  # cosine of raw outputs reads the noise directions
            assert ours < chance + 0.1
        else:
            assert ours > chance + 0.3
    # The held-out correlations do not depend on the space; clustering follows retrieval.
    assert (figures["embedding"]["canonical_correlations"]
            == figures["canonical"]["canonical_correlations"])
    assert (figures["canonical"]["clustering"]["fused"]["ours"]["nmi"]
            > figures["embedding"]["clustering"]["fused"]["ours"]["nmi"] + 0.1)
    with pytest.raises(ValueError, match="eval_space"):
        paired_embeddings.resolve_eval_space(CrossModalConfig(eval_space="whitened"))


@pytest.fixture(scope="session")
def openmoji_small(data_root):
    pytest.importorskip("cairosvg")
    from mmkeras.datasets import openmoji

    return openmoji.prepare(size=16, per_class=10, data_root=data_root, verbose=False)


def _run(model_dir, dataset_dir, *extra, config="dual_encoder.yaml", text_sets=(
        # A CNN text tower: the config's GRU is unrolled in the graph (slow to trace).
        "model.text_encoder.type=cnn", "model.text_encoder.units=8",
        "model.text_encoder.embedding_dim=16")):
    sets = [
        "trainer.epochs=1", "trainer.verbose=0", "data.batch_size=16",
        f"data.data_dir={dataset_dir}", "data.image_shape=[16,16,3]",
        "model.image_encoder.filters=[8,16]", "model.image_encoder.embedding_dim=16",
        *text_sets, "cross_modal.embedding_dim=8",
    ]
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(
        [sys.executable, "-m", "training.train", "--config",
         f"training/configs/openmoji/{config}", "--model-dir", str(model_dir),
         *[a for s in sets for a in ("--set", s)], *extra],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )


@pytest.mark.large
def test_image_text_retrieval_on_real_openmoji_slice(openmoji_small, tmp_path):
    """Image <-> text from the command line: the vocabulary is adapted on the training split
    in tf.data and saved; both directions at both levels; --evaluate-only reloads it all."""
    model_dir = tmp_path / "openmoji_dual"
    result = _run(model_dir, openmoji_small)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads((model_dir / "report.json").read_text())
    n = report["test_pairs"]
    assert 0 < n <= 22 and report["eval_space"] == "embedding"
    retrieval = report["retrieval"]
    assert retrieval["classes"] <= 11 and retrieval["gallery_size"] == n
    for direction in ("image_to_text", "text_to_image"):
        for level in ("instance", "class"):
            ours = retrieval[direction][level]["ours"]
            assert set(ours) >= {"R@1", "R@5", "R@10", "median_rank"}
            assert 1 <= ours["median_rank"] <= n
        assert retrieval[direction]["instance"]["random"]["R@1"] == pytest.approx(1.0 / n)
    assert set(report["clustering"]) == {"image", "text", "fused"}
    vocab = (model_dir / "vocab.txt").read_text().splitlines()
    assert "face" in vocab or "flag" in vocab
    assert "image_to_text" in result.stdout and "text_to_image" in result.stdout

    again = _run(model_dir, openmoji_small, "--evaluate-only")
    assert again.returncode == 0, again.stderr[-4000:]
    reloaded = json.loads((model_dir / "report.json").read_text())
    assert reloaded["retrieval"] == retrieval  # same vocabulary, same weights, same figures


@pytest.mark.large
def test_retrieval_with_the_pretrained_minilm_text_tower(openmoji_small, tmp_path):
    """The dual encoder's text tower is MiniLM (keras_hub, frozen): its WordPiece tokenizer
    runs in tf.data and is saved in the model directory, and --evaluate-only reloads it."""
    model_dir = tmp_path / "openmoji_dual_minilm"
    result = _run(model_dir, openmoji_small,
                  config="dual_encoder_minilm.yaml", text_sets=("model.text_encoder.embedding_dim=16",))
    assert result.returncode == 0, result.stderr[-4000:]
    assert (model_dir / "text_preprocessor").is_dir() and not (model_dir / "vocab.txt").exists()
    report = json.loads((model_dir / "report.json").read_text())
    assert set(report["retrieval"]) >= {"image_to_text", "text_to_image"}
    again = _run(model_dir, openmoji_small, "--evaluate-only",
                 config="dual_encoder_minilm.yaml", text_sets=("model.text_encoder.embedding_dim=16",))
    assert again.returncode == 0, again.stderr[-4000:]
    assert json.loads((model_dir / "report.json").read_text())["retrieval"] == report["retrieval"]
