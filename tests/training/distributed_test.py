"""Distributed training on a small real AV-MNIST slice, in subprocesses.

- MirroredStrategy over 2 logical CPU devices trains every model family (early, late,
  unimodal) with `fit`, also under mixed precision; XLA on one device; the learning rate scales
  with the replicas when asked.
- MultiWorkerMirroredStrategy: 2 worker processes on loopback train with the custom loop; both
  end with the same weights, equal to a single-worker run on the same global batches.
"""

import json
import os

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.training import cluster_utils as cu

pytestmark = pytest.mark.large


def _results(log_text):
    return [json.loads(line[len("RESULT "):]) for line in log_text.splitlines()
            if line.startswith("RESULT ")]


@pytest.fixture(scope="module")
def family_runs(avmnist_small, tmp_path_factory):
    """One process (2 logical CPUs) trains one short epoch of each family / option."""
    root = tmp_path_factory.mktemp("families")
    common = cu.TINY + ["trainer.epochs=1", "trainer.steps_per_epoch=2", "runtime.cpu_replicas=2",
                        f"data.data_dir={avmnist_small}"]
    runs = {
        "early": (cu.EARLY, ["trainer.scale_lr_with_replicas=true"]),
        "late_bfloat16": (cu.LATE, ["runtime.mixed_precision=mixed_bfloat16"]),
        "audio_float16": (cu.AUDIO_ONLY, ["runtime.mixed_precision=mixed_float16"]),
        # XLA cannot span logical CPU devices (the trainer turns it off there): one device.
        "image_xla": (cu.IMAGE_ONLY, ["runtime.jit_compile=true", "runtime.distribution=default"]),
    }
    spec = [{"config": config, "overrides": common + extra, "model_dir": str(root / name)}
            for name, (config, extra) in runs.items()]
    (root / "spec.json").write_text(json.dumps(spec))
    process = cu.spawn(["-m", "tests.training.train_driver", "runs", str(root / "spec.json")],
                       root / "driver.log")
    cu.wait_all([process], timeout=400)
    results = _results(process.log_path.read_text())
    assert len(results) == len(runs), cu.tail(process)
    return {name: result for name, result in zip(runs, results)}


@pytest.mark.parametrize("name", ["early", "late_bfloat16", "audio_float16"])
def test_every_family_trains_on_two_mirrored_replicas(family_runs, name):
    result = family_runs[name]
    assert result["strategy"] == "MirroredStrategy" and result["replicas"] == 2
    assert result["per_replica_batch_size"] == 8  # global batch 16 over 2 replicas
    assert result["epochs"] == 1
    assert 0.0 <= result["test_accuracy"] <= 1.0 and np.isfinite(result["test_loss"])
    assert np.allclose(result["output_sums"], 1.0, atol=1e-5)


@pytest.mark.parametrize("name,policy", [("late_bfloat16", "mixed_bfloat16"),
                                         ("audio_float16", "mixed_float16")])
def test_mixed_precision_keeps_probabilities_float32(family_runs, name, policy):
    result = family_runs[name]
    assert result["policy_during_training"] == policy
    assert policy in result["saved_layer_policies"]  # the model really ran in mixed precision
    assert result["output_dtype"] == "<dtype: 'float32'>"
    assert result["softmax_dtypes"] and set(result["softmax_dtypes"].values()) == {"float32"}


def test_learning_rate_scales_with_replicas(family_runs):
    assert family_runs["early"]["optimizer_learning_rate"] == pytest.approx(2e-3)
    assert family_runs["audio_float16"]["optimizer_learning_rate"] == pytest.approx(1e-3)
    report = cu.report(family_runs["early"]["model_dir"])
    assert report["learning_rate"] == pytest.approx(2e-3)


def test_jit_compile_run(family_runs):
    result = family_runs["image_xla"]
    assert result["replicas"] == 1 and result["epochs"] == 1
    assert cu.report(result["model_dir"])["jit_compile"] is True


