"""Alias of `python -m training.train` (the config's `task: captioning` picks the task; see
`training/tasks/captioning.py`)."""

import sys

from training.train import main

if __name__ == "__main__":
    sys.exit(main())
