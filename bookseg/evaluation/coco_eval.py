"""COCO box and mask AP with pycocotools, plus the matterport-style mask AP@0.5 next to it.

Ground truth comes from `ImageRecord`s; predictions are the model's `detect` output per image:
dict(rois=int32 [n, 4] (y1, x1, y2, x2) original pixels, y2/x2 exclusive, class_ids=int32 [n]
(1..num_classes-1), scores=float32 [n], masks=bool [H, W, n]). Class id k is `class_names[k - 1]`
and is also the COCO category id. COCO image ids are 1..len(records) in record order, and the
predictions list must follow the same order.

COCO AP pools all detections of a category over the dataset, interpolates precision at 101 recall
points, keeps the `max_detections` best-scored detections per image and ignores crowd regions; the
matterport number averages per-image AP (see `matterport_ap.py`). The two are reported under
different names because they are not interchangeable.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from bookseg.data.records import ImageRecord, boxes_from_masks
from bookseg.evaluation.matterport_ap import mean_mask_ap

COCO_METRIC_KEYS = ("mask_ap", "mask_ap50", "mask_ap75", "box_ap", "box_ap50", "box_ap75")


def ground_truth(record: ImageRecord, class_names: Sequence[str]) -> dict:
    """Evaluation targets of one record.

    Instances whose mask has no pixel inside the image cannot be outlined by any model; they are
    left out with a warning naming the image and regions (counted, never silently).

    Args:
        record: the annotated image.
        class_names: class names; class id = index + 1.

    Returns:
        dict(rois=int32 [N, 4] (y1, x1, y2, x2) tight mask boxes, y2/x2 exclusive,
        class_ids=int32 [N], masks=bool [H, W, N], iscrowd=bool [N]).

    Raises:
        ValueError: an instance's class is not in `class_names` (names the file, image and region).
    """
    class_ids = record.class_ids({name: k + 1 for k, name in enumerate(class_names)})
    masks = record.masks()
    iscrowd = np.array([inst.iscrowd for inst in record.instances], bool)
    keep = masks.any(axis=(0, 1))
    if not keep.all():
        regions = [inst.region or f"instance {i}" for i, inst in enumerate(record.instances) if not keep[i]]
        warnings.warn(
            f"{record.where()}: {len(regions)} instance(s) with an empty mask left out of evaluation: "
            + ", ".join(regions),
            stacklevel=2,
        )
    masks = masks[..., keep]
    return {
        "rois": boxes_from_masks(masks),
        "class_ids": class_ids[keep],
        "masks": masks,
        "iscrowd": iscrowd.reshape(-1)[keep],
    }


def records_to_coco(records: Sequence[ImageRecord], class_names: Sequence[str]) -> dict:
    """COCO ground-truth dataset (JSON-serialisable) for `records`.

    Image ids are 1..len(records) in order; segmentations are compressed RLE with `counts` as str,
    `area` is the mask's pixel count and `bbox` the tight mask box [x, y, w, h].
    """
    dataset = _empty_dataset(class_names)
    for image_id, record in enumerate(records, start=1):
        _add_ground_truth(dataset, image_id, record, ground_truth(record, class_names))
    return dataset


def predictions_to_coco(image_ids: Sequence[int], predictions: Sequence[dict]) -> list[dict]:
    """COCO results (JSON-serialisable) for per-image `detect` outputs.

    Args:
        image_ids: COCO image id of each prediction entry (from `records_to_coco`).
        predictions: per image, dict(rois, class_ids, scores, masks) as described in the module doc.

    Returns:
        One dict per instance: image_id, category_id, bbox [x, y, w, h] from `rois`, score,
        segmentation (compressed RLE, `counts` as str).
    """
    if len(image_ids) != len(predictions):
        raise ValueError(f"{len(image_ids)} image ids for {len(predictions)} prediction entries")
    results = []
    for image_id, pred in zip(image_ids, predictions):
        rois, class_ids, scores, masks = _prediction_arrays(pred, f"image id {image_id}")
        rles = _encode(masks)
        for k in range(len(class_ids)):
            y1, x1, y2, x2 = (float(v) for v in rois[k])
            results.append(
                {
                    "image_id": int(image_id),
                    "category_id": int(class_ids[k]),
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": float(scores[k]),
                    "segmentation": rles[k],
                }
            )
    return results


def coco_metrics(
    records: Sequence[ImageRecord],
    predictions: Sequence[dict],
    class_names: Sequence[str],
    *,
    max_detections: int = 100,
) -> dict:
    """COCO mask and box AP (0.5:0.95, 0.5, 0.75; all areas) with pycocotools.

    Args:
        records: ground truth, one per image.
        predictions: `detect` output per image, in the order of `records`.
        class_names: class id = index + 1.
        max_detections: detections kept per image (COCO's maxDets; matterport's
            DETECTION_MAX_INSTANCES is 100 too).

    Returns:
        dict with `COCO_METRIC_KEYS`, floats in [0, 1]; all 0.0 when there is no prediction at all,
        NaN when there is no (non-crowd) ground-truth instance at all (AP undefined).
    """
    metrics = evaluate(records, predictions, class_names, max_detections=max_detections)
    return {key: metrics[key] for key in COCO_METRIC_KEYS}


def evaluate(
    records: Sequence[ImageRecord],
    predictions: Sequence[dict],
    class_names: Sequence[str],
    *,
    max_detections: int = 100,
) -> dict:
    """All evaluation numbers of a validation fold (see `FoldEvaluator.metrics`)."""
    if len(predictions) != len(records):
        raise ValueError(f"{len(predictions)} prediction entries for {len(records)} records")
    evaluator = FoldEvaluator(class_names, max_detections=max_detections)
    for record, prediction in zip(records, predictions):
        evaluator.add(record, prediction)
    return evaluator.metrics()


class FoldEvaluator:
    """Scores a validation fold one image at a time.

    `add` computes the image's matterport AP at once and keeps its ground truth and detections
    only as COCO RLEs, so the full-size masks of an image (100 detections x H x W) can be freed
    before the next one is detected; `metrics` runs pycocotools over everything added.
    """

    def __init__(self, class_names: Sequence[str], *, max_detections: int = 100):
        if max_detections < 1:
            raise ValueError(f"max_detections must be >= 1, got {max_detections}")
        self.class_names = list(class_names)
        self.max_detections = max_detections
        self.dataset = _empty_dataset(class_names)
        self.results: list[dict] = []
        self.matterport_aps: list[float] = []

    def add(self, record: ImageRecord, prediction: dict) -> None:
        """Score one image: `record` its ground truth, `prediction` its `detect` output."""
        masks = _prediction_arrays(prediction, record.where())[3]
        if masks.shape[:2] != (record.height, record.width):
            raise ValueError(
                f"{record.where()}: prediction masks are {masks.shape[:2]}, "
                f"the image is {(record.height, record.width)}"
            )
        image_id = len(self.dataset["images"]) + 1
        gt = ground_truth(record, self.class_names)
        matterport = mean_mask_ap([gt], [prediction], 0.5, image_ids=[record.image_id])
        self.matterport_aps.append(matterport["per_image"][0])
        _add_ground_truth(self.dataset, image_id, record, gt)
        self.results.extend(predictions_to_coco([image_id], [prediction]))

    def metrics(self) -> dict:
        """`coco_metrics` keys plus mask_ap50_matterport (mean per-image mask AP@0.5, NaN when every
        image lacks both ground truth and predictions), n_images, and n_images_no_gt_no_pred
        (images left out of the matterport mean)."""
        metrics = _coco_metrics(self.dataset, self.results, self.max_detections)
        evaluated = [ap for ap in self.matterport_aps if not math.isnan(ap)]
        metrics["mask_ap50_matterport"] = float(np.mean(evaluated)) if evaluated else math.nan
        metrics["n_images"] = len(self.matterport_aps)
        metrics["n_images_no_gt_no_pred"] = len(self.matterport_aps) - len(evaluated)
        return metrics


def write_json(path: str | Path, data, *, overwrite: bool = False) -> Path:
    """Write a COCO dataset or result list as JSON; refuses to replace a file unless `overwrite`."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def _coco_metrics(dataset: dict, results: list[dict], max_detections: int) -> dict:
    has_gt = any(not ann["iscrowd"] for ann in dataset["annotations"])
    if not has_gt:
        return {key: math.nan for key in COCO_METRIC_KEYS}
    if not results:
        # pycocotools' loadRes fails on an empty list; no detection means AP 0.
        return {key: 0.0 for key in COCO_METRIC_KEYS}
    metrics = {}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = dataset
        coco_gt.createIndex()
        for iou_type, prefix, drop in (("segm", "mask", "bbox"), ("bbox", "box", "segmentation")):
            # loadRes takes the area from the box when one is present, so each evaluation gets
            # only its own geometry; it also mutates the dicts, hence the copies.
            own = [{k: v for k, v in r.items() if k != drop} for r in results]
            coco_eval = COCOeval(coco_gt, coco_gt.loadRes(own), iou_type)
            coco_eval.params.maxDets = sorted({1, 10, max_detections})
            coco_eval.evaluate()
            coco_eval.accumulate()
            metrics.update(_summary(coco_eval, prefix, max_detections))
    return metrics


