"""COCO box/mask AP through pycocotools, on hand-made images and on real bookshelf_v5 annotations."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from bookseg.data.records import ImageRecord, Instance, boxes_from_masks, rasterize_polygon
from bookseg.evaluation.coco_eval import (
    COCO_METRIC_KEYS,
    FoldEvaluator,
    coco_metrics,
    evaluate,
    ground_truth,
    predictions_to_coco,
    records_to_coco,
    write_json,
)

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
CLASSES = ["book"]
H, W = 48, 64


def rect_mask(y1, x1, y2, x2, height=H, width=W):
    mask = np.zeros((height, width), bool)
    mask[y1:y2, x1:x2] = True
    return mask


def record(image_id, *rects, crowd=()):
    instances = [
        Instance("book", mask=rect_mask(*r), region=f"region {k}", iscrowd=k in crowd)
        for k, r in enumerate(rects)
    ]
    return ImageRecord(image_id, Path(f"/nowhere/{image_id}"), W, H, instances, source="test.json")


def perfect_predictions(records):
    """What a perfect model's `detect` returns: the ground truth, class 1, score 0.9."""
    preds = []
    for rec in records:
        masks = rec.masks()
        n = masks.shape[-1]
        preds.append(
            {
                "rois": boxes_from_masks(masks),
                "class_ids": np.ones(n, np.int32),
                "scores": np.full(n, 0.9, np.float32),
                "masks": masks,
            }
        )
    return preds


def shelf():
    return [
        record("a.jpg", (4, 4, 40, 12), (4, 14, 40, 22), (4, 24, 40, 34)),
        record("b.jpg", (10, 30, 44, 40)),
        record("c.jpg"),  # negative image
    ]


def test_records_to_coco_fields():
    dataset = records_to_coco(shelf(), CLASSES)
    assert [img["id"] for img in dataset["images"]] == [1, 2, 3]
    assert dataset["images"][0] == {"id": 1, "file_name": "a.jpg", "width": W, "height": H}
    assert dataset["categories"] == [{"id": 1, "name": "book"}]
    first = dataset["annotations"][0]
    assert first["image_id"] == 1 and first["category_id"] == 1 and first["iscrowd"] == 0
    assert first["bbox"] == [4, 4, 8, 36]  # x, y, w, h of rows 4..39, columns 4..11
    assert first["area"] == 8 * 36
    assert isinstance(first["segmentation"]["counts"], str) and first["segmentation"]["size"] == [H, W]
    assert [a["id"] for a in dataset["annotations"]] == [1, 2, 3, 4]
    json.dumps(dataset)  # serialisable as is


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools' decode on numpy 2
def test_rle_round_trip_is_not_transposed():
    from pycocotools import mask as mask_util

    rec = record("a.jpg", (3, 5, 9, 40))
    rle = records_to_coco([rec], CLASSES)["annotations"][0]["segmentation"]
    decoded = mask_util.decode({"size": rle["size"], "counts": rle["counts"].encode()})
    np.testing.assert_array_equal(decoded.astype(bool), rec.masks()[..., 0])


def test_predictions_to_coco_fields():
    preds = perfect_predictions(shelf())
    preds[0]["scores"] = np.array([0.9, 0.8, 0.7], np.float32)
    results = predictions_to_coco([1, 2, 3], preds)
    assert len(results) == 4
    assert results[0]["image_id"] == 1 and results[3]["image_id"] == 2
    assert results[0]["bbox"] == [4.0, 4.0, 8.0, 36.0]
    assert results[1]["score"] == pytest.approx(0.8)
    assert results[0]["category_id"] == 1
    assert isinstance(results[0]["segmentation"]["counts"], str)


def test_perfect_predictions_give_one_everywhere():
    records = shelf()
    metrics = evaluate(records, perfect_predictions(records), CLASSES)
    for key in (*COCO_METRIC_KEYS, "mask_ap50_matterport"):
        assert metrics[key] == pytest.approx(1.0), key
    assert metrics["n_images"] == 3 and metrics["n_images_no_gt_no_pred"] == 1


def shifted(preds, dx):
    out = []
    for pred in preds:
        out.append(dict(pred, rois=pred["rois"] + np.array([0, dx, 0, dx], np.int32)))
    return out


