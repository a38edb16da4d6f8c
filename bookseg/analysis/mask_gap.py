"""Where masks fall behind boxes: each book's best-box detection, scored by box and by mask.

Mask AP50 below box AP50 means some books are found (a detection's box overlaps the book's box at
IoU >= 0.5) whose predicted mask misses the book's mask. `match_books` pairs every ground-truth book
with the detection whose box overlaps its box most and records both IoUs of that one detection, and
the book's fill (its mask area over its box area: about 1 for an upright book, low for a thin tilted
one). `MaskGap.table` then shows, per fill band, how often the box is found and how often the same
detection's mask also is: the bands where the second falls far below the first are the books the
mask head does not outline.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bookseg.data.records import boxes_from_masks

FILL_BANDS = ((0.0, 0.4), (0.4, 0.6), (0.6, 0.8), (0.8, 1.01))


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every pair of pixel boxes: float64 [len(a), len(b)]; boxes [n, 4] (y1, x1, y2, x2), y2/x2 exclusive."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every pair of masks: float64 [Na, Nb]; masks bool [H, W, Na] and [H, W, Nb] of one image."""
    height, width = a.shape[:2]
    a = a.reshape(height * width, a.shape[2]).astype(np.float32)
    b = b.reshape(height * width, b.shape[2]).astype(np.float32)
    inter = (a.T @ b).astype(np.float64)
    union = a.sum(axis=0)[:, None] + b.sum(axis=0)[None, :] - inter
    return inter / np.maximum(union, 1e-9)


@dataclass
class MaskGap:
    """One entry per ground-truth book (all arrays [N]).

    Attributes:
        fill: the book's mask area / its box area.
        box_iou: IoU of the book's box with the best-overlapping detection box (0 without detections).
        mask_iou: IoU of the book's mask with that same detection's mask.
    """

    fill: np.ndarray = field(default_factory=lambda: np.zeros(0))
    box_iou: np.ndarray = field(default_factory=lambda: np.zeros(0))
    mask_iou: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def extend(self, other: MaskGap) -> MaskGap:
        return MaskGap(
            *(np.concatenate([getattr(self, k), getattr(other, k)]) for k in ("fill", "box_iou", "mask_iou"))
        )

    def rows(self, threshold: float = 0.5) -> list[dict]:
        """Per fill band: books, share whose box is found, share whose mask is found by the same
        detection, and among found boxes the share with the mask found and the median mask IoU."""
        out = []
        for low, high in FILL_BANDS:
            band = (self.fill >= low) & (self.fill < high)
            found = band & (self.box_iou >= threshold)
            out.append(
                {
                    "fill": f"{low:.1f}-{min(high, 1.0):.1f}",
                    "books": int(band.sum()),
                    "box_found": float(np.mean(self.box_iou[band] >= threshold))
                    if band.any()
                    else float("nan"),
                    "mask_found": float(np.mean(self.mask_iou[band] >= threshold))
                    if band.any()
                    else float("nan"),
                    "mask_found_given_box": float(np.mean(self.mask_iou[found] >= threshold))
                    if found.any()
                    else float("nan"),
                    "median_mask_iou_given_box": float(np.median(self.mask_iou[found]))
                    if found.any()
                    else float("nan"),
                }
            )
        return out

    def table(self, threshold: float = 0.5) -> str:
        """Markdown table of `rows`."""
        lines = [
            "| book fill | books | box found | mask found | mask found when box found | median mask IoU when box found |",
            "|---|---|---|---|---|---|",
        ]
        for r in self.rows(threshold):
            lines.append(
                f"| {r['fill']} | {r['books']} | {r['box_found']:.2f} | {r['mask_found']:.2f} | "
                f"{r['mask_found_given_box']:.2f} | {r['median_mask_iou_given_box']:.2f} |"
            )
        return "\n".join(lines)


def match_books(gt_masks: np.ndarray, pred_boxes: np.ndarray, pred_masks: np.ndarray) -> MaskGap:
    """Pair each ground-truth book of one image with its best-box detection.

    Args:
        gt_masks: bool [H, W, N] ground-truth masks in photo pixels.
        pred_boxes: int [M, 4] detection boxes (y1, x1, y2, x2) in photo pixels, y2/x2 exclusive (`detect`'s `rois`).
        pred_masks: bool [H, W, M] detection masks (`detect`'s `masks`).

    Returns:
        MaskGap with N entries (books with an empty mask are left out).
    """
    gt_masks = gt_masks[..., gt_masks.any(axis=(0, 1))]
    gt_boxes = boxes_from_masks(gt_masks)
    fill = gt_masks.sum(axis=(0, 1)) / np.maximum(np.prod(gt_boxes[:, 2:] - gt_boxes[:, :2], axis=1), 1)
    count = gt_masks.shape[2]
    if pred_masks.shape[2] == 0:
        return MaskGap(fill.astype(np.float64), np.zeros(count), np.zeros(count))
    boxes = box_iou(gt_boxes, pred_boxes)
    best = np.argmax(boxes, axis=1)
    rows = np.arange(count)
    masks = mask_iou(gt_masks, pred_masks)
    return MaskGap(fill.astype(np.float64), boxes[rows, best], masks[rows, best])