def _weights(path):
    with np.load(path) as f:
        return [f[k] for k in sorted(f.files, key=lambda k: int(k.split("_")[1]))]


def test_two_workers_match_a_single_worker(avmnist_small, tmp_path):
    # Image-only: BatchNormalization (in the audio encoder) normalises each replica's own
    # batch, so only models without it give the same numbers for any split of a batch.
    overrides = cu.TINY + cu.EXACT + [
        "trainer.epochs=2", "trainer.steps_per_epoch=3", "runtime.distribution=multi_worker",
        "runtime.deterministic=true",
        f"data.data_dir={avmnist_small}",
    ]
    ports = cu.free_ports(2)

    def tf_config(i):
        return json.dumps({"cluster": {"worker": [f"localhost:{p}" for p in ports]},
                           "task": {"type": "worker", "index": i}})

    procs = [
        cu.spawn(["-m", "tests.training.train_driver", "weights", cu.IMAGE_ONLY,
                  str(tmp_path / "multi"), str(tmp_path / f"worker{i}.npz"), json.dumps(overrides)],
                 tmp_path / f"worker{i}.log", {"TF_CONFIG": tf_config(i)})
        for i in range(2)
    ]
    # The reference: the same loop and strategy in one process (no cluster), batches of 16.
    procs.append(
        cu.spawn(["-m", "tests.training.train_driver", "weights", cu.IMAGE_ONLY,
                  str(tmp_path / "single"), str(tmp_path / "single.npz"), json.dumps(overrides)],
                 tmp_path / "single.log", {"TF_CONFIG": None})
    )
    cu.wait_all(procs, timeout=400)

    w0, w1, single = (_weights(tmp_path / f"{n}.npz") for n in ("worker0", "worker1", "single"))
    assert len(w0) == len(w1) == len(single) > 0
    for a, b in zip(w0, w1):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(w0, single):
        np.testing.assert_allclose(a, b, atol=1e-5)

    multi = cu.report(tmp_path / "multi")
    assert multi["strategy"] == "MultiWorkerMirroredStrategy"
    assert multi["workers"] == 2 and multi["replicas"] == 2 and multi["per_replica_batch_size"] == 8
    assert multi["epochs"] == 2
    assert cu.report(tmp_path / "single")["replicas"] == 1
    assert cu.history_epochs(tmp_path / "multi") == [0, 1]
    for name in ["model.keras", "checkpoints/best.keras", "config.yaml", "learning_curves.png"]:
        assert (tmp_path / "multi" / name).is_file(), name
    assert (tmp_path / "multi" / "backup" / "checkpoint").is_file()

    # Same per-epoch metrics in both runs, and TensorBoard scalars written by the chief.
    import csv

    rows = {n: list(csv.DictReader(open(tmp_path / n / "history.csv"))) for n in ("multi", "single")}
    for a, b in zip(rows["multi"], rows["single"]):
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert float(a[key]) == pytest.approx(float(b[key]), abs=1e-5), key
    acc = EventAccumulator(str(tmp_path / "multi" / "logs" / "validation"),
                           size_guidance={"tensors": 0})
    acc.Reload()
    assert len(acc.Tensors("epoch_accuracy")) == 2 and len(acc.Tensors("epoch_loss")) == 2
    assert os.listdir(tmp_path / "multi" / "logs" / "train")


