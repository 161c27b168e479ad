"""Fault tolerance and reproducibility on a small real AV-MNIST slice.

A training process killed with SIGKILL after its first epoch and started again with the same
command resumes from `DIR/backup` and ends with exactly the configured epochs in
`history.csv`, for `fit` (MirroredStrategy) and for the 2-worker custom loop
(MultiWorkerMirroredStrategy, one worker killed, both restarted). Two seeded runs agree.
"""

import csv
import re

import pytest

from tests.training import cluster_utils as cu

EPOCHS = 3


def _backup_epoch(model_dir):
    from training.callbacks import AtomicBackupAndRestore

    return AtomicBackupAndRestore.saved_epoch(model_dir / "backup")


def _checkpoint_epoch(model_dir):
    try:
        text = (model_dir / "backup" / "checkpoint").read_text()
    except FileNotFoundError:
        return 0
    match = re.search(r'^model_checkpoint_path: "ckpt-(\d+)"', text, re.M)
    return int(match.group(1)) if match else 0


def _assert_complete(model_dir, killed_after, logs):
    report = cu.report(model_dir)
    assert cu.history_epochs(model_dir) == list(range(EPOCHS))
    assert report["epochs"] == EPOCHS
    # The restart trained only the epochs after the last backup, and says so.
    assert report["epochs_this_run"] == EPOCHS - killed_after
    for log in logs:
        assert f"resumed from {model_dir / 'backup'}" in log
        assert f"after epoch {killed_after}\n" in log
    # The wall time covers both runs: the first one's time up to its last completed epoch.
    assert report["runs"] == 2
    first_run = report["wall_seconds"] - report["wall_seconds_this_run"]
    assert first_run > 0.5 and report["wall_seconds_this_run"] > 0
    import keras

    import mmkeras.layers  # noqa: F401  (registers the fusion layers for loading)

    for name in ("model.keras", "checkpoints/best.keras"):
        model = keras.saving.load_model(model_dir / name)
        assert model.count_params() == report["parameters"]
    assert not list(model_dir.rglob(".tmp-*"))


def _kill_after_first_backup_and_resume(command, model_dir, tmp_path):
    """Runs `command`, SIGKILLs it once the first epoch is backed up, runs it again to the end
    and checks the resumed run (`_assert_complete`)."""
    first = cu.spawn(command, tmp_path / "first.log")
    cu.wait_for(lambda: _backup_epoch(model_dir) >= 1, [first], what="the first backup")
    cu.kill(first)
    killed_after = _backup_epoch(model_dir)
    assert first.returncode == -9 and killed_after < EPOCHS
    assert not (model_dir / "report.json").exists()

    second = cu.spawn(command, tmp_path / "second.log")
    cu.wait_all([second])
    _assert_complete(model_dir, killed_after, [second.log_path.read_text()])


@pytest.mark.large
def test_fit_resumes_after_sigkill(avmnist_small, tmp_path):
    model_dir = tmp_path / "run"
    overrides = cu.TINY + [f"trainer.epochs={EPOCHS}", "trainer.steps_per_epoch=6",
                           "runtime.cpu_replicas=2", f"data.data_dir={avmnist_small}"]
    command = cu.train_command(cu.EARLY, model_dir, overrides)
    _kill_after_first_backup_and_resume(command, model_dir, tmp_path)


@pytest.mark.large
def test_retrieval_fit_resumes_after_sigkill(avmnist_small, tmp_path):
    """The dual encoder (`task: retrieval`, a model with its own `train_step`) resumes through
    the same driver: killed after a backup, restarted, it ends with exactly EPOCHS epochs."""
    model_dir = tmp_path / "dual"
    overrides = [
        "trainer.verbose=0", "data.batch_size=32", "model.image_encoder.filters=[8]",
        "model.audio_encoder.filters=[8]", "model.image_encoder.embedding_dim=16",
        "model.audio_encoder.embedding_dim=16", "cross_modal.embedding_dim=8",
        "cross_modal.eval_cca_train_examples=120", f"trainer.epochs={EPOCHS}",
        "trainer.steps_per_epoch=6", f"data.data_dir={avmnist_small}",
    ]
    command = cu.train_command("training/configs/avmnist/dual_encoder.yaml", model_dir, overrides)
    _kill_after_first_backup_and_resume(command, model_dir, tmp_path)
    report = cu.report(model_dir)
    assert report["task"] == "retrieval" and "image_to_audio" in report["retrieval"]
    assert report["best_validation"]["monitor"] == "val_loss"


