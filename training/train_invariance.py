"""Alias of `python -m training.train` for `task: invariance` configs (kept so that older
command lines work; see `training/tasks/invariance.py`). `--no-baseline` is accepted and
ignored: the lambda = 0 baseline is a run of its own now
(`--set cross_modal.reversal_scale=0 --model-dir <another dir>`)."""

import sys

from training import train


def main(argv=None):
    argv = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--no-baseline"]
    return train.main(argv)


if __name__ == "__main__":
    sys.exit(main())
