"""NumPy box utilities shared by the input pipeline, evaluation and tests.

Boxes are [N, 4] (y1, x1, y2, x2). In pixel coordinates y2/x2 are exclusive (a box covering pixel
rows 2..4 is y1=2, y2=5). Normalised coordinates follow matterport: (box - [0, 0, 1, 1]) /
[h - 1, w - 1, h - 1, w - 1], so a full-image pixel box becomes [0, 0, 1, 1].
"""

from __future__ import annotations

import numpy as np


def box_area(boxes: np.ndarray) -> np.ndarray:
    """Areas of [N, 4] boxes; negative extents count as 0."""
    boxes = np.asarray(boxes, np.float64)
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def iou_matrix(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """Pairwise IoU, float64 [N, M], of [N, 4] and [M, 4] boxes. Empty unions give 0."""
    a = np.asarray(boxes_a, np.float64)[:, None, :]
    b = np.asarray(boxes_b, np.float64)[None, :, :]
    inter_h = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    inter_w = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = inter_h * inter_w
    union = box_area(boxes_a)[:, None] + box_area(boxes_b)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def encode_boxes(boxes: np.ndarray, gt_boxes: np.ndarray, std_dev=(0.1, 0.1, 0.2, 0.2)) -> np.ndarray:
    """Deltas (dy, dx, log dh, log dw) / std_dev that turn `boxes` into `gt_boxes` (both [N, 4])."""
    boxes = np.asarray(boxes, np.float64)
    gt = np.asarray(gt_boxes, np.float64)
    h, w = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    cy, cx = boxes[:, 0] + 0.5 * h, boxes[:, 1] + 0.5 * w
    gh, gw = gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1]
    gcy, gcx = gt[:, 0] + 0.5 * gh, gt[:, 1] + 0.5 * gw
    deltas = np.stack([(gcy - cy) / h, (gcx - cx) / w, np.log(gh / h), np.log(gw / w)], axis=1)
    return deltas / np.asarray(std_dev, np.float64)


def decode_boxes(boxes: np.ndarray, deltas: np.ndarray, std_dev=(0.1, 0.1, 0.2, 0.2)) -> np.ndarray:
    """Inverse of `encode_boxes`: apply [N, 4] deltas (scaled by std_dev) to [N, 4] boxes."""
    boxes = np.asarray(boxes, np.float64)
    d = np.asarray(deltas, np.float64) * np.asarray(std_dev, np.float64)
    h, w = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    cy, cx = boxes[:, 0] + 0.5 * h + d[:, 0] * h, boxes[:, 1] + 0.5 * w + d[:, 1] * w
    h, w = h * np.exp(d[:, 2]), w * np.exp(d[:, 3])
    return np.stack([cy - 0.5 * h, cx - 0.5 * w, cy + 0.5 * h, cx + 0.5 * w], axis=1)


def norm_boxes(boxes: np.ndarray, shape) -> np.ndarray:
    """Pixel boxes -> normalised coordinates for an image of `shape` (h, w, ...)."""
    h, w = shape[:2]
    scale = np.array([h - 1, w - 1, h - 1, w - 1], np.float64)
    return (np.asarray(boxes, np.float64) - np.array([0, 0, 1, 1])) / scale


def denorm_boxes(boxes: np.ndarray, shape) -> np.ndarray:
    """Normalised boxes -> integer pixel boxes (inverse of `norm_boxes`, rounded)."""
    h, w = shape[:2]
    scale = np.array([h - 1, w - 1, h - 1, w - 1], np.float64)
    return np.around(np.asarray(boxes, np.float64) * scale + np.array([0, 0, 1, 1])).astype(np.int32)
