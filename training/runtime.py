"""Distribution strategy, devices, precision and seeds from a `RuntimeConfig`.

Call `configure_devices` before TensorFlow runs its first op: logical CPU devices cannot be
created after the runtime has initialised.
"""

import json
import logging
import os
import socket
import time

import keras
import tensorflow as tf

from mmkeras.configs import ConfigError

log = logging.getLogger(__name__)


def configure_devices(runtime_config):
    """Splits the CPU into `cpu_replicas` logical devices when there is no GPU."""
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:
            pass
    n = runtime_config.cpu_replicas
    if gpus or n <= 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if current and len(current) == n:
        return
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(n)]
        )
    except RuntimeError as e:
        raise RuntimeError(
            f"Cannot split the CPU into {n} logical devices after TensorFlow has started "
            f"(currently {len(tf.config.list_logical_devices('CPU'))}); call "
            "configure_devices() first, in a fresh process."
        ) from e


def make_strategy(runtime_config):
    """MirroredStrategy over all GPUs, else over the logical CPU devices; MultiWorkerMirrored
    from `TF_CONFIG`; or the default strategy."""
    if runtime_config.distribution == "multi_worker":
        wait_for_peers(getattr(runtime_config, "worker_timeout_s", None))
        return make_multi_worker_strategy()
    configure_devices(runtime_config)
    if runtime_config.distribution == "default":
        return tf.distribute.get_strategy()
    if runtime_config.distribution != "mirrored":
        raise ValueError(
            f"runtime.distribution must be 'mirrored', 'multi_worker' or 'default', "
            f"got '{runtime_config.distribution}'."
        )
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        devices = [d.name for d in gpus]
    else:
        cpus = tf.config.list_logical_devices("CPU")
        devices = [d.name for d in cpus[: max(1, runtime_config.cpu_replicas)]]
        if len(devices) < runtime_config.cpu_replicas:
            raise RuntimeError(
                f"runtime.cpu_replicas={runtime_config.cpu_replicas} but only "
                f"{len(devices)} logical CPU devices exist."
            )
    cross_device_ops = None
    if not gpus:
        # NCCL is GPU-only; reduce on the host.
        cross_device_ops = tf.distribute.ReductionToOneDevice(reduce_to_device=devices[0])
    return tf.distribute.MirroredStrategy(devices=devices, cross_device_ops=cross_device_ops)


class PeersUnreachableError(ConfigError):
    """A multi-worker job whose workers could not all reach each other in time."""


