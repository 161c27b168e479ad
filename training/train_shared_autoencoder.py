"""Alias of `python -m training.train` for `task: shared_autoencoder` configs (kept so that
older command lines work; see `training/tasks/shared_autoencoder.py`)."""

import sys

from training.train import main

if __name__ == "__main__":
    sys.exit(main())
