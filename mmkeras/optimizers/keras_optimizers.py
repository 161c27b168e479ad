"""Keras's Adam, AdamW and SGD with mmkeras's two mixins: gradient clipping of the global
batch under `tf.distribute` (`ReplicaClipping`) and per-layer learning-rate multipliers
(`LearningRateMultipliers`). Without clipping or multipliers each is its Keras class's update,
bit for bit."""

import keras

from mmkeras.api_export import mmkeras_export
from mmkeras.optimizers.lr_multipliers import LearningRateMultipliers
from mmkeras.optimizers.replica_clipping import ReplicaClipping


@mmkeras_export("mmkeras.optimizers.Adam")
class Adam(ReplicaClipping, LearningRateMultipliers, keras.optimizers.Adam):
    """`keras.optimizers.Adam`, clipping the global batch's gradient, with `lr_multipliers`."""


@mmkeras_export("mmkeras.optimizers.AdamW")
class AdamW(ReplicaClipping, LearningRateMultipliers, keras.optimizers.AdamW):
    """`keras.optimizers.AdamW`, clipping the global batch's gradient, with `lr_multipliers`."""


@mmkeras_export("mmkeras.optimizers.SGD")
class SGD(ReplicaClipping, LearningRateMultipliers, keras.optimizers.SGD):
    """`keras.optimizers.SGD`, clipping the global batch's gradient, with `lr_multipliers`."""