def _cluster_from_tf_config():
    """`(this task's address, [(name, address) of every other task])` from `TF_CONFIG`, or
    None outside a cluster."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None
    spec = json.loads(raw)
    task = spec.get("task", {})
    own, others = None, []
    for job, addresses in spec.get("cluster", {}).items():
        for index, address in enumerate(addresses):
            if job == task.get("type") and index == task.get("index"):
                own = address
            else:
                others.append((f"{job} {index}", address))
    return own, others


def _split(address):
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def _reachable(address):
    try:
        with socket.create_connection(_split(address), timeout=1.0):
            return True
    except OSError:
        return False


def wait_for_peers(timeout_s, poll_s=0.5):
    """Waits until every other task of `TF_CONFIG` accepts connections on its port, at most
    `timeout_s` seconds (None: no limit), then returns; raises `PeersUnreachableError`
    naming the ones it could not reach.

    TensorFlow's own start-up (`MultiWorkerMirroredStrategy`) waits for missing peers without
    a limit, inside a C++ call that holds the GIL, so the wait happens here, before it. Meanwhile
    this worker listens on its own port, so that its peers, which check the same way, see it;
    the port is released just before TensorFlow's server takes it.
    """
    cluster = _cluster_from_tf_config()
    if cluster is None or cluster[0] is None or not cluster[1]:
        return
    own, others = cluster
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("", _split(own)[1]))
    except OSError as e:
        listener.close()
        raise PeersUnreachableError(f"cannot listen on this worker's address {own}: {e}") from None
    listener.listen(16)
    deadline = None if timeout_s is None else time.time() + float(timeout_s)
    missing = list(others)
    try:
        while True:
            missing = [(name, address) for name, address in missing if not _reachable(address)]
            if not missing:
                return
            if deadline is not None and time.time() >= deadline:
                raise PeersUnreachableError(
                    f"worker {own} could not reach "
                    + ", ".join(f"{name} ({address})" for name, address in missing)
                    + f" within {float(timeout_s):g} s (runtime.worker_timeout_s): start every "
                    "worker with the same --workers list, and check that these ports are "
                    "reachable from here."
                )
            time.sleep(poll_s)
    finally:
        listener.close()


def make_multi_worker_strategy():
    """MultiWorkerMirroredStrategy over the cluster in `TF_CONFIG` (one worker without it).

    Must be created before TensorFlow runs other ops. Collectives use NCCL on GPUs and the
    ring implementation (gRPC) on CPUs.
    """
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:
            pass
    implementation = (
        tf.distribute.experimental.CommunicationImplementation.NCCL
        if gpus
        else tf.distribute.experimental.CommunicationImplementation.RING
    )
    return tf.distribute.MultiWorkerMirroredStrategy(
        communication_options=tf.distribute.experimental.CommunicationOptions(
            implementation=implementation
        )
    )


def is_multi_worker(strategy):
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def strategy_name(strategy):
    """The public name of `strategy`'s class (MultiWorkerMirroredStrategy's is an alias)."""
    if is_multi_worker(strategy):
        return "MultiWorkerMirroredStrategy"
    return strategy.__class__.__name__


def worker_info(strategy):
    """`(task_type, task_id, is_chief, num_workers)` of this process.

    The chief is the `chief` task if the cluster has one, else worker 0; a process outside a
    cluster is its own chief.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    task_id = getattr(resolver, "task_id", None)
    cluster = resolver.cluster_spec().as_dict() if resolver is not None else {}
    num_workers = sum(len(cluster.get(job, [])) for job in ("chief", "worker")) or 1
    if task_type is None:
        is_chief = True
    elif task_type == "chief":
        is_chief = True
    else:
        is_chief = task_type == "worker" and task_id == 0 and "chief" not in cluster
    return task_type, task_id, is_chief, num_workers


def resolve_jit_compile(runtime_config, strategy):
    """The `jit_compile` to use: `runtime.jit_compile`, except off when replicas are logical
    CPU devices (XLA then places every replica's computation on CPU:0 and fails to reach the
    variables of the others: "Trying to access resource ... located in device CPU:1")."""
    jit = runtime_config.jit_compile
    if jit is not True or strategy.num_replicas_in_sync == 1 or is_multi_worker(strategy):
        return jit
    if tf.config.list_logical_devices("GPU"):
        return jit
    print(f"[runtime] runtime.jit_compile=true is not supported across "
          f"{strategy.num_replicas_in_sync} logical CPU devices: training without XLA.")
    return False


def set_determinism(runtime_config):
    """Deterministic TF ops when `runtime.deterministic` is set (call after `set_seed`)."""
    if getattr(runtime_config, "deterministic", False):
        tf.config.experimental.enable_op_determinism()


def set_precision(runtime_config):
    keras.mixed_precision.set_global_policy(runtime_config.mixed_precision or "float32")


def set_seed(seed):
    keras.utils.set_random_seed(seed)


def setup(config):
    """Strategy first (devices are fixed when TensorFlow starts), then precision, seeds and
    determinism, from an experiment config's `runtime` and `trainer.seed`; returns the strategy."""
    strategy = make_strategy(config.runtime)
    set_precision(config.runtime)
    set_seed(config.trainer.seed)
    set_determinism(config.runtime)
    return strategy
