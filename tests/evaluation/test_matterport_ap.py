"""Matterport-style mask AP on hand-made cases whose answers are worked out in the comments."""

import math

import numpy as np
import pytest

from bookseg.data.records import boxes_from_masks
from bookseg.evaluation.matterport_ap import (
    compute_ap,
    compute_ap_range,
    compute_matches,
    mask_iou,
    mean_mask_ap,
)

H, W = 40, 60


def rect_masks(*rects, height=H, width=W):
    """bool [H, W, n] masks from (y1, x1, y2, x2) rectangles, y2/x2 exclusive."""
    masks = np.zeros((height, width, len(rects)), bool)
    for k, (y1, x1, y2, x2) in enumerate(rects):
        masks[y1:y2, x1:x2, k] = True
    return masks


def instances(*rects, class_ids=None, scores=None):
    """A detect-style dict for rectangles (class 1 and decreasing scores unless given)."""
    masks = rect_masks(*rects)
    n = len(rects)
    return {
        "rois": boxes_from_masks(masks),
        "class_ids": np.asarray(class_ids if class_ids is not None else [1] * n, np.int32),
        "scores": np.asarray(scores if scores is not None else np.linspace(0.9, 0.5, n), np.float32),
        "masks": masks,
    }


def ap_of(gt, pred, iou_threshold=0.5):
    return compute_ap(
        gt["rois"],
        gt["class_ids"],
        gt["masks"],
        pred["rois"],
        pred["class_ids"],
        pred["scores"],
        pred["masks"],
        iou_threshold,
    )


BOOK_A = (0, 0, 10, 10)  # 100 px
BOOK_B = (0, 20, 10, 30)
BOOK_C = (20, 0, 30, 10)
NOWHERE = (30, 40, 40, 50)  # overlaps no book


def test_mask_iou_matches_hand_counts():
    # A is 10x10; the second mask covers the right half of A plus 5x10 outside: inter 50, union 150.
    a = rect_masks(BOOK_A)
    b = rect_masks((0, 5, 10, 15), BOOK_B)
    iou = mask_iou(a, b)
    assert iou.shape == (1, 2) and iou.dtype == np.float64
    np.testing.assert_allclose(iou, [[50 / 150, 0.0]])


def test_mask_iou_empty_union_is_zero_and_sizes_must_agree():
    empty = np.zeros((H, W, 1), bool)
    assert mask_iou(empty, empty)[0, 0] == 0.0
    assert mask_iou(empty, np.zeros((H, W, 0), bool)).shape == (1, 0)
    with pytest.raises(ValueError, match="mask sizes differ"):
        mask_iou(empty, np.zeros((H + 1, W, 1), bool))


def test_mask_iou_binarises_float_masks_at_half():
    soft = rect_masks(BOOK_A).astype(np.float32) * 0.6
    soft[0, 0, 0] = 0.4  # below 0.5: not in the mask
    assert mask_iou(soft, rect_masks(BOOK_A))[0, 0] == pytest.approx(99 / 100)


def test_mask_iou_large_image_many_instances_matches_loop():
    rng = np.random.default_rng(0)
    a = rng.random((300, 400, 7)) < 0.3
    b = rng.random((300, 400, 5)) < 0.3
    expected = np.array(
        [[(a[..., i] & b[..., j]).sum() / (a[..., i] | b[..., j]).sum() for j in range(5)] for i in range(7)]
    )
    np.testing.assert_allclose(mask_iou(a, b), expected, rtol=0, atol=1e-12)


def test_perfect_predictions_give_ap_one():
    gt = instances(BOOK_A, BOOK_B, BOOK_C)
    ap, precisions, recalls, overlaps = ap_of(gt, gt)
    assert ap == 1.0
    np.testing.assert_allclose(recalls, [0, 1 / 3, 2 / 3, 1, 1])
    np.testing.assert_allclose(precisions, [1, 1, 1, 1, 0])
    np.testing.assert_allclose(np.diag(overlaps), 1.0)