@pytest.mark.large
def test_two_workers_train_a_dual_encoder_with_negatives_from_both(avmnist_small, tmp_path):
    """`task: retrieval` under the custom loop on a 2-worker cluster: the CLIP loss of each
    replica's rows is computed against the embeddings gathered from both workers (16 rows for
    a global batch of 16, 8 per worker), both workers end with the same weights, and the
    chief writes the retrieval report."""
    overrides = [
        "trainer.verbose=0", "data.batch_size=16", "model.image_encoder.filters=[8]",
        "model.audio_encoder.filters=[8]", "model.image_encoder.embedding_dim=16",
        "model.audio_encoder.embedding_dim=16", "cross_modal.embedding_dim=8",
        "cross_modal.eval_cca_train_examples=120", "trainer.epochs=2",
        "trainer.steps_per_epoch=3", "runtime.distribution=multi_worker",
        f"data.data_dir={avmnist_small}",
    ]
    ports = cu.free_ports(2)

    def tf_config(i):
        return json.dumps({"cluster": {"worker": [f"localhost:{p}" for p in ports]},
                           "task": {"type": "worker", "index": i}})

    config = "training/configs/avmnist/dual_encoder.yaml"
    procs = [
        cu.spawn(["-m", "tests.training.train_driver", "weights", config,
                  str(tmp_path / "multi"), str(tmp_path / f"worker{i}.npz"), json.dumps(overrides)],
                 tmp_path / f"worker{i}.log", {"TF_CONFIG": tf_config(i)})
        for i in range(2)
    ]
    cu.wait_all(procs, timeout=400)
    w0, w1 = (_weights(tmp_path / f"worker{i}.npz") for i in range(2))
    assert len(w0) == len(w1) > 0
    for a, b in zip(w0, w1):
        np.testing.assert_array_equal(a, b)
    report = cu.report(tmp_path / "multi")
    assert report["task"] == "retrieval" and report["strategy"] == "MultiWorkerMirroredStrategy"
    assert report["workers"] == 2 and report["per_replica_batch_size"] == 8
    assert {"image_to_audio", "audio_to_image"} <= set(report["retrieval"])
    import csv

    rows = list(csv.DictReader(open(tmp_path / "multi" / "history.csv")))
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    for row in rows:  # every query met the rows of both workers
        assert float(row["pair_batch"]) == pytest.approx(16.0)
        assert float(row["val_pair_batch"]) > 8.0
        assert np.isfinite(float(row["loss"])) and np.isfinite(float(row["val_loss"]))


def test_cli_worker_flags_become_tf_config():
    from training.train import cluster_env

    tf_config = json.loads(cluster_env("10.0.0.1:12345, 10.0.0.2:12345", 1))
    assert tf_config == {"cluster": {"worker": ["10.0.0.1:12345", "10.0.0.2:12345"]},
                         "task": {"type": "worker", "index": 1}}
    for workers, index in [("h:1,h:2", 2), ("h:1", None), ("", 0)]:
        with pytest.raises(ValueError):
            cluster_env(workers, index)


def test_worker_whose_peer_never_starts_names_it_and_exits(avmnist_small, tmp_path):
    ports = cu.free_ports(2)
    workers = ",".join(f"localhost:{p}" for p in ports)
    overrides = cu.TINY + ["runtime.worker_timeout_s=3", f"data.data_dir={avmnist_small}"]
    process = cu.spawn(cu.train_command(cu.EARLY, tmp_path / "run", overrides,
                                        "--workers", workers, "--worker-index", "0"),
                       tmp_path / "worker0.log")  # worker 1 is never started
    try:
        process.wait(timeout=180)
    finally:
        cu.kill(process)
    log = process.log_path.read_text()
    assert process.returncode == 2, log
    assert f"could not reach worker 1 (localhost:{ports[1]}) within 3 s" in log, log
    assert "runtime.worker_timeout_s" in log and "Traceback" not in log
    assert not (tmp_path / "run").exists()  # the chief stopped before writing anything


def test_peer_wait_returns_once_every_peer_listens(monkeypatch):
    import socket

    from training import runtime

    ports = cu.free_ports(2)
    monkeypatch.setenv("TF_CONFIG", json.dumps({
        "cluster": {"worker": [f"localhost:{p}" for p in ports]},
        "task": {"type": "worker", "index": 0}}))
    peer = socket.create_server(("localhost", ports[1]))
    try:
        runtime.wait_for_peers(timeout_s=5)  # returns at once: worker 1 listens
    finally:
        peer.close()
    with pytest.raises(runtime.PeersUnreachableError, match=f"worker 1 \\(localhost:{ports[1]}\\)"):
        runtime.wait_for_peers(timeout_s=0.5)
