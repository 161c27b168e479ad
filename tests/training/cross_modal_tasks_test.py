"""The invariance and shared-autoencoder tasks through the one driver, on the session's small
real AV-MNIST slice: tiny encoders, one to three epochs, every report field checked for shape
and range (the figures themselves are the README's, measured on the full configs), the model
directory's files loaded back, and an invariance run killed with SIGKILL after its first epoch
resumed to the configured epochs with both optimizers and the lambda schedule where they were.
"""

import csv

import keras
import pytest

from mmkeras.configs import load_config
from mmkeras.layers.gradient_reversal import dann_lambda
from mmkeras.models import AdversarialInvarianceTrainer
from mmkeras.models.modality_invariant_classifier import class_key
from mmkeras.models.modality_invariant_classifier import modality_key
from tests.training import cluster_utils as cu
from training import train as train_cli
from training import train_invariance
from training import train_shared_autoencoder
from training.callbacks import AtomicBackupAndRestore
from training.tasks.invariance import format_table
from training.trainer import train

pytestmark = pytest.mark.large

INVARIANCE = "training/configs/avmnist/modality_invariance.yaml"
AUTOENCODER = "training/configs/avmnist/shared_autoencoder.yaml"
TINY = [
    "model.image_encoder.filters=[4]", "model.audio_encoder.filters=[4]",
    "data.batch_size=16", "trainer.verbose=0",
]
TINY_INVARIANCE = TINY + [
    "cross_modal.embedding_dim=6", "cross_modal.discriminator_units=[8]",
    "cross_modal.probe_mlp_epochs=2",
]


def _history(model_dir):
    with open(model_dir / "history.csv") as f:
        return list(csv.DictReader(f))


def test_invariance_task_with_every_option(avmnist_small, tmp_path, capsys):
    model_dir = tmp_path / "invariance"
    config = load_config(INVARIANCE, TINY_INVARIANCE + [
        f"data.data_dir={avmnist_small}", "trainer.epochs=2",
        "cross_modal.adversary=inverted", "cross_modal.reversal_scale=1.0",
        "cross_modal.discriminator_gradient_penalty=1.0",
        "cross_modal.moment_matching=paired", "cross_modal.moment_weight=0.5",
        "cross_modal.discriminator_steps=2", "cross_modal.adversary_warmup_epochs=0.5",
        # 'audio' is the audio_encoder inside the trainer's network, found at any depth.
        "trainer.lr_multipliers={audio: 2.0}",
    ])
    report = train(config, model_dir)
    assert report["task"] == "invariance" and report["run"] == "inverted_paired"
    run = report["inverted_paired"]
    assert run["adversary"] == "inverted" and run["moment_matching"] == "paired"
    assert run["final_lambda"] == pytest.approx(1.0, abs=0.05)
    assert run["discriminator_updates"] == 2 * run["encoder_updates"] > 0
    assert set(run["task_accuracy"]) == {"audio", "image"}
    assert set(run["probe_modality_accuracy"]) == {"linear", "mlp", "mlp_on_predictions"}
    for value in [*run["task_accuracy"].values(), *run["probe_modality_accuracy"].values(),
                  run["discriminator_accuracy"]]:
        assert 0.0 <= value <= 1.0
    # The driver's files: one history row per epoch with the validation task loss (the
    # monitor) and the schedule's lambda; the best checkpoint by it; the model of record
    # (the network) and the trainer.
    rows = _history(model_dir)
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert {"val_task_loss", "val_discriminator_acc", "reversal_scale"} <= set(rows[0])
    assert report["best_validation"]["monitor"] == "val_task_loss"
    network = keras.saving.load_model(model_dir / "model.keras")
    assert {class_key("image"), modality_key("audio")} <= set(network.output_names)
    assert network.count_params() == report["parameters"]
    trainer = keras.saving.load_model(model_dir / "trainer.keras")
    assert isinstance(trainer, AdversarialInvarianceTrainer)
    assert int(trainer.discriminator_optimizer.iterations.numpy()) == run["discriminator_updates"]
    assert trainer.optimizer.lr_multipliers == {"audio": 2.0}
    assert isinstance(keras.saving.load_model(model_dir / "checkpoints" / "best.keras"),
                      AdversarialInvarianceTrainer)
    assert "| inverted_paired | inverted |" in format_table(report)
    out = capsys.readouterr().out  # the driver's summary: its header, then the task's lines
    assert "[train] avmnist_modality_invariance (invariance): 2 epochs" in out
    assert "[train] inverted_paired: task accuracy" in out

    # --evaluate-only reloads the directory's trainer and reproduces the test figures.
    again = train(config, model_dir, evaluate_only=True)
    assert again["inverted_paired"]["task_accuracy"] == run["task_accuracy"]
    assert again["inverted_paired"]["encoder_updates"] == run["encoder_updates"]