def test_one_of_two_found_gives_half():
    gt = instances(BOOK_A, BOOK_B)
    pred = instances(BOOK_A, scores=[0.99])
    ap, _, recalls, _ = ap_of(gt, pred)
    assert ap == pytest.approx(0.5)
    np.testing.assert_allclose(recalls, [0, 0.5, 1])


def test_false_positive_ranked_first_lowers_ap_by_a_third():
    # Ranks: FP, TP, TP -> precision 0, 1/2, 2/3 at recall 0, 1/2, 1; envelope 2/3 everywhere,
    # so AP = 1/2 * 2/3 + 1/2 * 2/3 = 2/3 (1.0 without the false positive).
    gt = instances(BOOK_A, BOOK_B)
    pred = instances(NOWHERE, BOOK_A, BOOK_B, scores=[0.9, 0.8, 0.7])
    assert ap_of(gt, pred)[0] == pytest.approx(2 / 3)
    assert ap_of(gt, instances(BOOK_A, BOOK_B))[0] == 1.0


def test_false_positive_ranked_second_gives_five_sixths():
    # Ranks: TP, FP, TP -> recall 1/2 at precision 1, recall 1 at precision 2/3:
    # AP = 1/2 * 1 + 1/2 * 2/3 = 5/6.
    gt = instances(BOOK_A, BOOK_B)
    pred = instances(BOOK_A, NOWHERE, BOOK_B, scores=[0.9, 0.8, 0.7])
    ap, precisions, recalls, _ = ap_of(gt, pred)
    assert ap == pytest.approx(5 / 6)
    np.testing.assert_allclose(precisions, [1, 1, 2 / 3, 2 / 3, 0])
    np.testing.assert_allclose(recalls, [0, 0.5, 0.5, 1, 1])


def test_false_positive_ranked_last_costs_nothing():
    gt = instances(BOOK_A, BOOK_B)
    pred = instances(BOOK_A, BOOK_B, NOWHERE, scores=[0.9, 0.8, 0.1])
    assert ap_of(gt, pred)[0] == 1.0


def test_input_order_does_not_matter_scores_do():
    gt = instances(BOOK_A, BOOK_B)
    pred = instances(BOOK_B, NOWHERE, BOOK_A, scores=[0.7, 0.9, 0.8])  # same ranking as FP-first case
    assert ap_of(gt, pred)[0] == pytest.approx(2 / 3)


def test_class_mismatch_is_not_a_match():
    gt = instances(BOOK_A, class_ids=[1])
    pred = instances(BOOK_A, class_ids=[2])
    gt_match, pred_match, overlaps = compute_matches(
        gt["rois"],
        gt["class_ids"],
        gt["masks"],
        pred["rois"],
        pred["class_ids"],
        pred["scores"],
        pred["masks"],
    )
    assert overlaps[0, 0] == 1.0
    assert gt_match.tolist() == [-1] and pred_match.tolist() == [-1]
    assert ap_of(gt, pred)[0] == 0.0


def test_class_mismatch_moves_on_to_the_next_ground_truth():
    # The prediction overlaps GT 0 (class 2) best and GT 1 (class 1) less, but above 0.5.
    gt = instances((0, 0, 10, 10), (0, 0, 10, 8), class_ids=[2, 1])
    pred = instances((0, 0, 10, 10), class_ids=[1], scores=[0.9])
    gt_match, pred_match, overlaps = compute_matches(
        gt["rois"],
        gt["class_ids"],
        gt["masks"],
        pred["rois"],
        pred["class_ids"],
        pred["scores"],
        pred["masks"],
    )
    np.testing.assert_allclose(overlaps, [[1.0, 0.8]])
    assert pred_match.tolist() == [1] and gt_match.tolist() == [-1, 0]


def test_duplicate_detection_is_a_false_positive():
    gt = instances(BOOK_A)
    pred = instances(BOOK_A, BOOK_A, scores=[0.9, 0.8])
    gt_match, pred_match, _ = compute_matches(
        gt["rois"],
        gt["class_ids"],
        gt["masks"],
        pred["rois"],
        pred["class_ids"],
        pred["scores"],
        pred["masks"],
    )
    assert gt_match.tolist() == [0] and pred_match.tolist() == [0, -1]


