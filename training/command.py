"""The `mmkeras` command: one entry point, one subcommand per step of a project.

    mmkeras train --data my.csv --target label --model-dir runs/mine      # your own table
    mmkeras train --config training/configs/avmnist/early_fusion.yaml --model-dir runs/av
    mmkeras evaluate --model-dir runs/mine
    mmkeras predict --model-dir runs/mine --data new.csv --out predictions.csv
    mmkeras export --model-dir runs/mine
    mmkeras serve --model-base-path $PWD/runs/mine/export/savedmodel --model-name own_my
    mmkeras explain --model-dir runs/av
    mmkeras prepare avmnist
    mmkeras tune ...

Each subcommand runs an existing module's command line (`training.train`, `training.evaluate`,
`serving.export`, ...), imported by name only when it runs, so `mmkeras --help` starts without
TensorFlow. `mmkeras SUBCOMMAND --help` shows an example and then the module's own options.
"""

import dataclasses
import importlib
import sys

from mmkeras import errors


@dataclasses.dataclass(frozen=True)
class Subcommand:
    module: str
    summary: str
    example: str


SUBCOMMANDS = {
    "train": Subcommand(
        "training.own_data_train",
        "train on your own CSV/TSV/JSONL table (--data), or a prepared experiment (--config)",
        "mmkeras train --data my.csv --target label --model-dir runs/mine\n"
        "  mmkeras train --config training/configs/avmnist/early_fusion.yaml "
        "--model-dir runs/av",
    ),
    "evaluate": Subcommand(
        "training.evaluate", "evaluate a trained model directory (missing modalities, noise)",
        "mmkeras evaluate --model-dir runs/mine [--robustness]",
    ),
    "predict": Subcommand(
        "training.predict", "predict new rows of a table (no target needed) into a CSV",
        "mmkeras predict --model-dir runs/mine --data new.csv --out predictions.csv",
    ),
    "export": Subcommand(
        "serving.export", "export SavedModel / TFLite / ONNX with parity checks",
        "mmkeras export --model-dir runs/mine",
    ),
    "serve": Subcommand(
        "serving.server", "serve exported models over TF Serving's REST and gRPC APIs",
        "mmkeras serve --model-base-path $PWD/runs/mine/export/savedmodel "
        "--model-name own_my --rest-port 8501 --grpc-port 8500",
    ),
    "explain": Subcommand(
        "training.explain", "attributions and saliency of a trained model",
        "mmkeras explain --model-dir runs/av --index 0",
    ),
    "prepare": Subcommand(
        "mmkeras.datasets.{name}",
        "prepare a built-in dataset (avmnist, openmoji, basicmotions, av_sync)",
        "mmkeras prepare avmnist --help",
    ),
    "tune": Subcommand(
        "training.tune", "hyperparameter search over an experiment",
        "mmkeras tune --help",
    ),
}
DATASETS = ("avmnist", "openmoji", "basicmotions", "av_sync")


def usage():
    width = max(map(len, SUBCOMMANDS))
    lines = ["usage: mmkeras SUBCOMMAND [options]   (mmkeras SUBCOMMAND --help for its options)",
             "", "subcommands:"]
    lines += [f"  {name.ljust(width)}  {sub.summary}" for name, sub in SUBCOMMANDS.items()]
    lines += ["", "examples:"]
    lines += [f"  {sub.example}" for sub in SUBCOMMANDS.values()]
    return "\n".join(lines)


def _fail(message):
    print(f"error: {message}", file=sys.stderr)
    return 2


def _module_main(name):
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name == name:
            return None
        raise
    return getattr(module, "main", None)


def main(argv=None):
    """Runs `mmkeras` with `argv` (default `sys.argv[1:]`); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        return _fail(f"unknown subcommand {name!r}; use one of {', '.join(SUBCOMMANDS)}")
    sub = SUBCOMMANDS[name]
    module = sub.module
    if name == "prepare":
        if not rest or rest[0].startswith("-"):
            print(f"usage: mmkeras prepare DATASET [options]   (DATASET: {', '.join(DATASETS)})"
                  f"\nexample: mmkeras prepare avmnist --help")
            return 0 if rest and rest[0] in ("-h", "--help") else 2
        if rest[0] not in DATASETS:
            return _fail(f"unknown dataset {rest[0]!r}; use one of {', '.join(DATASETS)}")
        module, rest = module.format(name=rest[0]), rest[1:]
    elif name == "train" and "--data" not in rest and any(
            a == "--config" or a.startswith("--config=") for a in rest):
        module = "training.train"  # a prepared experiment: the experiment trainer's own CLI
    if "-h" in rest or "--help" in rest:
        print(f"example:\n  {sub.example}\n")
    sys.argv[0] = f"mmkeras {name}"
    # Before the subcommand's module is imported: modules that import TensorFlow at their top
    # would print its C++ log lines before the command's own wrapper could hide them.
    errors.quiet_tensorflow(errors.VERBOSE_FLAG in rest)
    entry = _module_main(module)
    if entry is None:
        return _fail(f"'mmkeras {name}' is not available in this installation ({module} has no "
                     "command line)")
    status = entry(rest)
    return 0 if status is None else status


if __name__ == "__main__":
    sys.exit(main())
