"""Exact best-anchor IoU and RPN positives per ground-truth box, without the full IoU matrix.

The anchors of one level and one ratio are boxes of a single size whose centres sit on a regular
grid (`bookseg.mrcnn.anchors.level_anchors`). For such boxes the intersection with a ground-truth
box factorises into a height and a width term, each a non-increasing function of the distance
between the two centres along its axis. So the anchor of that size with the largest IoU is the one
whose centre is the grid point nearest the box centre (row and column independently), and the
anchors that can reach a given IoU lie in a small window of grid cells around it. Both are found in
O(boxes x levels x ratios), instead of O(boxes x anchors).

Anchor boxes and IoUs are computed with the same floating-point formulas as
`bookseg.mrcnn.anchors.level_anchors` and `bookseg.mrcnn.rpn_targets.anchor_gt_overlaps`, so ties
and threshold decisions match the training targets.

Boxes are (y1, x1, y2, x2) pixels of the molded (resized and padded) network input.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bookseg.mrcnn.anchors import backbone_shapes
from bookseg.mrcnn.rpn_targets import POSITIVE_IOU

# Boxes handled per block when enumerating candidate anchors (bounds memory).
_BLOCK = 512
# Candidate windows are widened by this many pixels so rounding never drops an anchor; the exact
# IoU test afterwards decides.
_SLACK = 1e-6


@dataclass(frozen=True)
class AnchorGrid:
    """The anchors of one molded image size, described per pyramid level.

    Attributes:
        scales: anchor side (sqrt of area) in pixels per level.
        ratios: width / height of the anchors (matterport convention), the same on every level.
        steps: distance in pixels between neighbouring anchor centres per level
            (feature stride x anchor stride).
        shapes: (rows, cols) of anchor centres per level; centre (i, j) is (i * step, j * step).
    """

    scales: tuple[float, ...]
    ratios: tuple[float, ...]
    steps: tuple[int, ...]
    shapes: tuple[tuple[int, int], ...]

    @classmethod
    def for_config(cls, config, image_shape, scales=None, ratios=None) -> AnchorGrid:
        """Grid of `config`'s anchors on a molded image of `image_shape` (H, W[, C]).

        `scales` / `ratios` replace the config's anchor scales / ratios when given.
        """
        anchor_stride = int(config.rpn_anchor_stride)
        strides = [int(s) for s in config.backbone_strides]
        shapes = []
        for rows, cols in backbone_shapes(image_shape[:2], strides):
            shapes.append((len(range(0, rows, anchor_stride)), len(range(0, cols, anchor_stride))))
        return cls(
            scales=tuple(float(s) for s in (config.rpn_anchor_scales if scales is None else scales)),
            ratios=tuple(float(r) for r in (config.rpn_anchor_ratios if ratios is None else ratios)),
            steps=tuple(s * anchor_stride for s in strides),
            shapes=tuple(shapes),
        )

    @property
    def level_offsets(self) -> np.ndarray:
        """int64 [levels + 1]: index of each level's first anchor in the concatenated anchor list."""
        counts = [rows * cols * len(self.ratios) for rows, cols in self.shapes]
        return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    @property
    def num_anchors(self) -> int:
        return int(self.level_offsets[-1])

    def anchor_size(self, scale: float, ratio: float) -> tuple[float, float]:
        """(height, width) in pixels of an anchor, as `level_anchors` computes them."""
        ratio = np.float64(ratio)
        return float(scale / np.sqrt(ratio)), float(scale * np.sqrt(ratio))

    def boxes(self) -> np.ndarray:
        """All anchors, float64 [num_anchors, 4] pixels, in `pixel_anchors_for` order (for tests)."""
        out = []
        for scale, step, (rows, cols) in zip(self.scales, self.steps, self.shapes):
            cy, cx = np.meshgrid(np.arange(rows) * step, np.arange(cols) * step, indexing="ij")
            cy, cx = cy.reshape(-1, 1), cx.reshape(-1, 1)
            h = scale / np.sqrt(np.asarray(self.ratios, np.float64))
            w = scale * np.sqrt(np.asarray(self.ratios, np.float64))
            out.append(np.stack([cy - 0.5 * h, cx - 0.5 * w, cy + 0.5 * h, cx + 0.5 * w], -1).reshape(-1, 4))
        return np.concatenate(out)