def _summary(coco_eval: COCOeval, prefix: str, max_detections: int) -> dict:
    """AP, AP50, AP75 over all areas from accumulated precision [T, R, K, A, M] (as `summarize`)."""
    params = coco_eval.params
    all_areas = params.areaRngLbl.index("all")
    precision = coco_eval.eval["precision"][:, :, :, all_areas, params.maxDets.index(max_detections)]

    def mean_defined(values: np.ndarray) -> float:
        defined = values[values > -1]  # -1 marks categories without ground truth
        return float(np.mean(defined)) if defined.size else math.nan

    thresholds = np.asarray(params.iouThrs)
    return {
        f"{prefix}_ap": mean_defined(precision),
        f"{prefix}_ap50": mean_defined(precision[np.isclose(thresholds, 0.5)]),
        f"{prefix}_ap75": mean_defined(precision[np.isclose(thresholds, 0.75)]),
    }


def _empty_dataset(class_names) -> dict:
    """A COCO dataset with the categories (id = class index + 1) and no image yet."""
    categories = [{"id": k + 1, "name": name} for k, name in enumerate(class_names)]
    return {"images": [], "annotations": [], "categories": categories}


def _add_ground_truth(dataset: dict, image_id: int, record: ImageRecord, gt: dict) -> None:
    """Append one image and its annotations (RLE, mask area, tight box) to a COCO `dataset`."""
    dataset["images"].append(
        {"id": image_id, "file_name": str(record.image_id), "width": record.width, "height": record.height}
    )
    annotations = dataset["annotations"]
    rles = _encode(gt["masks"])
    areas = mask_util.area(rles) if rles else []
    for k, rle in enumerate(rles):
        y1, x1, y2, x2 = (int(v) for v in gt["rois"][k])
        annotations.append(
            {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": int(gt["class_ids"][k]),
                "segmentation": rle,
                "area": float(areas[k]),
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "iscrowd": int(gt["iscrowd"][k]),
            }
        )


