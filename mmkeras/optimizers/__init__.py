"""Optimizers: Keras's, with gradient clipping that does not depend on the replica count and
per-layer learning-rate multipliers."""

from mmkeras.optimizers.keras_optimizers import SGD
from mmkeras.optimizers.keras_optimizers import Adam
from mmkeras.optimizers.keras_optimizers import AdamW
from mmkeras.optimizers.lr_multipliers import LearningRateMultipliers
from mmkeras.optimizers.replica_clipping import ReplicaClipping
