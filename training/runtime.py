"""Distribution strategy, devices, precision and seeds from a `RuntimeConfig`.

Call `configure_devices` before TensorFlow runs its first op: logical CPU devices cannot be
created after the runtime has initialised.
"""

import logging

import keras
import tensorflow as tf

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