def test_iou_threshold_boundary():
    # IoU exactly 0.5 (50 / 100) matches at 0.5, not at 0.55.
    gt = instances(BOOK_A)
    pred = instances((0, 0, 10, 5), scores=[0.9])
    assert ap_of(gt, pred, 0.5)[0] == 1.0
    assert ap_of(gt, pred, 0.55)[0] == 0.0


def test_empty_image_cases():
    nothing = instances()
    ap, _, _, overlaps = ap_of(nothing, nothing)
    assert math.isnan(ap) and overlaps.shape == (0, 0)
    assert ap_of(nothing, instances(BOOK_A))[0] == 0.0  # predictions on a negative image
    assert ap_of(instances(BOOK_A), nothing)[0] == 0.0  # missed everything


def test_compute_ap_range_hand_value_and_ndarray_thresholds():
    # IoU = 80 / 100 = 0.8: matches at 0.50..0.80 (7 of the 10 default thresholds).
    gt = instances(BOOK_A)
    pred = instances((0, 0, 10, 8), scores=[0.9])
    args = (
        gt["rois"],
        gt["class_ids"],
        gt["masks"],
        pred["rois"],
        pred["class_ids"],
        pred["scores"],
        pred["masks"],
    )
    assert compute_ap_range(*args) == pytest.approx(0.7)
    assert compute_ap_range(*args, iou_thresholds=np.array([0.5, 0.9])) == pytest.approx(0.5)
    assert compute_ap_range(*args, iou_thresholds=[0.85]) == 0.0
    with pytest.raises(ValueError, match="iou_thresholds"):
        compute_ap_range(*args, iou_thresholds=np.array([0.0, 0.5]))


def test_mismatched_shapes_raise_clear_errors():
    gt = instances(BOOK_A)
    pred = instances(BOOK_A)
    with pytest.raises(ValueError, match="2 class ids for 1 masks"):
        compute_ap(
            gt["rois"], [1, 1], gt["masks"], pred["rois"], pred["class_ids"], pred["scores"], pred["masks"]
        )
    with pytest.raises(ValueError, match="scores"):
        compute_ap(
            gt["rois"],
            gt["class_ids"],
            gt["masks"],
            pred["rois"],
            pred["class_ids"],
            [0.5, 0.4],
            pred["masks"],
        )


def test_mean_mask_ap_skips_and_counts_empty_images():
    gt_list = [instances(BOOK_A, BOOK_B), instances(), instances(), instances(BOOK_C)]
    pred_list = [
        instances(BOOK_A, scores=[0.9]),  # AP 0.5
        instances(),  # no GT, no prediction: skipped
        instances(NOWHERE),  # no GT, a prediction: AP 0
        instances(BOOK_C),  # AP 1
    ]
    result = mean_mask_ap(gt_list, pred_list)
    assert result["n_images"] == 4 and result["n_skipped"] == 1
    assert result["ap"] == pytest.approx((0.5 + 0.0 + 1.0) / 3)
    assert math.isnan(result["per_image"][1])
    all_empty = mean_mask_ap([instances()], [instances()])
    assert math.isnan(all_empty["ap"]) and all_empty["n_skipped"] == 1


def test_mean_mask_ap_ignores_crowd_ground_truth():
    gt = instances(BOOK_A, BOOK_B)
    gt["iscrowd"] = np.array([False, True])
    assert mean_mask_ap([gt], [instances(BOOK_A)])["ap"] == 1.0


def test_mean_mask_ap_names_the_image_in_errors():
    bad = instances(BOOK_A)
    bad["masks"] = bad["masks"][:20]
    with pytest.raises(ValueError, match='image "shelf_3.jpg"'):
        mean_mask_ap([instances(BOOK_A)], [bad], image_ids=["shelf_3.jpg"])
    with pytest.raises(ValueError, match="1 ground-truth entries but 2"):
        mean_mask_ap([instances()], [instances(), instances()])
