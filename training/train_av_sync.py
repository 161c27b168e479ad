"""Alias of `python -m training.train` (the config's `task: av_sync` picks the task; see
`training/tasks/av_sync.py`)."""

import sys

from training.train import main

if __name__ == "__main__":
    sys.exit(main())
