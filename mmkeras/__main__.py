"""`python -m mmkeras`: the `mmkeras` command (`training/command.py`).

The one place the library names `training/`: the command line lives with the scripts, and
is imported by name only when the command runs.
"""

import importlib
import sys


def main():
    return importlib.import_module("training.command").main()


if __name__ == "__main__":
    sys.exit(main())
