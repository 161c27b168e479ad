"""Calling a signature, alone or merged with concurrent requests (server-side batching).

`run_signature` calls a signature on validated numpy inputs. When TensorFlow refuses them (an
undecodable PNG or WAV in `serve_raw`, a corrupt `tf.Example` in `serve_examples`) the error
becomes an `InvalidArgumentError` naming the input and the first failing example, found by
calling the signature on each example alone; TensorFlow's own text is cleaned of the raw bytes
it quotes (which otherwise surface as a `UnicodeDecodeError`).

`Batcher` merges concurrent requests to the same model version, signature and per-example
input shapes into one call, as TF Serving's `--enable_batching` does: a request waits until
the batch holds `max_batch_size` examples or `timeout_micros` have passed since the first
request of the batch arrived, and while one merged call runs the next batch fills up. Then,
while other requests are still being decoded (the front ends mark them with `arrival()`), the
batch waits for them, at most 2 ms: a lone client never waits, and under load the requests
whose JSON is being parsed join the call instead of starting the next one. Results
are split back per request. Requests are validated before they are queued, so a bad request
is refused on its own; if a merged call still fails (bytes that only the model's decoder
rejects), each request of the batch is run alone, so only the bad one gets the error.
"""

import concurrent.futures
import contextlib
import dataclasses
import logging
import re
import threading
import time

import numpy as np
import tensorflow as tf

from serving.errors import InvalidArgumentError
from serving.errors import ServingError

logger = logging.getLogger(__name__)

DEFAULT_MAX_BATCH_SIZE = 64
DEFAULT_TIMEOUT_MICROS = 0
_IDLE_SECONDS = 30.0
_ARRIVAL_WAIT_SECONDS = 0.002  # longest a batch waits for requests still being decoded
_ARRIVAL_POLL_SECONDS = 0.0002  # a queue's thread exits after this long without requests
_CLIENT_ERRORS = (tf.errors.InvalidArgumentError, tf.errors.DataLossError,
                  tf.errors.OutOfRangeError, UnicodeDecodeError)
_MESSAGE_CHARS = 300
# Words in a failing node's name -> the modality whose bytes it decodes.
_NODE_MODALITIES = {"wav": "audio", "audio": "audio", "image": "image", "png": "image",
                    "jpeg": "image", "gif": "image", "bmp": "image", "parseexample": "examples"}


def _tf_message(error):
    """The first informative line of a TensorFlow error, printable, and the failing node."""
    if isinstance(error, UnicodeDecodeError):  # TF could not decode its own message
        text = bytes(error.object).decode("utf-8", "replace")
    else:
        text = getattr(error, "message", None) or str(error)
    node = re.search(r"(?:\{\{node |Detected at node )([^\s}\]]+)", text)
    text = re.sub(r"\{\{function_node [^}]*\}\}", "", text)
    text = re.sub(r"\[\[.*?\]\]|\[Op:[^\]]*\]", "", text, flags=re.S)
    lines = [line.strip() for line in text.splitlines()]
    skip = ("Graph execution error", "Detected at node", "<stack traces")
    lines = [line for line in lines if line and not line.startswith(skip)] or ["(no message)"]
    message = "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in lines[0])
    message = message.replace("\ufffd", "?")
    if len(message) > _MESSAGE_CHARS:
        message = message[:_MESSAGE_CHARS] + "..."
    return message, node.group(1) if node else ""


def _suspect_inputs(signature, node):
    """The inputs a failing node most likely decoded (string inputs, narrowed by the node name)."""
    strings = [k for k, s in sorted(signature.input_specs.items()) if s.dtype == tf.string]
    candidates = strings or sorted(signature.input_specs)
    lowered = node.lower()
    for word, modality in _NODE_MODALITIES.items():
        if word in lowered:
            named = [k for k in candidates if k == modality or k.startswith(modality + "_")]
            if not named and modality in ("image", "audio"):  # features named after columns
                named = [k for k in candidates if k.endswith("_bytes")]  # (front_bytes, ...)
            if named:
                return named
    return candidates


def _call(signature, arrays):
    tensors = {
        name: tf.convert_to_tensor(value, dtype=signature.input_specs[name].dtype)
        for name, value in arrays.items()
    }
    outputs = signature.function(**tensors)
    if not isinstance(outputs, dict):
        outputs = {"output_0": outputs}
    return {name: value.numpy() for name, value in outputs.items()}


