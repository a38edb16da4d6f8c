"""RPN training targets per image (matterport `build_rpn_targets`), vectorised NumPy.

For every anchor: 1 positive, -1 negative, 0 neutral (ignored by the RPN class loss), and for
the positives the box deltas that move the anchor onto its best-matching ground-truth box.

Rules (matterport's), in this order:
1. Crowd boxes (negative class id) never make an anchor positive; an anchor overlapping any crowd
   box with IoU >= 0.001 is never negative.
2. Negative: max IoU with the (non-crowd) GT boxes < 0.3.
3. Each GT box's best anchor(s) are positive (all ties), even if that IoU is below 0.3.
   Deviation from matterport: a GT box that overlaps no anchor at all (IoU 0 everywhere, e.g. an
   empty box) makes nothing positive; matterport would mark every anchor with IoU 0 positive.
4. Positive: max IoU >= 0.7.
5. At most half of `rpn_train_anchors_per_image` anchors stay positive (random choice), and
   negatives are subsampled so that positives + negatives = rpn_train_anchors_per_image.
"""

from __future__ import annotations

import numpy as np

from bookseg.mrcnn.boxes import encode_boxes

NEGATIVE_IOU = 0.3
POSITIVE_IOU = 0.7
CROWD_IOU = 0.001
# Anchors per IoU block: bounds the memory to CHUNK x (GT boxes) floats.
_CHUNK = 1024


def anchor_gt_overlaps(anchors: np.ndarray, gt_boxes: np.ndarray, chunk: int = _CHUNK):
    """Best-match statistics of anchors against GT boxes without building the full IoU matrix.

    Anchors are processed in blocks of `chunk`; each block is compared only with the GT boxes
    that intersect the block's bounding box (the others have IoU 0 with every anchor in it). This
    is exact for any anchor order and fast for matterport's order, where consecutive anchors are
    spatial neighbours (a block of the big levels covers a thin horizontal band of the image).

    Args:
        anchors: float [A, 4] (y1, x1, y2, x2) pixels.
        gt_boxes: float [M, 4] (y1, x1, y2, x2) pixels.

    Returns:
        anchor_max: float64 [A], max IoU of each anchor over the GT boxes (0 if M == 0).
        anchor_argmax: int64 [A], index of that GT box (0 where anchor_max is 0).
        best_pairs: int64 [P, 2] (anchor index, gt index) for every anchor whose IoU with a GT
            box equals that box's maximum over all anchors (ties included), for GT boxes whose
            maximum is > 0.
    """
    anchors = np.asarray(anchors, np.float64).reshape(-1, 4)
    gt = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    n_anchors, n_gt = len(anchors), len(gt)
    anchor_max = np.zeros(n_anchors, np.float64)
    anchor_argmax = np.zeros(n_anchors, np.int64)
    if n_gt == 0 or n_anchors == 0:
        return anchor_max, anchor_argmax, np.zeros((0, 2), np.int64)

    gt_area = np.clip(gt[:, 2] - gt[:, 0], 0, None) * np.clip(gt[:, 3] - gt[:, 1], 0, None)
    gt_max = np.zeros(n_gt, np.float64)
    candidates = []  # (anchor idx, gt idx, iou) where a block reaches its own per-GT maximum
    for start in range(0, n_anchors, chunk):
        block = anchors[start : start + chunk]
        lo, hi = block[:, :2].min(axis=0), block[:, 2:].max(axis=0)
        near = np.flatnonzero(
            (gt[:, 0] < hi[0]) & (gt[:, 2] > lo[0]) & (gt[:, 1] < hi[1]) & (gt[:, 3] > lo[1])
        )
        if near.size == 0:
            continue
        g = gt[near]
        inter = np.minimum(block[:, 2:3], g[:, 2])
        inter -= np.maximum(block[:, 0:1], g[:, 0])
        np.maximum(inter, 0, out=inter)
        width = np.minimum(block[:, 3:4], g[:, 3])
        width -= np.maximum(block[:, 1:2], g[:, 1])
        np.maximum(width, 0, out=width)
        inter *= width
        block_area = (block[:, 2] - block[:, 0]) * (block[:, 3] - block[:, 1])
        union = block_area[:, None] + gt_area[near][None, :]
        union -= inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)

        best = iou.argmax(axis=1)
        best_iou = iou[np.arange(len(block)), best]
        anchor_max[start : start + len(block)] = best_iou
        anchor_argmax[start : start + len(block)] = np.where(best_iou > 0, near[best], 0)

        block_gt_max = iou.max(axis=0)
        rows, cols = np.nonzero((iou == block_gt_max) & (block_gt_max > 0))
        candidates.append(np.stack([rows + start, near[cols], iou[rows, cols]], axis=1))
        np.maximum.at(gt_max, near, block_gt_max)

    if not candidates:
        return anchor_max, anchor_argmax, np.zeros((0, 2), np.int64)
    pairs = np.concatenate(candidates)
    gt_idx = pairs[:, 1].astype(np.int64)
    keep = pairs[:, 2] == gt_max[gt_idx]
    return anchor_max, anchor_argmax, pairs[keep, :2].astype(np.int64)


