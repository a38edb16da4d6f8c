"""Matterport-style mask AP: per image, classes pooled, VOC all-point interpolation.

This reproduces matterport's `mrcnn.utils.compute_matches` / `compute_ap` / `compute_ap_range` so numbers stay comparable with what matterport users report, with
these fixes, all deliberate:

* An image with no ground truth used to divide by zero (matterport issue #1630). Here:
  no ground truth and no prediction -> AP is NaN ("nothing to measure"), and `mean_mask_ap` leaves
  the image out of the mean and counts it in `n_skipped`; no ground truth but some predictions ->
  AP 0 (every prediction is a false positive); ground truth but no prediction -> AP 0.
* Ties in score or IoU are broken by input order (stable sort), so results are deterministic.
* Two empty masks have IoU 0 (matterport produced NaN).
* `compute_ap_range` accepts a NumPy array of thresholds (matterport's `thresholds or ...` raised).
* matterport's `score_threshold` argument of `compute_matches` filtered on IoU, not score (a naming
  bug); it is not reproduced. Filter predictions by score before calling, if wanted.
* No `trim_zeros`: inputs are taken as given (no zero padding), so nothing is dropped silently.
* Indices returned by `compute_matches` refer to the predictions in the order they were given
  (matterport returned them in score order).

This differs from COCO AP (`coco_eval.py`): COCO pools detections over the whole dataset per
category, uses 101-point interpolation, caps detections per image and ignores crowd regions, so the
two numbers are not interchangeable; report both, named clearly.

Array conventions: masks bool [H, W, n] (other dtypes are binarised at 0.5 like matterport),
boxes int [n, 4] (y1, x1, y2, x2) in pixels with y2/x2 exclusive, class ids int [n] (0 = background
never appears), scores float [n].
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# Pixels per matrix-product chunk in `mask_iou`: bounds memory at chunk * n * 4 bytes per operand
# (about 26 MB for 100 masks), independent of the image size.
_IOU_CHUNK_PIXELS = 1 << 16

# matterport's default IoU range for `compute_ap_range`: 0.50, 0.55, ..., 0.95.
DEFAULT_IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)


def mask_iou(masks_a: np.ndarray, masks_b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of two mask stacks, computed with matrix products.

    Args:
        masks_a: [H, W, n_a] masks (bool, or numbers binarised at 0.5).
        masks_b: [H, W, n_b] masks of the same image size.

    Returns:
        float64 [n_a, n_b] IoU; a pair whose union is empty gets 0.
    """
    a = _as_bool_masks(masks_a, "masks_a")
    b = _as_bool_masks(masks_b, "masks_b")
    if a.shape[:2] != b.shape[:2]:
        raise ValueError(f"mask sizes differ: {a.shape[:2]} vs {b.shape[:2]}")
    n_a, n_b = a.shape[-1], b.shape[-1]
    if n_a == 0 or n_b == 0:
        return np.zeros((n_a, n_b), np.float64)
    flat_a = a.reshape(-1, n_a)
    flat_b = b.reshape(-1, n_b)
    # Only pixels covered by some mask contribute; books cover a fraction of most photos.
    covered = flat_a.any(axis=1) | flat_b.any(axis=1)
    flat_a, flat_b = flat_a[covered], flat_b[covered]
    inter = np.zeros((n_a, n_b), np.int64)
    for start in range(0, flat_a.shape[0], _IOU_CHUNK_PIXELS):
        chunk_a = flat_a[start : start + _IOU_CHUNK_PIXELS].astype(np.float32)
        chunk_b = flat_b[start : start + _IOU_CHUNK_PIXELS].astype(np.float32)
        # Per-chunk counts are <= 2**16, exact in float32; accumulate as integers.
        inter += np.rint(chunk_a.T @ chunk_b).astype(np.int64)
    area_a = flat_a.sum(axis=0, dtype=np.int64)
    area_b = flat_b.sum(axis=0, dtype=np.int64)
    union = (area_a[:, None] + area_b[None, :] - inter).astype(np.float64)
    return np.divide(inter, union, out=np.zeros_like(union), where=union > 0)