def test_shifted_boxes_reduce_box_ap_only():
    records = shelf()
    preds = perfect_predictions(records)
    # 1 px right: IoU 7/9 (8-px wide books) and 9/11 (10-px wide): all match up to IoU 0.75 only.
    metrics = coco_metrics(records, shifted(preds, 1), CLASSES)
    assert metrics["mask_ap"] == pytest.approx(1.0)
    assert metrics["box_ap50"] == pytest.approx(1.0) and metrics["box_ap75"] == pytest.approx(1.0)
    assert 0.5 < metrics["box_ap"] < 0.9
    # 6 px right: IoU 2/14 and 4/16, below every threshold.
    metrics = coco_metrics(records, shifted(preds, 6), CLASSES)
    assert metrics["mask_ap"] == pytest.approx(1.0)
    assert metrics["box_ap"] == 0.0 and metrics["box_ap50"] == 0.0


def test_partial_detection_values():
    # 4 GT books, 2 found exactly: recall reaches 0.5 at precision 1 -> COCO AP = 51/101
    # (the 101 recall points 0.00..0.50 have precision 1, the rest 0).
    records = shelf()
    preds = perfect_predictions(records)
    for key in ("rois", "class_ids", "scores"):
        preds[0][key] = preds[0][key][:1]
    preds[0]["masks"] = preds[0]["masks"][..., :1]
    metrics = evaluate(records, preds, CLASSES)
    assert metrics["mask_ap"] == pytest.approx(51 / 101)
    assert metrics["box_ap75"] == pytest.approx(51 / 101)
    # matterport: image a finds 1 of 3 -> 1/3, image b -> 1, image c skipped.
    assert metrics["mask_ap50_matterport"] == pytest.approx((1 / 3 + 1) / 2)


def test_fold_evaluator_keeps_no_reference_to_the_masks_it_scored():
    """Scoring image by image gives `evaluate`'s numbers, and the caller may free or reuse each
    prediction's full-size masks right after `add` (what keeps evaluation memory flat)."""
    records = shelf()
    preds = perfect_predictions(records)
    preds[0]["masks"] = preds[0]["masks"][..., :1].copy()
    for key in ("rois", "class_ids", "scores"):
        preds[0][key] = preds[0][key][:1]
    expected = evaluate(records, preds, CLASSES)
    evaluator = FoldEvaluator(CLASSES)
    for rec, pred in zip(records, preds):
        evaluator.add(rec, pred)
        pred["masks"][:] = False  # overwritten after scoring
    assert evaluator.metrics() == expected
    assert expected["mask_ap"] == pytest.approx(51 / 101) and expected["n_images"] == 3
    with pytest.raises(ValueError, match="max_detections must be >= 1"):
        FoldEvaluator(CLASSES, max_detections=0)


def test_no_predictions_give_zero():
    records = shelf()
    empty = [
        {
            "rois": np.zeros((0, 4), np.int32),
            "class_ids": np.zeros(0, np.int32),
            "scores": np.zeros(0, np.float32),
            "masks": np.zeros((H, W, 0), bool),
        }
        for _ in records
    ]
    metrics = evaluate(records, empty, CLASSES)
    for key in (*COCO_METRIC_KEYS, "mask_ap50_matterport"):
        assert metrics[key] == 0.0, key


def test_no_ground_truth_anywhere_is_nan():
    records = [record("c.jpg")]
    metrics = coco_metrics(records, perfect_predictions(records), CLASSES)
    assert all(math.isnan(metrics[key]) for key in COCO_METRIC_KEYS)


def test_crowd_regions_are_ignored():
    records = [record("a.jpg", (4, 4, 40, 12), (4, 14, 40, 22), crowd=(1,))]
    preds = perfect_predictions([record("a.jpg", (4, 4, 40, 12))])
    metrics = evaluate(records, preds, CLASSES)
    assert metrics["mask_ap"] == pytest.approx(1.0) and metrics["mask_ap50_matterport"] == 1.0
    assert records_to_coco(records, CLASSES)["annotations"][1]["iscrowd"] == 1


def test_uint8_masks_and_two_classes():
    rec = ImageRecord(
        "a.jpg",
        Path("a.jpg"),
        W,
        H,
        [Instance("book", mask=rect_mask(0, 0, 20, 10)), Instance("box", mask=rect_mask(0, 20, 20, 30))],
    )
    pred = perfect_predictions([rec])[0]
    pred["masks"] = pred["masks"].astype(np.uint8)
    pred["class_ids"] = np.array([1, 2], np.int32)
    assert coco_metrics([rec], [pred], ["book", "box"])["mask_ap"] == pytest.approx(1.0)
    pred["class_ids"] = np.array([2, 1], np.int32)  # classes swapped: nothing matches
    assert coco_metrics([rec], [pred], ["book", "box"])["mask_ap"] == 0.0


