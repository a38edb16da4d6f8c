"""Anchor generation (matterport `generate_pyramid_anchors`), NumPy, computed once per image shape.

Anchors are constants of the model: they are never trainable weights (see docs/mrcnn-differences.md).
"""

from __future__ import annotations

import functools

import numpy as np

from bookseg.mrcnn.boxes import norm_boxes


def level_anchors(scale: float, ratios, feature_shape, feature_stride: int, anchor_stride: int) -> np.ndarray:
    """Anchors of one pyramid level as float64 [H*W*len(ratios), 4] (y1, x1, y2, x2) in pixels.

    Heights are scale / sqrt(ratio), widths scale * sqrt(ratio) (ratio = width / height). Centres
    sit at the top-left corner of each feature cell, (row * feature_stride, col * feature_stride),
    every `anchor_stride` cells, as in matterport (Detectron2 OFFSET = 0). Order: row-major over
    cells, then ratios, which matches the RPN head's reshape of [H, W, A * k] outputs.
    """
    ratios = np.asarray(ratios, np.float64)
    heights = scale / np.sqrt(ratios)
    widths = scale * np.sqrt(ratios)
    ys = np.arange(0, feature_shape[0], anchor_stride) * feature_stride
    xs = np.arange(0, feature_shape[1], anchor_stride) * feature_stride
    cy, cx = np.meshgrid(ys, xs, indexing="ij")
    cy = cy.reshape(-1, 1)
    cx = cx.reshape(-1, 1)
    y1 = cy - 0.5 * heights
    x1 = cx - 0.5 * widths
    y2 = cy + 0.5 * heights
    x2 = cx + 0.5 * widths
    return np.stack([y1, x1, y2, x2], axis=-1).reshape(-1, 4)


def backbone_shapes(image_shape, strides) -> list[tuple[int, int]]:
    """Feature-map (height, width) per level: ceil(image / stride), as the 'same'-padded convs give."""
    return [(int(np.ceil(image_shape[0] / s)), int(np.ceil(image_shape[1] / s))) for s in strides]


def pyramid_anchors(scales, ratios, image_shape, strides, anchor_stride: int = 1) -> np.ndarray:
    """All anchors, levels concatenated P2 first, float64 [N, 4] pixel (y1, x1, y2, x2)."""
    shapes = backbone_shapes(image_shape, strides)
    return np.concatenate(
        [level_anchors(s, ratios, shp, st, anchor_stride) for s, shp, st in zip(scales, shapes, strides)]
    )


@functools.lru_cache(maxsize=16)
def _cached_anchors(scales, ratios, image_hw, strides, anchor_stride) -> np.ndarray:
    anchors = pyramid_anchors(scales, ratios, image_hw, strides, anchor_stride)
    normed = norm_boxes(anchors, image_hw).astype(np.float32)
    normed.setflags(write=False)
    return normed


def anchors_for(config, image_shape) -> np.ndarray:
    """Normalised float32 [N, 4] anchors for a molded image of `image_shape` (h, w[, c]), cached."""
    return _cached_anchors(
        tuple(float(s) for s in config.rpn_anchor_scales),
        tuple(float(r) for r in config.rpn_anchor_ratios),
        (int(image_shape[0]), int(image_shape[1])),
        tuple(int(s) for s in config.backbone_strides),
        int(config.rpn_anchor_stride),
    )


def pixel_anchors_for(config, image_shape) -> np.ndarray:
    """Pixel float64 [N, 4] anchors for a molded image of `image_shape` (for RPN targets)."""
    return pyramid_anchors(
        config.rpn_anchor_scales,
        config.rpn_anchor_ratios,
        image_shape[:2],
        config.backbone_strides,
        config.rpn_anchor_stride,
    )