def _rows(arrays, lo, hi):
    return {k: v[lo:hi] for k, v in arrays.items()}


def run_signature(signature, arrays, batch=None):
    """Calls the signature with validated numpy inputs; returns `{output: np.ndarray}`.

    Args:
        batch: the inputs' common leading dimension (None: no batch axis), used to find the
            failing example when TensorFlow refuses the inputs.

    Raises:
        InvalidArgumentError: the model refused the inputs; names the input and example.
    """
    try:
        return _call(signature, arrays)
    except _CLIENT_ERRORS as e:
        raise _locate(signature, arrays, batch, e) from None


def _locate(signature, arrays, batch, error):
    """The InvalidArgumentError for a refused call, naming the first failing example."""
    example = None
    if batch is not None and batch > 1:
        for i in range(batch):
            try:
                _call(signature, _rows(arrays, i, i + 1))
            except _CLIENT_ERRORS as e:
                example, error = i, e
                break
    elif batch == 1:
        example = 0
    message, node = _tf_message(error)
    inputs = _suspect_inputs(signature, node)
    where = f"example {example} of " if example is not None else ""
    names = ", ".join(f"'{k}'" for k in inputs)
    return InvalidArgumentError(
        f"signature '{signature.name}' could not use {where}input{'s' * (len(inputs) > 1)} "
        f"{names}: {message}"
    )


@dataclasses.dataclass
class _Task:
    arrays: dict
    batch: int
    future: concurrent.futures.Future
    enqueued: float


class _Queue:
    """The pending requests of one (model version, signature, input shapes) and its thread."""

    def __init__(self, batcher, key, signature):
        self.batcher = batcher
        self.key = key
        self.signature = signature
        self.tasks = []
        self.examples = 0
        self.condition = threading.Condition()
        self.thread = threading.Thread(target=self._loop, name="batcher", daemon=True)
        self.closed = False

    def put(self, task):
        with self.condition:
            if self.closed:
                return False
            self.tasks.append(task)
            self.examples += task.batch
            self.condition.notify()
            return True

    def _next_batch(self):
        """Waits for requests and returns the tasks of the next merged call (None: exit)."""
        limit, timeout = self.batcher.max_batch_size, self.batcher.timeout_seconds
        with self.condition:
            while not self.tasks:
                if self.batcher.stopped or not self.condition.wait(_IDLE_SECONDS):
                    if not self.tasks:
                        self.closed = True
                        return None
            deadline = self.tasks[0].enqueued + timeout
            while self.examples < limit and not self.batcher.stopped:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self.condition.wait(remaining)
            arrival_deadline = time.monotonic() + self.batcher.arrival_wait_seconds
            while self.examples < limit and self.batcher.arriving > 0 and not self.batcher.stopped:
                remaining = arrival_deadline - time.monotonic()
                if remaining <= 0:
                    break
                self.condition.wait(min(remaining, _ARRIVAL_POLL_SECONDS))
            taken, size = [], 0
            while self.tasks and (not taken or size + self.tasks[0].batch <= limit):
                task = self.tasks.pop(0)
                taken.append(task)
                size += task.batch
            self.examples -= size
            return taken

    def _loop(self):
        while True:
            tasks = self._next_batch()
            if tasks is None:
                self.batcher._forget(self.key, self)
                return
            try:
                self.batcher._run(self.signature, tasks)
            except BaseException as e:  # never leave a request waiting
                for task in tasks:
                    if not task.future.done():
                        task.future.set_exception(e)


