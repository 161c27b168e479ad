"""Train an experiment of any task (the config's `task:` picks it: classification, retrieval,
invariance, shared_autoencoder, av_sync, captioning).

    python -m training.train --config training/configs/avmnist/early_fusion.yaml \
        --model-dir runs/avmnist/early_fusion [--set trainer.epochs=3 --set runtime.cpu_replicas=2]
    python -m training.train --config training/configs/avmnist/dual_encoder.yaml \
        --model-dir runs/avmnist/dual_encoder        # task: retrieval

Running the same command again after a crash resumes from the last completed epoch.

Multi-machine training (MultiWorkerMirroredStrategy, synchronous data parallelism): start the
same command on every machine, each with its own `--worker-index` and the same `--workers`
list (host:port of every worker, in the same order; the ports must be free and reachable
between the machines). Worker 0 is the chief: it writes the model directory (history,
TensorBoard logs, checkpoints, report); the others save their training state to a temporary
directory. `--model-dir` must name the same shared storage on every machine (NFS, a mounted
bucket) for a restarted job to resume. `data.batch_size` is the GLOBAL batch: each of the N
workers takes batch_size / N examples per step from its 1/N shard of the data.

    # machine A (10.0.0.1)                  # machine B (10.0.0.2)
    python -m training.train \\              python -m training.train \\
      --config CONFIG.yaml \\                  --config CONFIG.yaml \\
      --model-dir /shared/runs/exp \\          --model-dir /shared/runs/exp \\
      --workers 10.0.0.1:12345,10.0.0.2:12345 --workers 10.0.0.1:12345,10.0.0.2:12345 \\
      --worker-index 0                        --worker-index 1

`--workers` implies `--set runtime.distribution=multi_worker`. Instead of the two flags, a
cluster manager may set `TF_CONFIG` (`{"cluster": {"worker": [...]}, "task": {"type":
"worker", "index": I}}`) and pass `--set runtime.distribution=multi_worker`. The workers wait
for each other at start-up. If a worker dies, the others stop or hang on the next collective:
stop them all and start every worker again with the same command; they resume from the last
epoch saved in `MODEL_DIR/backup`.
"""

import json
import os
import sys

from mmkeras import errors


def parse_args(argv=None):
    from training.cli import experiment_parser

    parser = experiment_parser(__doc__, fresh_help="delete the model directory first instead of resuming")
    parser.add_argument("--workers", default=None, metavar="HOST:PORT,HOST:PORT,...",
                        help="multi-worker training: every worker's address, in the same order "
                             "on every worker")
    parser.add_argument("--evaluate-only", action="store_true",
                        help="train nothing: evaluate MODEL_DIR's model of record again and "
                             "rewrite report.json")
    parser.add_argument("--worker-index", type=int, default=None,
                        help="this worker's position in --workers (0 is the chief)")
    return parser.parse_args(argv)


def cluster_env(workers, worker_index):
    """The `TF_CONFIG` value for `--workers`/`--worker-index` (a ValueError if inconsistent)."""
    addresses = [w.strip() for w in workers.split(",") if w.strip()]
    if not addresses:
        raise ValueError("--workers is empty.")
    if worker_index is None or not 0 <= worker_index < len(addresses):
        raise ValueError(
            f"--worker-index must be in [0, {len(addresses) - 1}] with {len(addresses)} workers."
        )
    return json.dumps({"cluster": {"worker": addresses}, "task": {"type": "worker", "index": worker_index}})


@errors.command_line
def main(argv=None):
    args = parse_args(argv)
    from mmkeras.configs import load_config

    overrides = list(args.set)
    if args.workers is not None or args.worker_index is not None:
        try:
            os.environ["TF_CONFIG"] = cluster_env(args.workers or "", args.worker_index)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        overrides.insert(0, "runtime.distribution=multi_worker")
    # A ConfigError (a bad key or value) stops here, before the model directory is touched.
    config = load_config(args.config, overrides)
    # Devices must be configured before TensorFlow starts; the trainer does it first.
    from training.trainer import train

    train(config, args.model_dir, fresh=args.fresh, evaluate_only=args.evaluate_only)
    return 0

if __name__ == "__main__":
    sys.exit(main())
