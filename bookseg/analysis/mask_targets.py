"""How faithfully the model's mask path can represent a data set's books.

A ground-truth mask reaches the mask loss through three lossy steps: the resize to the model's input
(nearest neighbour), the mini mask (the box crop resized to `mini_mask_shape`), and the ROI target
(`crop_and_resize` of the mini mask to `mask_shape`, rounded). `detect` then pastes a `mask_shape`
prediction back into the photo. `mask_round_trip` sends every ground-truth mask through these steps
with a perfect ROI (the ground-truth box) and a perfect prediction (the target itself) and measures
the IoU with the original mask: the ceiling the mask head can reach on these books, whatever it
learns. Tall, thin and tilted books are where a low ceiling would show.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from bookseg.data.records import boxes_from_masks
from bookseg.mrcnn.detection_targets import mask_targets
from bookseg.mrcnn.images import minimize_masks, paste_masks, resize_geometry, resize_masks


@dataclass
class RoundTrip:
    """Per-instance results of `mask_round_trip` (all arrays [N], one entry per instance).

    Attributes:
        iou: IoU between the original mask and the mask pasted back from its ROI target.
        fill: share of its (original) box the book covers (~1 upright, ~0.5 tilted).
        aspect: box width / height at the model's input size.
        short_side: box's shorter side in model-input pixels.
        targets: float32 [N, mh, mw] ROI mask targets (0/1), in the order of the other arrays.
        photo_boxes: int [N, 4] (y1, x1, y2, x2) photo pixel boxes the targets are pasted back into,
            y2/x2 exclusive.
    """

    iou: np.ndarray
    fill: np.ndarray
    aspect: np.ndarray
    short_side: np.ndarray
    targets: np.ndarray
    photo_boxes: np.ndarray

    def summary(self) -> str:
        tilted = self.fill < 0.6
        thin = self.aspect < 0.25
        parts = [
            (
                f"{len(self.iou)} books: round-trip IoU median {np.median(self.iou):.3f}, "
                f"10th percentile {np.quantile(self.iou, 0.1):.3f}, share >= 0.5 {np.mean(self.iou >= 0.5):.3f}, "
                f">= 0.75 {np.mean(self.iou >= 0.75):.3f}"
            )
        ]
        for label, subset in (("tilted (fill < 0.6)", tilted), ("thin (w/h < 0.25)", thin)):
            if subset.any():
                parts.append(
                    f"{label}: {int(subset.sum())} books, median IoU {np.median(self.iou[subset]):.3f}"
                )
        return "; ".join(parts)


def roi_mask_targets(mini_masks: np.ndarray, mask_shape) -> np.ndarray:
    """ROI mask targets of ROIs equal to the ground-truth boxes, built by the training graph's own
    `detection_targets.mask_targets`.

    Args:
        mini_masks: bool [mh, mw, N] mini masks.
        mask_shape: (th, tw), the mask head's output size.

    Returns:
        float32 [N, th, tw] of 0 / 1.
    """
    n = mini_masks.shape[-1]
    stacked = tf.constant(np.moveaxis(mini_masks, -1, 0)[..., None].astype(np.float32))
    whole = tf.tile(tf.constant([[0.0, 0.0, 1.0, 1.0]]), [n, 1])
    return mask_targets(stacked, whole, mask_shape).numpy()


def mask_round_trip(records, config) -> RoundTrip:
    """Send every instance of `records` through resize, mini mask, ROI target and paste-back.

    Args:
        records: `ImageRecord`s (their masks are rasterised at the photo's size).
        config: `MrcnnConfig` (image size and resize mode, `mini_mask_shape`, `mask_shape`).

    Returns:
        `RoundTrip`; instances that vanish at the model's input size are left out.
    """
    ious, fills, aspects, shorts, targets, all_photo_boxes = [], [], [], [], [], []
    for record in records:
        masks = record.masks()
        height, width = masks.shape[:2]
        scale, window, (out_h, out_w) = resize_geometry(height, width, config)
        padding = [(window[0], out_h - window[2]), (window[1], out_w - window[3]), (0, 0)]
        resized = resize_masks(masks, scale, padding)
        visible = resized.any(axis=(0, 1))
        resized, masks = resized[..., visible], masks[..., visible]
        if not visible.any():
            continue
        boxes = boxes_from_masks(resized)
        target = roi_mask_targets(minimize_masks(boxes, resized, config.mini_mask_shape), config.mask_shape)
        photo_boxes = np.round((boxes - np.array([window[0], window[1]] * 2)) / scale).astype(np.int64)
        pasted = paste_masks(target, photo_boxes, (height, width))
        inter = np.sum(pasted & masks, axis=(0, 1))
        union = np.sum(pasted | masks, axis=(0, 1))
        original = boxes_from_masks(masks)
        area = (original[:, 2] - original[:, 0]) * (original[:, 3] - original[:, 1])
        box_h, box_w = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        ious.append(inter / np.maximum(union, 1))
        fills.append(masks.sum(axis=(0, 1)) / np.maximum(area, 1))
        aspects.append(box_w / np.maximum(box_h, 1))
        shorts.append(np.minimum(box_h, box_w))
        targets.append(target)
        all_photo_boxes.append(photo_boxes)
    if not ious:
        raise ValueError("mask_round_trip: no instance is visible at the model's input size")
    return RoundTrip(*(np.concatenate(a) for a in (ious, fills, aspects, shorts, targets, all_photo_boxes)))