def test_invariance_baseline_is_lambda_zero(avmnist_small, tmp_path):
    # What the old script trained alongside: the same recipe with lambda 0 and no schedule.
    # Through the old entry point, which ignores its --no-baseline flag.
    model_dir = tmp_path / "baseline"
    assert train_invariance.main([
        "--config", INVARIANCE, "--model-dir", str(model_dir), "--no-baseline",
        *cu.sets(TINY_INVARIANCE + [f"data.data_dir={avmnist_small}", "trainer.epochs=1",
                                    "cross_modal.reversal_scale=0",
                                    "cross_modal.probe_mlp_epochs=0"]),
    ]) == 0
    report = cu.report(model_dir)
    base = report["baseline"]
    assert report["run"] == "baseline"
    assert base["final_lambda"] == 0.0 and base["adversary"] is None and not base["schedule"]
    assert set(base["probe_modality_accuracy"]) == {"linear"}
    assert "reversal_scale" not in _history(model_dir)[0]


def test_shared_autoencoder_task_subsets_and_alignment(avmnist_small, tmp_path, capsys):
    model_dir = tmp_path / "shared_ae"
    assert train_cli.main([
        "--config", AUTOENCODER, "--model-dir", str(model_dir),
        *cu.sets(TINY + [f"data.data_dir={avmnist_small}", "trainer.epochs=2",
                         "cross_modal.code_dim=8", "cross_modal.autoencoder_normalize_batches=2"]),
    ]) == 0
    report = cu.report(model_dir)
    assert report["task"] == "shared_autoencoder"
    assert set(report["conditions"]) == {"both", "image_only", "audio_only"}
    for condition in report["conditions"].values():
        for mse in condition["reconstruction_mse"].values():
            assert set(mse) == {"ours", "mean", "class_mean"}
            assert all(0 < v < 10 for v in mse.values())
        assert 0.0 <= condition["probe_accuracy"] <= 1.0
    assert set(report["probe_transfer"]) == {"image_only_to_audio_only",
                                             "audio_only_to_image_only"}
    assert report["config"]["cross_modal"]["autoencoder_alignment"] == "l2"
    assert [int(r["epoch"]) for r in _history(model_dir)] == [0, 1]
    assert report["best_validation"]["monitor"] == "val_loss"
    # The model of record is the autoencoder itself (presence flags choose the inputs); the
    # best checkpoint is the subset training model that was fit.
    autoencoder = keras.saving.load_model(model_dir / "model.keras")
    assert {"image_reconstruction", "audio_reconstruction"} <= set(autoencoder.output_names)
    assert "code_alignment" in keras.saving.load_model(
        model_dir / "checkpoints" / "best.keras").output_names
    # An unknown alignment is refused, naming the key, before any training (old entry point).
    capsys.readouterr()
    assert train_shared_autoencoder.main.__module__ == "training.train"
    assert train_shared_autoencoder.main([
        "--config", AUTOENCODER, "--model-dir", str(tmp_path / "bad"),
        *cu.sets([f"data.data_dir={avmnist_small}", "cross_modal.autoencoder_alignment=cosine"]),
    ]) == 2
    assert "autoencoder_alignment" in capsys.readouterr().err


def test_invariance_resumes_after_sigkill(avmnist_small, tmp_path):
    epochs, steps, k = 3, 4, 2  # 4 steps: the 140 training pairs last two epochs per run
    model_dir = tmp_path / "run"
    overrides = TINY_INVARIANCE + [
        f"data.data_dir={avmnist_small}", f"trainer.epochs={epochs}",
        f"trainer.steps_per_epoch={steps}", f"cross_modal.discriminator_steps={k}",
        "cross_modal.adversary_warmup_epochs=1", "cross_modal.probe_mlp_epochs=0",
    ]
    command = cu.train_command(INVARIANCE, model_dir, overrides)
    first = cu.spawn(command, tmp_path / "first.log")
    saved = lambda: AtomicBackupAndRestore.saved_epoch(model_dir / "backup")  # noqa: E731
    cu.wait_for(lambda: saved() >= 1, [first], what="the first backup")
    cu.kill(first)
    killed_after = saved()
    assert first.returncode == -9 and killed_after < epochs
    assert not (model_dir / "report.json").exists()

    second = cu.spawn(command, tmp_path / "second.log")
    cu.wait_all([second])
    report = cu.report(model_dir)
    assert cu.history_epochs(model_dir) == list(range(epochs))
    assert report["epochs"] == epochs and report["runs"] == 2
    assert report["epochs_this_run"] == epochs - killed_after
    assert f"resumed from {model_dir / 'backup'}" in second.log_path.read_text()
    run = report["reversal"]
    # Both optimizers' step counts came back from the backup: every step is counted once.
    assert run["encoder_updates"] == epochs * steps
    assert run["discriminator_updates"] == k * epochs * steps
    # The schedule continued from the restored step: lambda of the last step, not of step
    # (epochs - killed_after) * steps - 1 of a restarted ramp.
    total, warmup = epochs * steps, steps
    expected = 3.0 * dann_lambda((total - 1 - warmup) / (total - warmup))
    assert run["final_lambda"] == pytest.approx(expected, rel=1e-5)
    assert float(_history(model_dir)[-1]["reversal_scale"]) == pytest.approx(expected, rel=1e-5)
