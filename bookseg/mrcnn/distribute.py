"""Training on several devices with `tf.distribute`: the strategy, loss normalisation, the guarded update.

With a strategy of N replicas (`make_strategy`), Keras splits each global batch of
`images_per_batch x N` images into N per-replica batches and runs `MaskRCNN.train_step` once per replica.
Three rules make one step on N replicas the step one device takes on the whole global batch:

* Every loss is a sum over its items divided by the items' count over the *global* batch
  (`global_count`), so a replica with fewer positive ROIs does not weigh more.
* `train_step` differentiates loss / N: the N per-replica gradients sum to the global batch's gradient.
* `apply_finite_update` sums the gradients across replicas itself, checks the sum is finite and clips
  it by the optimizer's global norm as one device would, then lets every replica apply 1 / N of it (the
  optimizer sums them once more and its own clipping is then a no-op). A non-finite step updates no
  weight and no optimizer slot on any replica.

BatchNorm (`model.norm=batch_norm`) normalises with each replica's own batch statistics, as Detectron's
per-GPU BatchNorm; `frozen_bn` and `group_norm` do not depend on the split at all.
"""

from __future__ import annotations

import tensorflow as tf

from bookseg.mrcnn.config import STRATEGIES


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The `tf.distribute` strategy called `name` (one of `config.STRATEGIES`).

    * "default": the current (no-op) strategy: one device, what runs without any strategy.
    * "mirrored": synchronous data parallelism over every GPU of this machine (the CPU if none).
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    raise ValueError(f"unknown strategy {name!r}: use {' or '.join(STRATEGIES)}")


def distributable(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """`dataset` with its bool features (the GT masks) as uint8 0 / 1.

    Under a strategy Keras averages the first batch across replicas to build the model symbolically, which
    fails on bool tensors; the model casts the masks to float32 either way.
    """

    def to_uint8(batch):
        return {k: tf.cast(v, tf.uint8) if v.dtype == tf.bool else v for k, v in batch.items()}

    return dataset.map(to_uint8)


def replicas_in_sync() -> int:
    """Number of replicas of the strategy in scope (1 outside any strategy)."""
    return tf.distribute.get_strategy().num_replicas_in_sync


def global_count(count):
    """A loss's item count over the global batch, divided by the number of replicas.

    A loss `sum / global_count(count)` on each replica, scaled by 1 / N in `train_step`, adds up over the
    replicas to sum_all / count_all, the global batch's mean. Outside a multi-replica step, `count`.
    """
    count = tf.cast(count, tf.float32)
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return count
    return context.all_reduce(tf.distribute.ReduceOp.SUM, count) / context.num_replicas_in_sync


def apply_finite_update(optimizer, pairs, loss) -> None:
    """Apply (gradient, variable) `pairs` only if `loss` and the gradients are finite.

    Args:
        optimizer: a built Keras optimizer.
        pairs: list of (gradient, variable) of this replica; gradients of loss / N (see module docstring).
        loss: float32 scalar, this replica's loss (any scale: only its finiteness counts).
    """
    if not tf.distribute.has_strategy():
        gradients = [g for g, _ in pairs]
        finite = tf.math.is_finite(loss) & tf.math.is_finite(tf.linalg.global_norm(gradients))

        def apply():
            optimizer.apply_gradients(pairs)
            return tf.constant(True)

        tf.cond(finite, apply, lambda: tf.constant(False))
        return

    context = tf.distribute.get_replica_context()
    replicas = context.num_replicas_in_sync
    variables = [v for _, v in pairs]
    summed = context.all_reduce(tf.distribute.ReduceOp.SUM, [g for g, _ in pairs])
    norm = tf.linalg.global_norm(summed)
    total_loss = context.all_reduce(tf.distribute.ReduceOp.SUM, loss)
    finite = tf.math.is_finite(total_loss) & tf.math.is_finite(norm)
    if optimizer.global_clipnorm is not None:
        clip = float(optimizer.global_clipnorm)
        summed = [g * tf.minimum(1.0, clip / tf.maximum(norm, 1e-12)) for g in summed]
    shares = [g / replicas for g in summed]

    # A cond whose branch reaches the optimizer's merge_call must run in the cross-replica context;
    # `finite` is the same on every replica (it comes from all-reduced values).
    def cross_replica(strategy, finite, shares):
        def apply():
            strategy.extended.call_for_each_replica(
                lambda grads: optimizer.apply_gradients(list(zip(grads, variables))), args=(shares,)
            )
            return tf.constant(True)

        first = strategy.experimental_local_results(finite)[0]
        tf.cond(first, apply, lambda: tf.constant(False))

    context.merge_call(cross_replica, args=(finite, shares))