def _encode(masks: np.ndarray) -> list[dict]:
    """bool [H, W, n] masks -> n compressed RLEs with `counts` as str (JSON-ready)."""
    if masks.shape[-1] == 0:
        return []
    # pycocotools needs uint8 in Fortran order; C-ordered input would be read transposed.
    rles = mask_util.encode(np.asfortranarray(masks.astype(np.uint8)))
    return [{"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")} for rle in rles]


def _prediction_arrays(pred: dict, where: str):
    """Validated (rois [n, 4], class_ids [n], scores [n], masks bool [H, W, n]) of one prediction."""
    try:
        masks = np.asarray(pred["masks"])
        class_ids = np.asarray(pred["class_ids"]).reshape(-1)
        scores = np.asarray(pred["scores"]).reshape(-1)
        rois = np.asarray(pred["rois"]).reshape(-1, 4)
    except KeyError as error:
        raise ValueError(f"{where}: prediction has no {error} entry") from error
    if masks.ndim != 3:
        raise ValueError(f"{where}: prediction masks must be [H, W, n], got shape {masks.shape}")
    n = masks.shape[-1]
    if not (len(rois) == len(class_ids) == len(scores) == n):
        raise ValueError(
            f"{where}: prediction has {len(rois)} rois, {len(class_ids)} class ids, {len(scores)} scores "
            f"and {n} masks"
        )
    if n and class_ids.min() < 1:
        raise ValueError(
            f"{where}: prediction class ids must be >= 1 (0 is background), got {class_ids.min()}"
        )
    return rois, class_ids, scores, masks if masks.dtype == bool else masks > 0.5
