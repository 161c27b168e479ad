"""The predict path shared by the REST and gRPC front ends: look up, validate, run.

`Predictor.submit` finds the model version and signature, validates the decoded inputs
(`serving/validation.py`: names, dtypes, shapes, batch sizes, finite values, presence flags,
omitted modalities) and hands them to the `Batcher` (or, without batching, to a thread pool);
it returns a Future, so the asyncio REST front end can await it and the threaded gRPC front end
can block on it. Validation errors are raised by `submit` itself, before anything is queued.
"""

import concurrent.futures
import contextlib

from serving.batching import run_signature
from serving.validation import validate


class Predictor:
    """Runs predict requests against a `ModelRepository`.

    Args:
        repository: the loaded models.
        batcher: a `Batcher` merging concurrent requests, or None to run each request alone.
        allow_non_finite: accept NaN and Inf in float inputs (refused by default).
        workers: threads running unbatched calls for `submit`.
    """

    def __init__(self, repository, batcher=None, allow_non_finite=False, workers=8):
        self.repository = repository
        self.batcher = batcher
        self.allow_non_finite = allow_non_finite
        self._executor = concurrent.futures.ThreadPoolExecutor(
            workers, thread_name_prefix="predict")  # unbatched calls
        self._unbatched = 0

    def signature(self, model_name, version, signature_name):
        """`(ModelVersion, Signature)`; NotFoundError for unknown names and versions."""
        model_version = self.repository.get(model_name, version)
        return model_version, model_version.signature(signature_name)

    def submit(self, model_version, signature, arrays):
        """Validates `arrays` (raising InvalidArgumentError) and returns a Future of the outputs."""
        arrays, batch = validate(signature, arrays, self.allow_non_finite)
        batcher = self.batcher
        if batcher and not batcher.stopped and batcher.batchable(signature, arrays, batch):
            key = (model_version.model_name, model_version.version)
            return batcher.submit(key, signature, arrays, batch)
        self._unbatched += 1  # counted loosely (no lock): a monitoring figure
        return self._executor.submit(run_signature, signature, arrays, batch)

    def predict(self, model_version, signature, arrays):
        """`submit` and wait: `{output_name: np.ndarray}`."""
        return self.submit(model_version, signature, arrays).result()

    def arrival(self):
        """A context around decoding and submitting one request (lets batches wait for it)."""
        return self.batcher.arrival() if self.batcher else contextlib.nullcontext()

    def stats(self):
        if self.batcher is None:
            return {"enabled": False}
        return {"enabled": True, **self.batcher.stats(), "unbatched": self._unbatched}

    def stop(self):
        if self.batcher is not None:
            self.batcher.stop()
        self._executor.shutdown(wait=False, cancel_futures=True)