@pytest.mark.large
def test_multi_worker_resumes_after_a_worker_is_killed(avmnist_small, tmp_path):
    model_dir = tmp_path / "run"
    overrides = cu.TINY + [f"trainer.epochs={EPOCHS}", "trainer.steps_per_epoch=6",
                           f"data.data_dir={avmnist_small}"]
    procs, ports = cu.spawn_workers(cu.EARLY, model_dir, overrides, tmp_path, name="first")
    cu.wait_for(lambda: _checkpoint_epoch(model_dir) >= 1, procs, what="the first checkpoint")
    cu.kill(procs[1])
    killed_after = _checkpoint_epoch(model_dir)
    # The chief cannot go on without its peer: a cluster manager restarts the whole job.
    cu.kill(procs[0])
    assert killed_after < EPOCHS and not (model_dir / "report.json").exists()

    procs, _ = cu.spawn_workers(cu.EARLY, model_dir, overrides, tmp_path, ports=ports,
                                name="second")
    cu.wait_all(procs)
    _assert_complete(model_dir, killed_after, [p.log_path.read_text() for p in procs])


def test_history_keeps_one_row_per_epoch(tmp_path):
    """A kill after the CSV row but before the backup repeats an epoch on restart."""
    from training import report

    path = tmp_path / "history.csv"
    path.write_text(
        "epoch,accuracy,loss,val_accuracy,val_loss\n"
        "0,0.1,2.3,0.1,2.3\n"
        "1,0.2,2.2,0.2,2.2\n"
        "1,0.3,2.1,0.3,2.1\n"  # epoch 1 again, after a restart
        "2,0.4,2.0,0.4,2"  # torn by a kill
    )
    history = report.read_history(path)
    assert history["epoch"] == [0.0, 1.0, 2.0]
    assert history["accuracy"] == [0.1, 0.3, 0.4]

    path.write_text(path.read_text()[:-4])  # a torn last line without its last field
    report.truncate_history(path, epochs_done=1)
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["0"]
    assert path.read_text().endswith("\n")


def test_backup_epoch_of_missing_or_torn_state(tmp_path):
    from training.callbacks import AtomicBackupAndRestore

    assert AtomicBackupAndRestore.saved_epoch(tmp_path / "none") == 0
    (tmp_path / "training_metadata.json").write_text('{"epoch": 2, "wei')
    assert AtomicBackupAndRestore.saved_epoch(tmp_path) == 0
    (tmp_path / "training_metadata.json").write_text('{"epoch": 2, "weights": "x.weights.h5"}')
    assert AtomicBackupAndRestore.saved_epoch(tmp_path) == 2


@pytest.mark.large
def test_seeded_single_device_runs_are_identical(avmnist_small, tmp_path):
    # Without runtime.deterministic, runs that compete for the cores differed in the 4th
    # significant digit of the loss after 3 steps (some CPU kernels sum in thread order).
    overrides = cu.TINY + ["trainer.epochs=1", "trainer.steps_per_epoch=3", "trainer.seed=7",
                           "runtime.cpu_replicas=1", "runtime.deterministic=true",
                           f"data.data_dir={avmnist_small}"]
    procs = [cu.spawn(cu.train_command(cu.EARLY, tmp_path / f"run{i}", overrides),
                      tmp_path / f"run{i}.log") for i in range(2)]
    cu.wait_all(procs)
    histories = [(tmp_path / f"run{i}" / "history.csv").read_text() for i in range(2)]
    assert histories[0] == histories[1]
    tests = [cu.report(tmp_path / f"run{i}")["test"] for i in range(2)]
    assert tests[0] == tests[1]
