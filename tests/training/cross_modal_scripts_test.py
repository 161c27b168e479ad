"""`train_invariance` and `train_shared_autoencoder` end to end, in process, on the session's
small real AV-MNIST slice: tiny encoders, one or two epochs, every report field checked for
shape and range (the figures themselves are the README's, measured on the full configs)."""

import json

import pytest

from training import train_invariance
from training import train_shared_autoencoder

pytestmark = pytest.mark.large

TINY = [
    "model.image_encoder.filters=[4]", "model.audio_encoder.filters=[4]",
    "data.batch_size=16", "trainer.verbose=0",
]


def _sets(values):
    return [a for v in values for a in ("--set", v)]


def test_train_invariance_script_with_every_new_option(avmnist_small, tmp_path, capsys):
    model_dir = tmp_path / "invariance"
    code = train_invariance.main([
        "--config", "training/configs/avmnist/modality_invariance.yaml",
        "--model-dir", str(model_dir),
        *_sets(TINY + [
            f"data.data_dir={avmnist_small}", "trainer.epochs=2",
            "cross_modal.embedding_dim=6", "cross_modal.discriminator_units=[8]",
            "cross_modal.adversary=inverted", "cross_modal.reversal_scale=1.0",
            "cross_modal.discriminator_gradient_penalty=1.0",
            "cross_modal.moment_matching=paired", "cross_modal.moment_weight=0.5",
            "cross_modal.discriminator_steps=2", "cross_modal.adversary_warmup_epochs=0.5",
            "cross_modal.probe_mlp_epochs=2",
        ]),
    ])
    assert code == 0
    report = json.loads((model_dir / "report.json").read_text())
    assert set(report) >= {"inverted_paired", "baseline", "dataset", "config"}
    run, base = report["inverted_paired"], report["baseline"]
    assert run["adversary"] == "inverted" and run["moment_matching"] == "paired"
    assert run["final_lambda"] == pytest.approx(1.0, abs=0.05)
    assert base["final_lambda"] == 0.0 and base["moment_matching"] is None
    for r in (run, base):
        assert r["discriminator_updates"] == 2 * r["encoder_updates"] > 0
        assert set(r["task_accuracy"]) == {"audio", "image"}
        assert set(r["probe_modality_accuracy"]) == {"linear", "mlp", "mlp_on_predictions"}
        for value in [*r["task_accuracy"].values(), *r["probe_modality_accuracy"].values(),
                      r["discriminator_accuracy"]]:
            assert 0.0 <= value <= 1.0
    assert (model_dir / "model_inverted_paired.keras").is_file()
    assert "| inverted_paired | inverted |" in capsys.readouterr().out


def test_train_shared_autoencoder_script_subsets_and_alignment(avmnist_small, tmp_path, capsys):
    model_dir = tmp_path / "shared_ae"
    code = train_shared_autoencoder.main([
        "--config", "training/configs/avmnist/shared_autoencoder.yaml",
        "--model-dir", str(model_dir),
        *_sets(TINY + [f"data.data_dir={avmnist_small}", "trainer.epochs=1",
                       "cross_modal.code_dim=8", "cross_modal.autoencoder_normalize_batches=2"]),
    ])
    assert code == 0
    report = json.loads((model_dir / "report.json").read_text())
    assert set(report["conditions"]) == {"both", "image_only", "audio_only"}
    for condition in report["conditions"].values():
        for mse in condition["reconstruction_mse"].values():
            assert set(mse) == {"ours", "mean", "class_mean"}
            assert all(0 < v < 10 for v in mse.values())
        assert 0.0 <= condition["probe_accuracy"] <= 1.0
    assert set(report["probe_transfer"]) == {"image_only_to_audio_only",
                                             "audio_only_to_image_only"}
    assert report["config"]["cross_modal"]["autoencoder_alignment"] == "l2"
    assert (model_dir / "model.keras").is_file() and (model_dir / "history.csv").is_file()
    # An unknown alignment is refused, naming the key, before any training.
    capsys.readouterr()
    assert train_shared_autoencoder.main([
        "--config", "training/configs/avmnist/shared_autoencoder.yaml",
        "--model-dir", str(tmp_path / "bad"),
        *_sets([f"data.data_dir={avmnist_small}", "cross_modal.autoencoder_alignment=cosine"]),
    ]) == 2
    assert "autoencoder_alignment" in capsys.readouterr().err
