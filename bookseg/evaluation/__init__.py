"""Evaluation: matterport-style per-image mask AP and COCO box/mask AP (pycocotools)."""

from bookseg.evaluation.coco_eval import (
    coco_metrics,
    evaluate,
    ground_truth,
    predictions_to_coco,
    records_to_coco,
    write_json,
)
from bookseg.evaluation.matterport_ap import (
    compute_ap,
    compute_ap_range,
    compute_matches,
    mask_iou,
    mean_mask_ap,
)

__all__ = [
    "coco_metrics",
    "compute_ap",
    "compute_ap_range",
    "compute_matches",
    "evaluate",
    "ground_truth",
    "mask_iou",
    "mean_mask_ap",
    "predictions_to_coco",
    "records_to_coco",
    "write_json",
]