def build_rpn_targets(anchors_px, gt_class_ids, gt_boxes, config, rng=None):
    """Anchor labels and box deltas for one image.

    Args:
        anchors_px: float [A, 4] (y1, x1, y2, x2) pixel anchors of the molded image
            (`anchors.pixel_anchors_for`, same order as the RPN outputs).
        gt_class_ids: int [N]; > 0 object, < 0 crowd region. N may be 0.
        gt_boxes: [N, 4] (y1, x1, y2, x2) pixel GT boxes of the molded image, y2/x2 exclusive.
        config: `MrcnnConfig` (rpn_train_anchors_per_image, rpn_bbox_std_dev).
        rng: `np.random.Generator` for the subsampling (a fresh unseeded one if None).

    Returns:
        rpn_match: int32 [A], 1 positive, -1 negative, 0 neutral.
        rpn_bbox: float32 [rpn_train_anchors_per_image, 4], (dy, dx, log dh, log dw) / rpn_bbox_std_dev
            of the positive anchors in anchor order, zero padded.
    """
    rng = np.random.default_rng() if rng is None else rng
    anchors_px = np.asarray(anchors_px, np.float64).reshape(-1, 4)
    gt_class_ids = np.asarray(gt_class_ids).reshape(-1)
    gt_boxes = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    if len(gt_class_ids) != len(gt_boxes):
        raise ValueError(f"build_rpn_targets: {len(gt_class_ids)} class ids but {len(gt_boxes)} boxes")
    per_image = int(config.rpn_train_anchors_per_image)
    n_anchors = len(anchors_px)
    rpn_match = np.zeros(n_anchors, np.int32)
    rpn_bbox = np.zeros((per_image, 4), np.float32)

    crowd = gt_class_ids < 0
    objects = gt_class_ids > 0
    not_near_crowd = np.ones(n_anchors, bool)
    if crowd.any():
        crowd_max, _, _ = anchor_gt_overlaps(anchors_px, gt_boxes[crowd])
        not_near_crowd = crowd_max < CROWD_IOU
    boxes = gt_boxes[objects]

    anchor_max, anchor_argmax, best_pairs = anchor_gt_overlaps(anchors_px, boxes)
    rpn_match[(anchor_max < NEGATIVE_IOU) & not_near_crowd] = -1
    # Each GT box's best anchor(s) positive: an anchor's own best GT may then differ from the GT it
    # was chosen for (matterport keeps the anchor's argmax GT for the delta target; so do we).
    rpn_match[best_pairs[:, 0]] = 1
    rpn_match[anchor_max >= POSITIVE_IOU] = 1

    positive = np.flatnonzero(rpn_match == 1)
    extra = len(positive) - per_image // 2
    if extra > 0:
        rpn_match[rng.choice(positive, extra, replace=False)] = 0
        positive = np.flatnonzero(rpn_match == 1)
    negative = np.flatnonzero(rpn_match == -1)
    extra = len(negative) - (per_image - len(positive))
    if extra > 0:
        rpn_match[rng.choice(negative, extra, replace=False)] = 0

    if len(positive):
        deltas = encode_boxes(anchors_px[positive], boxes[anchor_argmax[positive]], config.rpn_bbox_std_dev)
        rpn_bbox[: len(positive)] = deltas
    return rpn_match, rpn_bbox
