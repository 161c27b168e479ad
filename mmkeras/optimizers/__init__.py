"""Optimizers: Keras's, with gradient clipping that does not depend on the replica count."""

from mmkeras.optimizers.replica_clipping import SGD
from mmkeras.optimizers.replica_clipping import Adam
from mmkeras.optimizers.replica_clipping import AdamW
from mmkeras.optimizers.replica_clipping import ReplicaClipping