def _iou(y1, x1, y2, x2, gt: np.ndarray, gt_area: np.ndarray) -> np.ndarray:
    """IoU of anchors (coordinate arrays) with the aligned rows of `gt`, as `anchor_gt_overlaps`."""
    inter = np.minimum(y2, gt[:, 2]) - np.maximum(y1, gt[:, 0])
    np.maximum(inter, 0, out=inter)
    width = np.minimum(x2, gt[:, 3]) - np.maximum(x1, gt[:, 1])
    np.maximum(width, 0, out=width)
    inter *= width
    union = (y2 - y1) * (x2 - x1) + gt_area - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _gt_area(gt: np.ndarray) -> np.ndarray:
    return np.clip(gt[:, 2] - gt[:, 0], 0, None) * np.clip(gt[:, 3] - gt[:, 1], 0, None)


def best_iou_one_shape(gt_boxes: np.ndarray, height: float, width: float, step: int, shape) -> np.ndarray:
    """Best IoU of each box with anchors of one size (height x width px) on one centre grid.

    Args:
        gt_boxes: float [M, 4] (y1, x1, y2, x2) pixels.
        height, width: anchor size in pixels.
        step: pixels between neighbouring anchor centres.
        shape: (rows, cols) of anchor centres; centre (i, j) is at (i * step, j * step).

    Returns:
        float64 [M]: the largest IoU over those anchors (0 for boxes no anchor touches).
    """
    gt = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    rows = np.clip(np.round((gt[:, 0] + gt[:, 2]) / (2 * step)), 0, shape[0] - 1)
    cols = np.clip(np.round((gt[:, 1] + gt[:, 3]) / (2 * step)), 0, shape[1] - 1)
    cy, cx = rows * step, cols * step
    return _iou(cy - 0.5 * height, cx - 0.5 * width, cy + 0.5 * height, cx + 0.5 * width, gt, _gt_area(gt))


def best_anchor_iou(gt_boxes: np.ndarray, grid: AnchorGrid) -> np.ndarray:
    """Largest IoU of each box with any anchor of `grid`: float64 [M] (exact, see module docstring)."""
    gt = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    best = np.zeros(len(gt), np.float64)
    for scale, step, shape in zip(grid.scales, grid.steps, grid.shapes):
        for ratio in grid.ratios:
            height, width = grid.anchor_size(scale, ratio)
            np.maximum(best, best_iou_one_shape(gt, height, width, step, shape), out=best)
    return best


def _candidate_pairs(gt: np.ndarray, threshold: np.ndarray, grid: AnchorGrid):
    """Every (box, anchor) pair of one block with IoU >= the box's threshold.

    Returns:
        box index int64 [P] (into `gt`), anchor index int64 [P] (grid order), IoU float64 [P].
    """
    gt_area = _gt_area(gt)
    gh, gw = gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1]
    cy, cx = (gt[:, 0] + gt[:, 2]) / 2, (gt[:, 1] + gt[:, 3]) / 2
    offsets = grid.level_offsets
    n_ratios = len(grid.ratios)
    found_box, found_anchor, found_iou = [], [], []
    for level, (scale, step, (rows, cols)) in enumerate(zip(grid.scales, grid.steps, grid.shapes)):
        for r, ratio in enumerate(grid.ratios):
            ah, aw = grid.anchor_size(scale, ratio)
            # IoU >= t needs intersection >= t * max(areas); the width overlap is at most
            # min(widths), so the height overlap must reach t * max(areas) / min(widths) (and vice versa).
            need = threshold * np.maximum(ah * aw, gt_area)
            need_h = need / np.minimum(aw, gw)
            need_w = need / np.minimum(ah, gh)
            ok = (need_h <= np.minimum(ah, gh)) & (need_w <= np.minimum(aw, gw)) & (threshold > 0)
            reach_y = (ah + gh) / 2 - need_h + _SLACK
            reach_x = (aw + gw) / 2 - need_w + _SLACK
            r_lo = np.maximum(np.ceil((cy - reach_y) / step), 0)
            r_hi = np.minimum(np.floor((cy + reach_y) / step), rows - 1)
            c_lo = np.maximum(np.ceil((cx - reach_x) / step), 0)
            c_hi = np.minimum(np.floor((cx + reach_x) / step), cols - 1)
            n_r = np.where(ok, np.maximum(r_hi - r_lo + 1, 0), 0).astype(np.int64)
            n_c = np.where(ok, np.maximum(c_hi - c_lo + 1, 0), 0).astype(np.int64)
            counts = n_r * n_c
            total = int(counts.sum())
            if total == 0:
                continue
            box = np.repeat(np.arange(len(gt)), counts)
            local = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
            row = r_lo[box].astype(np.int64) + local // n_c[box]
            col = c_lo[box].astype(np.int64) + local % n_c[box]
            ay, ax = (row * step).astype(np.float64), (col * step).astype(np.float64)
            g = gt[box]
            iou = _iou(ay - 0.5 * ah, ax - 0.5 * aw, ay + 0.5 * ah, ax + 0.5 * aw, g, gt_area[box])
            keep = iou >= threshold[box]
            found_box.append(box[keep])
            found_anchor.append(offsets[level] + (row[keep] * cols + col[keep]) * n_ratios + r)
            found_iou.append(iou[keep])
    if not found_box:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64)
    return np.concatenate(found_box), np.concatenate(found_anchor), np.concatenate(found_iou)