class Batcher:
    """Merges concurrent requests into batched signature calls.

    Args:
        max_batch_size: most examples in one merged call (a larger request runs alone).
        timeout_micros: longest a request waits for others to join its batch; 0 merges only
            the requests that arrived while the previous call ran.

    Example:
    ```python
    batcher = Batcher(max_batch_size=64, timeout_micros=0)
    future = batcher.submit(("tiny", 1), signature, arrays, batch=1)
    outputs = future.result()        # {output_name: np.ndarray} of this request only
    batcher.stats()                  # {"batches": ..., "merged_batches": ..., ...}
    ```
    """

    def __init__(self, max_batch_size=DEFAULT_MAX_BATCH_SIZE,
                 timeout_micros=DEFAULT_TIMEOUT_MICROS):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        if timeout_micros < 0:
            raise ValueError(f"timeout_micros must be >= 0, got {timeout_micros}")
        self.max_batch_size = max_batch_size
        self.timeout_seconds = timeout_micros / 1e6
        self.stopped = False
        self.arriving = 0  # requests being decoded and validated (not yet submitted)
        self.arrival_wait_seconds = _ARRIVAL_WAIT_SECONDS
        self._queues = {}
        self._lock = threading.Lock()
        self._stats = {"requests": 0, "examples": 0, "batches": 0, "merged_batches": 0,
                       "max_requests_in_batch": 0, "max_examples_in_batch": 0,
                       "split_after_failure": 0}

    @staticmethod
    def batchable(signature, arrays, batch):
        """True when the request can be merged: every input has a leading batch dimension."""
        if batch is None:
            return False
        for name, spec in signature.input_specs.items():
            if spec.shape.rank in (None, 0) or spec.shape.as_list()[0] is not None:
                return False
            if arrays[name].ndim == 0 or arrays[name].shape[0] != batch:
                return False
        return True

    def submit(self, model_key, signature, arrays, batch):
        """Queues one validated, `batchable` request; returns a Future of its
        `{output: np.ndarray}`. `model_key` tells versions apart (e.g. `(name, version)`)."""
        if not self.batchable(signature, arrays, batch):
            raise ValueError(f"a request to signature '{signature.name}' without a common "
                             f"leading batch dimension cannot be batched")
        future = concurrent.futures.Future()
        shapes = tuple((k, v.shape[1:], v.dtype.str) for k, v in sorted(arrays.items()))
        key = (model_key, signature.name, id(signature), shapes)
        task = _Task(arrays, batch, future, time.monotonic())
        while True:
            with self._lock:
                queue = self._queues.get(key)
                if queue is None:
                    queue = self._queues[key] = _Queue(self, key, signature)
                    queue.thread.start()
            if queue.put(task):
                return future
            self._forget(key, queue)  # it was closing; make a new one

    @contextlib.contextmanager
    def arrival(self):
        """Marks a request as being decoded: batches wait (at most 2 ms) for such requests."""
        with self._lock:
            self.arriving += 1
        try:
            yield
        finally:
            with self._lock:
                self.arriving -= 1

    def _forget(self, key, queue):
        with self._lock:
            if self._queues.get(key) is queue:
                del self._queues[key]

    def _run(self, signature, tasks):
        size = sum(t.batch for t in tasks)
        with self._lock:
            s = self._stats
            s["requests"] += len(tasks)
            s["examples"] += size
            s["batches"] += 1
            s["merged_batches"] += len(tasks) > 1
            s["max_requests_in_batch"] = max(s["max_requests_in_batch"], len(tasks))
            s["max_examples_in_batch"] = max(s["max_examples_in_batch"], size)
        if len(tasks) == 1:
            self._run_alone(signature, tasks[0])
            return
        merged = {k: np.concatenate([t.arrays[k] for t in tasks]) for k in tasks[0].arrays}
        try:
            outputs = _call(signature, merged)
        except _CLIENT_ERRORS:
            outputs = None
        if outputs is None or any(v.ndim == 0 or v.shape[0] != size for v in outputs.values()):
            with self._lock:
                self._stats["split_after_failure"] += 1
            for task in tasks:  # only the bad request fails
                self._run_alone(signature, task)
            return
        start = 0
        for task in tasks:
            end = start + task.batch
            task.future.set_result({k: v[start:end] for k, v in outputs.items()})
            start = end

    @staticmethod
    def _run_alone(signature, task):
        try:
            task.future.set_result(run_signature(signature, task.arrays, task.batch))
        except ServingError as e:
            task.future.set_exception(e)

    def stats(self):
        """Counters since start: requests, examples, batches (merged calls: `merged_batches`)."""
        with self._lock:
            return dict(self._stats, max_batch_size=self.max_batch_size,
                        batch_timeout_micros=int(self.timeout_seconds * 1e6),
                        queues=len(self._queues))

    def stop(self):
        self.stopped = True
        with self._lock:
            queues = list(self._queues.values())
        for queue in queues:
            with queue.condition:
                queue.condition.notify_all()
