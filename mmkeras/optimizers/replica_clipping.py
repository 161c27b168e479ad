"""Gradient clipping that gives the same update on any number of replicas.

Keras clips the gradients inside `optimizer.apply`, which `model.fit` and the custom loop call
in replica context: each replica clips its own share of the gradient, and only then are the
shares summed (`_backend_update_step` all-reduces). With `clipnorm: 1` and 2 replicas, each
replica's half-gradient is clipped to norm 1, so the summed update can reach norm 2 and differs
from one device's clip of the same global batch's gradient.

`ReplicaClipping` clips the global gradient instead: in replica context with more than one
replica, each replica sums the shares first (one extra all-reduce, only when a clipping option
is set), clips the sum as Keras would on one device, and hands on its `1 / replicas` part of
the clipped sum, so the optimizer's own all-reduce rebuilds exactly the clipped global
gradient. Without a strategy, with one replica or without clipping it is Keras's own clipping.

Under `mixed_float16` the `LossScaleOptimizer` calls the inner optimizer's `apply` only when the
gradients are finite. With merge calls (every CPU run, and GPUs without XLA) that decision is
taken once for all replicas; without them (XLA on GPUs only) each replica takes it on its own
gradients, and the extra all-reduce here sits in the same branch as Keras's own all-reduce of
the gradients (`_backend_update_step`), so it adds no way of replicas diverging that Keras
does not already have.
"""

from mmkeras.losses.distributed import replica_context


class ReplicaClipping:
    """Mixin for a Keras optimizer: clip the gradient of the global batch (see module doc)."""

    def _clip_gradients(self, grads):
        context = replica_context()
        if context is None or not (self.clipnorm or self.global_clipnorm or self.clipvalue):
            return super()._clip_gradients(grads)
        present = [i for i, g in enumerate(grads) if g is not None]
        summed = context.all_reduce("sum", [grads[i] for i in present])
        clipped = super()._clip_gradients(list(summed))
        share = 1.0 / context.num_replicas_in_sync
        out = list(grads)
        for i, g in zip(present, clipped):
            out[i] = g * share
        return out