def compute_matches(
    gt_boxes: np.ndarray,
    gt_class_ids: np.ndarray,
    gt_masks: np.ndarray,
    pred_boxes: np.ndarray,
    pred_class_ids: np.ndarray,
    pred_scores: np.ndarray,
    pred_masks: np.ndarray,
    iou_threshold: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy matching of predictions to ground truth by mask IoU (matterport's rule).

    Predictions are visited by descending score. Each tries the still unmatched ground-truth
    instances by descending IoU, stops at the first IoU below `iou_threshold`, and matches the first
    one of the same class (a class mismatch moves on to the next ground truth).

    Args:
        gt_boxes: int [N, 4] (y1, x1, y2, x2); only checked for consistency (matching uses masks).
        gt_class_ids: int [N].
        gt_masks: bool [H, W, N].
        pred_boxes: int [M, 4] (y1, x1, y2, x2); only checked for consistency.
        pred_class_ids: int [M].
        pred_scores: float [M].
        pred_masks: bool [H, W, M].
        iou_threshold: minimum mask IoU of a match (IoU equal to it matches).

    Returns:
        gt_match: int64 [N], index of the prediction matched to each ground truth, or -1.
        pred_match: int64 [M], index of the ground truth matched to each prediction, or -1.
        overlaps: float64 [M, N] mask IoU. All indices follow the input order.
    """
    gt, pred = _checked(gt_boxes, gt_class_ids, gt_masks, pred_boxes, pred_class_ids, pred_scores, pred_masks)
    overlaps = mask_iou(pred["masks"], gt["masks"])
    gt_match, pred_match = _match(overlaps, gt["class_ids"], pred["class_ids"], pred["order"], iou_threshold)
    return gt_match, pred_match, overlaps


def compute_ap(
    gt_boxes: np.ndarray,
    gt_class_ids: np.ndarray,
    gt_masks: np.ndarray,
    pred_boxes: np.ndarray,
    pred_class_ids: np.ndarray,
    pred_scores: np.ndarray,
    pred_masks: np.ndarray,
    iou_threshold: float = 0.5,
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """Mask AP of one image at one IoU threshold (classes pooled, all-point interpolation).

    Arguments as in `compute_matches`.

    Returns:
        ap: float in [0, 1], or NaN when the image has neither ground truth nor predictions.
        precisions: float64 [M + 2], precision envelope by score rank, padded with 0 at both ends.
        recalls: float64 [M + 2], recall by score rank, padded with 0 in front and 1 at the end
            (all zeros before the final 1 when there is no ground truth).
        overlaps: float64 [M, N] mask IoU, predictions in input order.
    """
    gt, pred = _checked(gt_boxes, gt_class_ids, gt_masks, pred_boxes, pred_class_ids, pred_scores, pred_masks)
    overlaps = mask_iou(pred["masks"], gt["masks"])
    ap, precisions, recalls = _ap_from_overlaps(overlaps, gt, pred, iou_threshold)
    return ap, precisions, recalls, overlaps


def compute_ap_range(
    gt_boxes: np.ndarray,
    gt_class_ids: np.ndarray,
    gt_masks: np.ndarray,
    pred_boxes: np.ndarray,
    pred_class_ids: np.ndarray,
    pred_scores: np.ndarray,
    pred_masks: np.ndarray,
    iou_thresholds: Sequence[float] | np.ndarray | None = None,
) -> float:
    """Mean of `compute_ap` over IoU thresholds (default 0.50:0.95 in steps of 0.05).

    Mask IoUs are computed once and reused for every threshold.

    Args:
        iou_thresholds: list, tuple or ndarray of thresholds in (0, 1]; None for the default range.
        Other arguments as in `compute_matches`.

    Returns:
        The mean AP in [0, 1], or NaN when the image has neither ground truth nor predictions.
    """
    thresholds = DEFAULT_IOU_THRESHOLDS if iou_thresholds is None else np.atleast_1d(iou_thresholds)
    thresholds = np.asarray(thresholds, np.float64)
    if thresholds.size == 0 or np.any((thresholds <= 0) | (thresholds > 1)):
        raise ValueError(f"iou_thresholds must be a non-empty list of values in (0, 1], got {thresholds}")
    gt, pred = _checked(gt_boxes, gt_class_ids, gt_masks, pred_boxes, pred_class_ids, pred_scores, pred_masks)
    overlaps = mask_iou(pred["masks"], gt["masks"])
    return float(np.mean([_ap_from_overlaps(overlaps, gt, pred, t)[0] for t in thresholds]))


def mean_mask_ap(
    gt_list: Sequence[dict],
    pred_list: Sequence[dict],
    iou_threshold: float = 0.5,
    *,
    image_ids: Sequence[str] | None = None,
) -> dict:
    """Mean over images of the per-image mask AP (what matterport's samples call "mAP").

    Args:
        gt_list: per image, dict(rois=int [N, 4], class_ids=int [N], masks=bool [H, W, N]) and
            optionally iscrowd=bool [N]. Crowd instances are left out (matterport has no notion of
            them; COCO ignores them).
        pred_list: per image, the model's `detect` output: dict(rois=int32 [M, 4],
            class_ids=int32 [M], scores=float32 [M], masks=bool [H, W, M]).
        iou_threshold: mask IoU needed for a match.
        image_ids: names of the images, used in error messages (default: list positions).

    Returns:
        dict(ap=float mean over the evaluated images (NaN if none), n_images=number of images given,
        n_skipped=images without ground truth and without predictions (left out of the mean),
        per_image=list of per-image APs, NaN for the skipped ones).
    """
    if len(gt_list) != len(pred_list):
        raise ValueError(f"{len(gt_list)} ground-truth entries but {len(pred_list)} prediction entries")
    names = [str(i) for i in range(len(gt_list))] if image_ids is None else [str(i) for i in image_ids]
    if len(names) != len(gt_list):
        raise ValueError(f"{len(names)} image ids for {len(gt_list)} images")
    per_image = []
    for name, gt, pred in zip(names, gt_list, pred_list):
        keep = ~np.asarray(gt.get("iscrowd", np.zeros(len(gt["class_ids"]), bool)), bool)
        try:
            ap, _, _, _ = compute_ap(
                np.asarray(gt["rois"])[keep],
                np.asarray(gt["class_ids"])[keep],
                np.asarray(gt["masks"])[..., keep],
                pred["rois"],
                pred["class_ids"],
                pred["scores"],
                pred["masks"],
                iou_threshold,
            )
        except (KeyError, ValueError, IndexError) as error:
            raise ValueError(f'image "{name}": {error}') from error
        per_image.append(ap)
    evaluated = [ap for ap in per_image if not math.isnan(ap)]
    return {
        "ap": float(np.mean(evaluated)) if evaluated else math.nan,
        "n_images": len(per_image),
        "n_skipped": len(per_image) - len(evaluated),
        "per_image": per_image,
    }


def _ap_from_overlaps(
    overlaps: np.ndarray, gt: dict, pred: dict, iou_threshold: float
) -> tuple[float, np.ndarray, np.ndarray]:
    """AP, precision envelope and recalls for precomputed [M, N] overlaps (see `compute_ap`)."""
    n_gt = len(gt["class_ids"])
    _, pred_match = _match(overlaps, gt["class_ids"], pred["class_ids"], pred["order"], iou_threshold)
    hits = np.cumsum(pred_match[pred["order"]] > -1)
    precisions = hits / np.arange(1, len(hits) + 1)
    recalls = hits / n_gt if n_gt else np.zeros(len(hits))
    precisions = np.concatenate([[0.0], precisions, [0.0]])
    recalls = np.concatenate([[0.0], recalls, [1.0]])
    # Precision envelope: best precision at this or any higher recall.
    precisions = np.maximum.accumulate(precisions[::-1])[::-1]
    steps = np.flatnonzero(recalls[:-1] != recalls[1:]) + 1
    ap = float(np.sum((recalls[steps] - recalls[steps - 1]) * precisions[steps]))
    if n_gt == 0 and len(hits) == 0:
        ap = math.nan
    return ap, precisions, recalls


def _match(
    overlaps: np.ndarray,
    gt_class_ids: np.ndarray,
    pred_class_ids: np.ndarray,
    pred_order: np.ndarray,
    iou_threshold: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy matching (see `compute_matches`); returns (gt_match [N], pred_match [M])."""
    gt_match = np.full(overlaps.shape[1], -1, np.int64)
    pred_match = np.full(overlaps.shape[0], -1, np.int64)
    for i in pred_order:
        row = overlaps[i]
        for j in np.argsort(-row, kind="stable"):
            if gt_match[j] > -1:
                continue
            if row[j] < iou_threshold:
                break
            if pred_class_ids[i] == gt_class_ids[j]:
                gt_match[j] = i
                pred_match[i] = j
                break
    return gt_match, pred_match


def _checked(gt_boxes, gt_class_ids, gt_masks, pred_boxes, pred_class_ids, pred_scores, pred_masks):
    """Validate shapes and return (gt, pred) dicts; pred["order"] is the descending-score order."""
    gt = _instances("ground truth", gt_boxes, gt_class_ids, gt_masks)
    pred = _instances("prediction", pred_boxes, pred_class_ids, pred_masks)
    scores = np.asarray(pred_scores, np.float64).reshape(-1)
    if scores.shape[0] != len(pred["class_ids"]):
        raise ValueError(f"prediction: {scores.shape[0]} scores for {len(pred['class_ids'])} instances")
    if gt["masks"].shape[:2] != pred["masks"].shape[:2]:
        raise ValueError(
            f"prediction masks are {pred['masks'].shape[:2]} but ground-truth masks are {gt['masks'].shape[:2]}"
        )
    pred["order"] = np.argsort(-scores, kind="stable")
    return gt, pred


def _instances(what: str, boxes, class_ids, masks) -> dict:
    """Check that boxes [n, 4], class ids [n] and masks [H, W, n] agree on n."""
    masks = _as_bool_masks(masks, f"{what} masks")
    class_ids = np.asarray(class_ids).reshape(-1)
    boxes = np.asarray(boxes)
    n = masks.shape[-1]
    if boxes.shape != (n, 4) and not (n == 0 and boxes.size == 0):
        raise ValueError(f"{what}: boxes have shape {boxes.shape}, expected ({n}, 4) to match the masks")
    if class_ids.shape[0] != n:
        raise ValueError(f"{what}: {class_ids.shape[0]} class ids for {n} masks")
    return {"class_ids": class_ids, "masks": masks}


def _as_bool_masks(masks, what: str) -> np.ndarray:
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"{what} must be [H, W, n], got shape {masks.shape}")
    return masks if masks.dtype == bool else masks > 0.5
