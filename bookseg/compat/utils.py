"""matterport's `mrcnn.utils`: `Dataset` and the array helpers, each mapped onto bookseg's own function.

Conventions (matterport's): masks bool [H, W, N]; boxes int32 [N, 4] (y1, x1, y2, x2) in pixels with
y2/x2 exclusive; class ids int [N]. `compute_ap` and friends are bookseg's matterport-style AP
(`bookseg.evaluation.matterport_ap`, whose docstring lists its deliberate fixes: no division by zero
for images without ground truth, stable tie-breaking, no silent trimming of zero rows).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from bookseg.compat.dataset import Dataset
from bookseg.compat.weights_download import COCO_MODEL_URL, download_trained_weights
from bookseg.data.records import boxes_from_masks
from bookseg.evaluation.matterport_ap import compute_ap, compute_ap_range, compute_matches, mask_iou
from bookseg.mrcnn import images as im
from bookseg.mrcnn.boxes import iou_matrix

__all__ = [
    "COCO_MODEL_URL",
    "Dataset",
    "compute_ap",
    "compute_ap_range",
    "compute_matches",
    "compute_overlaps",
    "compute_overlaps_masks",
    "download_trained_weights",
    "expand_mask",
    "extract_bboxes",
    "minimize_mask",
    "resize_image",
    "resize_mask",
]


def extract_bboxes(mask: np.ndarray) -> np.ndarray:
    """Tight boxes of bool [H, W, N] masks: int32 [N, 4] (y1, x1, y2, x2), y2/x2 exclusive; empty -> 0s."""
    return boxes_from_masks(np.asarray(mask).astype(bool, copy=False))


def compute_overlaps_masks(masks1: np.ndarray, masks2: np.ndarray) -> np.ndarray:
    """IoU of every pair of masks: [H, W, N] x [H, W, M] -> float64 [N, M]."""
    return mask_iou(masks1, masks2)


def compute_overlaps(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """IoU of every pair of boxes: [N, 4] x [M, 4] -> float64 [N, M]."""
    return iou_matrix(boxes1, boxes2)


def resize_image(image, min_dim=None, max_dim=None, min_scale=None, mode="square"):
    """Resize and pad an image as matterport does (bookseg's `images.resize_image`).

    Args:
        image: [h, w, C] array.
        min_dim: scale up so the short side reaches this (never down); None = no minimum.
        max_dim: in "square" mode, cap the long side and pad to max_dim x max_dim.
        min_scale: scale at least this much.
        mode: "square" | "pad64" | "none" ("crop" is not supported).

    Returns:
        image [H, W, C] (same dtype); window (y1, x1, y2, x2) of the photo in it; scale; padding
        [(top, bottom), (left, right), (0, 0)]; crop (always None).
    """
    if mode == "crop":
        raise ValueError('resize_image(mode="crop") is not supported: use "square", "pad64" or "none"')
    if mode == "square" and not max_dim:
        raise ValueError('resize_image(mode="square") needs max_dim')
    geometry = SimpleNamespace(
        image_resize_mode=mode,
        image_min_dim=min_dim or 0,
        image_max_dim=max_dim,
        image_min_scale=min_scale or 0,
    )
    image, window, scale, padding = im.resize_image(np.asarray(image), geometry)
    return image, window, scale, padding, None


def resize_mask(mask, scale, padding, crop=None):
    """Resize bool [h, w, N] masks like `resize_image` did the image (nearest neighbour, zero padding)."""
    if crop is not None:
        raise ValueError("resize_mask(crop=...) is not supported (no crop resize mode)")
    return im.resize_masks(mask, scale, padding)


def minimize_mask(bbox, mask, mini_shape):
    """Crop each mask to its box and resize it to mini_shape: bool [mh, mw, N]."""
    return im.minimize_masks(np.asarray(bbox), np.asarray(mask).astype(bool, copy=False), mini_shape)


def expand_mask(bbox, mini_mask, image_shape):
    """Inverse of `minimize_mask`: bool [H, W, N] full-image masks."""
    return im.expand_mask(np.asarray(bbox), np.asarray(mini_mask), image_shape)
