"""`mask_head_coordinates`: the mask head sees where each cell lies in its ROI, and older weights still load."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from bookseg.mrcnn.heads import RoiCoordinates, build_mask_head
from bookseg.mrcnn.model import MaskRCNN, named_weight_layers
from bookseg.mrcnn.weights import load_weights, save_checkpoint, save_legacy_weights

from .conftest import tiny_config


def test_roi_coordinates_are_cell_centres_in_minus_one_to_one_for_every_roi():
    pooled = tf.random.normal([3, 4, 6, 5], dtype=tf.float32)
    out = RoiCoordinates(dtype="mixed_bfloat16")(pooled)  # as in a model under model.precision=mixed_bfloat16
    assert out.shape == (3, 4, 6, 7) and out.dtype == tf.bfloat16
    out = tf.cast(out, tf.float32).numpy()
    np.testing.assert_allclose(out[..., :5], tf.cast(tf.cast(pooled, tf.bfloat16), tf.float32).numpy())
    np.testing.assert_allclose(out[0, :, 0, 5], [-0.75, -0.25, 0.25, 0.75])  # y, down the rows
    np.testing.assert_allclose(out[0, 0, :, 6], np.linspace(-5 / 6, 5 / 6, 6), atol=1e-2)  # x (bf16)
    np.testing.assert_array_equal(out[1, ..., 5:], out[0, ..., 5:])


def _mask_kernels(model):
    return named_weight_layers(model)["mrcnn_mask_conv1"].get_weights()


@pytest.mark.parametrize("kind", ["keras3", "keras3_cascade", "legacy"])
def test_weights_without_position_inputs_load_with_zero_rows_and_keep_the_mask_head(tmp_path, kind):
    config = tiny_config()
    keras.utils.set_random_seed(5)
    source = MaskRCNN(config)
    if kind == "legacy":
        path = save_legacy_weights(source, tmp_path / "plain.h5")
    else:
        path = save_checkpoint(source, tmp_path, 1)
    target_config = config.replace(mask_head_coordinates=True)
    if kind == "keras3_cascade":
        target_config = target_config.replace(cascade_iou_thresholds=(0.6,))
    target = MaskRCNN(target_config)
    report = load_weights(target, path)

    assert report.missing == [] and report.mismatched == []
    kernel, bias = _mask_kernels(target)
    source_kernel, source_bias = _mask_kernels(source)
    depth = config.top_down_pyramid_size
    assert kernel.shape == (3, 3, depth + 2, config.mask_head_channels)
    np.testing.assert_array_equal(kernel[:, :, :depth], source_kernel)
    np.testing.assert_array_equal(kernel[:, :, depth:], 0)
    np.testing.assert_array_equal(bias, source_bias)
    # Until training moves those rows, the mask head computes what the file's did.
    pooled = tf.random.normal([2, config.mask_pool_size, config.mask_pool_size, depth], seed=1)
    np.testing.assert_allclose(
        target.mask_head(pooled, training=False).numpy(),
        source.mask_head(pooled, training=False).numpy(),
        rtol=1e-5,
        atol=1e-5,
    )


def _centred_band_task(count: int, pool: int, seed: int):
    """Pooled features of ROIs that each hold three identical vertical bands, one through the ROI's
    centre; the mask target is that one. Returns float32 [count, pool, pool, 1] features and
    [count, 2 pool, 2 pool, 1] targets."""
    rng = np.random.default_rng(seed)
    size = 2 * pool
    features = np.zeros((count, pool, pool, 1), np.float32)
    targets = np.zeros((count, size, size, 1), np.float32)
    for i in range(count):
        centre = size // 2 - 2 + rng.integers(0, 2)
        others = [centre - 8 - rng.integers(0, 3), centre + 8 + rng.integers(0, 3)]
        band = np.zeros((size, size), np.float32)
        for x in [centre, *others]:
            band[:, x : x + 4] = 1
        features[i, ..., 0] = band.reshape(pool, 2, pool, 2).mean(axis=(1, 3))
        targets[i, :, centre : centre + 4, 0] = 1
    return features, targets


def _trained_loss(coordinates: bool) -> float:
    keras.utils.set_random_seed(0)
    config = tiny_config().replace(
        top_down_pyramid_size=1, mask_head_channels=16, mask_head_coordinates=coordinates, num_classes=1
    )
    head = build_mask_head(config)
    head.compile(
        optimizer=keras.optimizers.Adam(3e-3), loss=keras.losses.BinaryCrossentropy(from_logits=True)
    )
    features, targets = _centred_band_task(64, config.mask_pool_size, seed=0)
    head.fit(features, targets, epochs=25, batch_size=16, verbose=0, shuffle=False)
    test_features, test_targets = _centred_band_task(32, config.mask_pool_size, seed=1)
    return float(head.evaluate(test_features, test_targets, verbose=0))


def test_positions_let_the_mask_head_outline_only_the_band_its_roi_is_centred_on():
    """Without positions a 3x3 conv stack sees three identical bands and cannot tell which one the ROI is
    centred on; with them it can."""
    without, with_positions = _trained_loss(False), _trained_loss(True)
    assert with_positions < 0.5 * without, (with_positions, without)
