"""Alias of `python -m training.train`: the config's `task: retrieval` trains the dual encoder
(`training/tasks/retrieval.py`).

    python -m training.train_retrieval --config training/configs/avmnist/dual_encoder.yaml \
        --model-dir runs/avmnist/dual_encoder
"""

import sys

from training.train import main

if __name__ == "__main__":
    sys.exit(main())