def test_bad_input_errors_name_the_image():
    records = shelf()
    preds = perfect_predictions(records)
    preds[1]["masks"] = preds[1]["masks"][:10]
    with pytest.raises(ValueError, match='image "b.jpg"'):
        coco_metrics(records, preds, CLASSES)
    with pytest.raises(ValueError, match="2 prediction entries for 3 records"):
        coco_metrics(records, preds[:2], CLASSES)
    with pytest.raises(ValueError, match=r'test.json: image "a.jpg", region 0: class "book" is not one of'):
        ground_truth(records[0], ["cover"])


def test_empty_ground_truth_mask_is_left_out_with_warning():
    rec = record("a.jpg", (4, 4, 40, 12))
    rec.instances.append(
        Instance(
            "book", polygon=np.array([[-30.0, -30], [-20, -30], [-20, -20]]), region="region 7 (polygon)"
        )
    )
    with pytest.warns(UserWarning, match=r'"a.jpg": 1 instance\(s\) with an empty mask .*region 7'):
        gt = ground_truth(rec, CLASSES)
    assert gt["masks"].shape == (H, W, 1) and gt["class_ids"].tolist() == [1]


def test_pycocotools_reads_written_json(tmp_path):
    records = shelf()
    preds = perfect_predictions(records)
    preds[0]["scores"] = np.array([0.9, 0.3, 0.8], np.float32)
    gt_path = write_json(tmp_path / "gt.json", records_to_coco(records, CLASSES))
    res_path = write_json(tmp_path / "res.json", predictions_to_coco([1, 2, 3], preds))
    with pytest.raises(FileExistsError):
        write_json(gt_path, {})
    coco_gt = COCO(str(gt_path))
    coco_dt = coco_gt.loadRes(str(res_path))
    assert len(coco_gt.getAnnIds()) == 4 and len(coco_dt.getAnnIds()) == 4
    coco_eval = COCOeval(coco_gt, coco_dt, "segm")
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
    assert coco_eval.stats[0] == pytest.approx(1.0)


def load_bookshelf_valid():
    """Records of bookshelf_v5/valid straight from its COCO file (polygons rasterised here)."""
    root = DATA / "bookshelf_v5" / "valid"
    coco = json.loads((root / "annotations.json").read_text())
    by_image = {img["id"]: [] for img in coco["images"]}
    for ann in coco["annotations"]:
        by_image[ann["image_id"]].append(ann)
    records = []
    for img in coco["images"]:
        instances = []
        for ann in by_image[img["id"]]:
            mask = np.zeros((img["height"], img["width"]), bool)
            for poly in ann["segmentation"]:
                mask |= rasterize_polygon(np.reshape(poly, (-1, 2)), img["height"], img["width"])
            instances.append(Instance("book", mask=mask, region=f"annotation {ann['id']}"))
        records.append(
            ImageRecord(
                img["file_name"],
                root / img["file_name"],
                img["width"],
                img["height"],
                instances,
                source=str(root / "annotations.json"),
            )
        )
    return records


def test_real_annotations_perfect_and_degraded():
    records = load_bookshelf_valid()
    assert len(records) == 23
    preds = perfect_predictions(records)
    metrics = evaluate(records, preds, CLASSES)
    for key in (*COCO_METRIC_KEYS, "mask_ap50_matterport"):
        assert metrics[key] == pytest.approx(1.0), key
    # One false positive per image, ranked first, must lower every AP without zeroing it.
    for pred, rec in zip(preds, records):
        fp = np.zeros((rec.height, rec.width, 1), bool)
        fp[:8, :8] = True
        pred["masks"] = np.concatenate([fp, pred["masks"]], axis=-1)
        pred["rois"] = np.concatenate([[[0, 0, 8, 8]], pred["rois"]]).astype(np.int32)
        pred["class_ids"] = np.concatenate([[1], pred["class_ids"]]).astype(np.int32)
        pred["scores"] = np.concatenate([[0.99], pred["scores"]]).astype(np.float32)
    worse = evaluate(records, preds, CLASSES)
    for key in (*COCO_METRIC_KEYS, "mask_ap50_matterport"):
        assert 0.0 < worse[key] < 1.0, key


def test_max_detections_caps_detections_per_image():
    # Keeping 1 detection per image finds 2 of the 4 books at precision 1: AP = 51/101.
    records = shelf()
    metrics = coco_metrics(records, perfect_predictions(records), CLASSES, max_detections=1)
    assert metrics["mask_ap"] == pytest.approx(51 / 101) and metrics["box_ap50"] == pytest.approx(51 / 101)
