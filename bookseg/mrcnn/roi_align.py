"""PyramidROIAlign: pool each box from the pyramid level that matches its size (no weights)."""

from __future__ import annotations

import keras
import tensorflow as tf

PYRAMID_LEVELS = (2, 3, 4, 5)  # P2..P5; the heads never pool from P6
CANONICAL_SIZE = 224.0  # an ROI of 224 x 224 pixels maps to P4 (FPN paper, eq. 1; matterport)


def roi_levels(boxes, image_hw, canonical_size: float = CANONICAL_SIZE):
    """Pyramid level of each box (matterport/FPN formula).

    level = clip(4 + round(log2(sqrt(h * w) / (c / sqrt(H * W)))), 2, 5), with h, w the
    normalised box size, H, W the molded image size and c the canonical size (so roughly
    4 + log2(side_px / c)). c = 224 is FPN's and matterport's; a larger c pools every ROI from a
    finer level (2 x c: one level finer).

    Args:
        boxes: float32 [B, N, 4] normalised (y1, x1, y2, x2); zero rows (padding) get level 2.
        image_hw: float32 [2] molded image (height, width).
        canonical_size: ROI side in molded pixels that maps to P4.

    Returns:
        int32 [B, N] levels in 2..5.
    """
    height = boxes[..., 2] - boxes[..., 0]
    width = boxes[..., 3] - boxes[..., 1]
    image_area = tf.cast(image_hw[0] * image_hw[1], tf.float32)
    # Clamp the area away from 0 so padding rows give a finite (very negative) level.
    side = tf.sqrt(tf.maximum(height * width, 1e-12))
    level = 4.0 + tf.round(tf.math.log(side * tf.sqrt(image_area) / canonical_size) / tf.math.log(2.0))
    return tf.cast(tf.clip_by_value(level, 2.0, 5.0), tf.int32)


def pyramid_roi_align(boxes, image_hw, feature_maps, pool_shape, canonical_size: float = CANONICAL_SIZE):
    """Crop-and-resize every box from its pyramid level (one bilinear sample per bin).

    Gradients flow into the feature maps, not into the boxes.

    Args:
        boxes: float32 [B, N, 4] normalised (y1, x1, y2, x2), may contain zero padding rows.
        image_hw: float32 [2] molded image (height, width).
        feature_maps: [P2, P3, P4, P5], each float32 or bfloat16 [B, h_l, w_l, C].
        pool_shape: (ph, pw), e.g. (7, 7) for the classifier, (14, 14) for the mask head.
        canonical_size: ROI side that maps to P4 (see `roi_levels`).

    Returns:
        float32 [B, N, ph, pw, C] pooled features in the order of `boxes`.
    """
    boxes = tf.stop_gradient(boxes)
    levels = roi_levels(boxes, image_hw, canonical_size)
    pooled, positions = [], []
    for level, feature_map in zip(PYRAMID_LEVELS, feature_maps):
        position = tf.where(tf.equal(levels, level))  # int64 [n, 2] (image, box)
        level_boxes = tf.gather_nd(boxes, position)
        feature_map = tf.cast(feature_map, tf.float32)  # crop_and_resize takes no bfloat16
        pooled.append(
            tf.image.crop_and_resize(
                feature_map, level_boxes, tf.cast(position[:, 0], tf.int32), pool_shape, method="bilinear"
            )
        )
        positions.append(position)
    pooled = tf.concat(pooled, axis=0)
    positions = tf.concat(positions, axis=0)
    batch, count = tf.shape(boxes, out_type=tf.int64)[0], tf.shape(boxes, out_type=tf.int64)[1]
    channels = tf.shape(pooled, out_type=tf.int64)[-1]
    out_shape = tf.stack([batch, count, int(pool_shape[0]), int(pool_shape[1]), channels])
    # Every (image, box) pair is at exactly one level, so the scatter is a permutation back.
    out = tf.scatter_nd(positions, pooled, out_shape)
    static_channels = feature_maps[0].shape[-1]
    return tf.ensure_shape(
        out, [boxes.shape[0], boxes.shape[1], pool_shape[0], pool_shape[1], static_channels]
    )


class PyramidROIAlign(keras.layers.Layer):
    """matterport's `PyramidROIAlign` (names `roi_align_classifier` / `roi_align_mask`); no weights.

    Called as `layer(boxes, image_hw, [P2, P3, P4, P5])`, see `pyramid_roi_align`. The image size
    comes from the image tensor itself rather than from image_meta (same value, one less input
    to get wrong).
    """

    def __init__(self, pool_shape, name: str, canonical_size: float = CANONICAL_SIZE, **kwargs):
        super().__init__(name=name, **kwargs)
        self.pool_shape = (int(pool_shape[0]), int(pool_shape[1]))
        self.canonical_size = float(canonical_size)
        self.supports_jit = False  # data-dependent gathers per level
        self.built = True

    def call(self, boxes, image_hw, feature_maps):
        return pyramid_roi_align(boxes, image_hw, list(feature_maps), self.pool_shape, self.canonical_size)
