"""`serving.batching.Batcher` on a real export's signatures, in-process: merged calls give each
request its own answer, and a request the model's decoder refuses fails alone."""

import concurrent.futures
import threading

import numpy as np
import pytest

from serving.batching import Batcher
from serving.batching import run_signature
from serving.errors import InvalidArgumentError
from serving.model_repository import ModelVersion
from serving.validation import validate


pytestmark = pytest.mark.large  # a trained and exported model


@pytest.fixture(scope="module")
def version(real_export):
    return ModelVersion(real_export.name, 1, str(real_export.version_dir))


def _rows(arrays, i):
    return {k: v[i:i + 1] for k, v in arrays.items()}


def test_a_full_batch_is_one_call_and_a_bad_request_fails_alone(version, real_export):
    signature = version.signature("serve_raw")
    raw = real_export.raw
    rng = np.random.default_rng(0)
    requests = [_rows(raw, i) for i in range(4)]
    bad = dict(_rows(raw, 0), audio_bytes=np.array([rng.bytes(50)], dtype=object))
    requests.insert(2, bad)
    batcher = Batcher(max_batch_size=5, timeout_micros=10_000_000)  # waits for a full batch
    try:
        futures = [batcher.submit("m", signature, r, 1) for r in requests]
        results = [f.exception(timeout=60) or f.result() for f in futures]
    finally:
        batcher.stop()
    error = results.pop(2)
    assert isinstance(error, InvalidArgumentError)
    assert "'audio_bytes'" in str(error) and "example 0" in str(error)
    alone = run_signature(signature, {k: v for k, v in raw.items()}, 4)
    for i, result in enumerate(results):
        np.testing.assert_allclose(result["probabilities"], alone["probabilities"][i:i + 1],
                                   atol=1e-6)
        assert result["class_id"][0] == alone["class_id"][i]
    stats = batcher.stats()
    assert stats["batches"] == 1 and stats["merged_batches"] == 1
    assert stats["max_requests_in_batch"] == 5 and stats["split_after_failure"] == 1


def test_concurrent_requests_get_the_answers_they_get_alone(version, real_export):
    signature = version.signature("serving_default")
    x = real_export.inputs
    rng = np.random.default_rng(1)
    requests = []
    for i in range(24):
        row = _rows(x, i % 4)
        row = dict(row, audio=(row["audio"] * rng.uniform(0.5, 1)).astype(np.float32))
        if i % 4 == 3:
            row = {k: v for k, v in row.items() if not k.startswith("image")}
        if i % 6 == 0:  # batch-2 requests too
            row = {k: np.concatenate([v, v]) for k, v in row.items()}
        requests.append(validate(signature, row))
    alone = [run_signature(signature, arrays, batch) for arrays, batch in requests]
    batcher = Batcher(max_batch_size=8, timeout_micros=20_000)
    barrier = threading.Barrier(len(requests))

    def send(request):
        barrier.wait()
        return batcher.submit("m", signature, *request).result(timeout=60)

    try:
        with concurrent.futures.ThreadPoolExecutor(len(requests)) as pool:
            together = list(pool.map(send, requests))
    finally:
        batcher.stop()
    for got, expected in zip(together, alone):
        assert got["probabilities"].shape == expected["probabilities"].shape
        np.testing.assert_allclose(got["probabilities"], expected["probabilities"], atol=1e-6)
        np.testing.assert_array_equal(got["class_id"], expected["class_id"])
    stats = batcher.stats()
    assert stats["requests"] == len(requests) and stats["merged_batches"] >= 1
    assert stats["max_examples_in_batch"] <= 8