@dataclass
class PositiveAnchors:
    """RPN positives per ground-truth box (matterport's rule, `bookseg.mrcnn.rpn_targets`).

    An anchor is positive when its largest IoU over the image's boxes is >= 0.7 (it then belongs
    to that box), or when it is a box's best anchor (all ties), whatever the IoU.

    Attributes:
        best_iou: float64 [M] largest IoU of each box with any anchor.
        per_box: int64 [M] positive anchors belonging to each box (its IoU >= 0.7 anchors that no
            other box overlaps more, plus its best anchors); 0 for a box no anchor touches.
        per_image: int64 [num_images] distinct positive anchors per image, before the training cap
            of rpn_train_anchors_per_image / 2.
    """

    best_iou: np.ndarray
    per_box: np.ndarray
    per_image: np.ndarray


def positive_anchors(
    gt_boxes: np.ndarray, image_index: np.ndarray, grid: AnchorGrid, num_images: int | None = None
) -> PositiveAnchors:
    """Count the RPN positive anchors of every box of many images that share one anchor grid.

    Args:
        gt_boxes: float [M, 4] (y1, x1, y2, x2) molded pixels; crowd boxes must be left out.
        image_index: int [M], which image each box belongs to (boxes of one image compete for
            anchors: an anchor with IoU >= 0.7 to two boxes belongs to the one it overlaps more).
        grid: the anchors.
        num_images: length of `per_image` (default: max(image_index) + 1).

    Returns:
        `PositiveAnchors`.
    """
    gt = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    image_index = np.asarray(image_index, np.int64).reshape(-1)
    if len(image_index) != len(gt):
        raise ValueError(f"positive_anchors: {len(gt)} boxes but {len(image_index)} image indices")
    n_images = int(num_images if num_images is not None else (image_index.max() + 1 if len(gt) else 0))
    best = best_anchor_iou(gt, grid)
    # A hair below min(0.7, best) so the best anchors (and exact 0.7 hits) are always enumerated.
    threshold = np.minimum(POSITIVE_IOU, best) * (1 - 1e-9)
    boxes, anchors, ious = [], [], []
    for start in range(0, len(gt), _BLOCK):
        b, a, iou = _candidate_pairs(gt[start : start + _BLOCK], threshold[start : start + _BLOCK], grid)
        boxes.append(b + start)
        anchors.append(a)
        ious.append(iou)
    box = np.concatenate(boxes) if boxes else np.zeros(0, np.int64)
    anchor = np.concatenate(anchors) if anchors else np.zeros(0, np.int64)
    iou = np.concatenate(ious) if ious else np.zeros(0, np.float64)

    best_exact = np.zeros(len(gt), np.float64)
    np.maximum.at(best_exact, box, iou)
    is_best = (iou == best_exact[box]) & (iou > 0)

    # Anchors with IoU >= 0.7 belong to the box of their image they overlap most (first on ties).
    strong = np.flatnonzero(iou >= POSITIVE_IOU)
    owner = np.zeros(len(iou), bool)
    if strong.size:
        key = image_index[box[strong]] * grid.num_anchors + anchor[strong]
        order = np.lexsort((box[strong], -iou[strong], key))
        first = np.ones(order.size, bool)
        first[1:] = key[order][1:] != key[order][:-1]
        owner[strong[order[first]]] = True
    positive = is_best | owner

    per_box = np.bincount(box[positive], minlength=len(gt)).astype(np.int64)
    image_anchor = np.unique(image_index[box[positive]] * grid.num_anchors + anchor[positive])
    per_image = np.bincount(image_anchor // max(grid.num_anchors, 1), minlength=n_images).astype(np.int64)
    return PositiveAnchors(best_iou=best_exact, per_box=per_box, per_image=per_image[:n_images])
