"""Serving for mmkeras models: SavedModel export, a local TF-Serving-compatible server, clients.

The serving commands (`python -m serving.export`, `serving.server`, ...) import TensorFlow at
module level, so its C++ start-up log (CUDA plugin registration, CPU feature notes: lines a
CPU user cannot act on) is switched off here, before TensorFlow loads, unless `--verbose` is on
the command line or `TF_CPP_MIN_LOG_LEVEL` is already set.
"""

import sys

from mmkeras import errors

errors.quiet_tensorflow(verbose=errors.VERBOSE_FLAG in sys.argv)
