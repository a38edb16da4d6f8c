"""One training step of a tiny MaskRCNN on one device and on 2 replicas (2 logical CPUs), compared.

Run as a script (`python -m tests.mrcnn.distributed_step`, from the repository root) by
test_distribute.py: the logical devices must be configured before TensorFlow initialises, which
the test process has already done. Prints one JSON line with the largest differences and facts.
"""

from __future__ import annotations

import json

import tensorflow as tf

tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2
)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from bookseg.mrcnn import detection_targets  # noqa: E402
from bookseg.mrcnn.distribute import distributable  # noqa: E402
from bookseg.mrcnn.model import MaskRCNN  # noqa: E402
from bookseg.mrcnn.training import OptimizerSpec, make_optimizer  # noqa: E402

from .conftest import make_batch, shelf_scene, tiny_config  # noqa: E402

WARM_UP_STEPS = 15
LEARNING_RATE = 0.01
CLIPNORM = 0.5  # below the gradient's norm after the warm-up: the step is clipped


def _deterministic_shuffle(indices, deterministic):
    # Random ROI sampling would differ between the two runs; the fixed permutation is the one validation uses.
    keys = tf.random.stateless_uniform(tf.shape(indices), seed=(1, 2))
    return tf.gather(indices, tf.argsort(keys))


def _global_batch(config, nan_image: bool = False) -> dict:
    """4 shelves with 3, 2, 0 and 1 books: the replicas ([0, 1] and [2, 3]) see different counts."""
    scenes = [
        shelf_scene(seed=0),
        shelf_scene(boxes=((8, 6, 56, 18), (10, 24, 58, 34)), seed=1),
        (np.full((64, 64, 3), 30, np.uint8), np.zeros((64, 64, 0), bool)),
        shelf_scene(boxes=((6, 40, 54, 58),), seed=2),
    ]
    batch = make_batch(config, [s[0] for s in scenes], [s[1] for s in scenes])
    if nan_image:
        batch["input_image"] = batch["input_image"].astype(np.float32)
        batch["input_image"][3, 10, 10, 0] = np.nan
    return batch


def _step_norm(weights, initial) -> float:
    """Global norm of the change of the weights, divided by the learning rate."""
    return float(np.sqrt(sum(np.sum((a - b) ** 2) for a, b in zip(weights, initial)))) / LEARNING_RATE


def _model(config, weights, clipnorm):
    model = MaskRCNN(config)
    model.set_weights(weights)
    model.compile(optimizer=make_optimizer(OptimizerSpec(name="sgd", clipnorm=clipnorm), LEARNING_RATE))
    return model


def main() -> None:
    detection_targets._shuffle = _deterministic_shuffle
    config = tiny_config(norm="frozen_bn", images_per_batch=4)
    keras.utils.set_random_seed(0)
    batch = _global_batch(config)
    dataset = distributable(tf.data.Dataset.from_tensors(batch).repeat())
    # A few steps first, so the RPN proposes boxes on the books and every loss has terms to compare.
    warm = MaskRCNN(config)
    warm.compile(optimizer=keras.optimizers.Adam(0.003))
    warm.fit(dataset, epochs=1, steps_per_epoch=WARM_UP_STEPS, verbose=0)
    initial = warm.get_weights()
    one = _model(config, initial, CLIPNORM)
    one_logs = one.fit(dataset, epochs=1, steps_per_epoch=1, verbose=0).history
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        two = _model(config, initial, CLIPNORM)
    two_logs = two.fit(dataset, epochs=1, steps_per_epoch=1, verbose=0).history
    result = {
        "replicas": strategy.num_replicas_in_sync,
        "loss_one": {k: float(v[0]) for k, v in one_logs.items()},
        "loss_two": {k: float(v[0]) for k, v in two_logs.items()},
        # The first SGD step moves the weights by -lr x the (clipped) gradient.
        "step_norm_one": _step_norm(one.get_weights(), initial),
        "step_norm_two": _step_norm(two.get_weights(), initial),
        "weight_diff": max(float(np.abs(a - b).max()) for a, b in zip(one.get_weights(), two.get_weights())),
    }

    # A non-finite loss on one replica: no weight and no optimizer slot moves on either (same traced step).
    after_step = two.get_weights()
    nan_data = distributable(tf.data.Dataset.from_tensors(_global_batch(config, nan_image=True)).repeat())
    nan_logs = two.fit(nan_data, epochs=1, steps_per_epoch=1, verbose=0).history
    result["nan"] = {
        "loss_finite": bool(np.isfinite(nan_logs["loss"][0])),
        "moved": max(float(np.abs(a - b).max()) for a, b in zip(two.get_weights(), after_step)),
        "iterations": int(two.optimizer.iterations.numpy()),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
