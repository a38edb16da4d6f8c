import numpy as np
import pytest

from bookseg.analysis.mask_gap import MaskGap, box_iou, match_books


def _band(shape, y1, x1, y2, x2, lean):
    """A thin band from the bottom-left to the top-right corner of the box (lean=+1) or mirrored (-1)."""
    mask = np.zeros(shape, bool)
    for y in range(y1, y2):
        t = (y - y1) / (y2 - y1 - 1)
        centre = x1 + (x2 - x1 - 1) * (1 - t if lean > 0 else t)
        mask[y, max(x1, int(centre) - 2) : min(x2, int(centre) + 3)] = True
    return mask


def test_box_iou_of_pixel_boxes():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[0, 0, 10, 10], [0, 5, 10, 15], [20, 20, 30, 30]])
    np.testing.assert_allclose(box_iou(a, b), [[1.0, 50 / 150, 0.0]])


def test_a_tilted_book_with_the_right_box_and_the_mirrored_band_is_found_by_box_only():
    shape = (80, 80)
    tilted = _band(shape, 5, 10, 75, 40, lean=+1)
    upright = np.zeros(shape, bool)
    upright[5:75, 50:60] = True
    gt = np.stack([tilted, upright], axis=2)
    mirrored = _band(shape, 5, 10, 75, 40, lean=-1)
    pred_boxes = np.array([[5, 10, 75, 40], [5, 50, 75, 60]])
    pred = np.stack([mirrored, upright], axis=2)

    gap = match_books(gt, pred_boxes, pred)

    assert gap.fill[0] < 0.4 and gap.fill[1] == pytest.approx(1.0)
    np.testing.assert_allclose(gap.box_iou, [1.0, 1.0])
    assert gap.mask_iou[0] < 0.2 and gap.mask_iou[1] == pytest.approx(1.0)
    rows = {r["fill"]: r for r in gap.rows()}
    assert rows["0.0-0.4"]["box_found"] == 1.0 and rows["0.0-0.4"]["mask_found_given_box"] == 0.0
    assert rows["0.8-1.0"]["mask_found_given_box"] == 1.0
    assert "| 0.0-0.4 | 1 | 1.00 | 0.00 | 0.00 |" in gap.table()


def test_books_without_detections_count_as_missed_and_gaps_add_up():
    gt = np.zeros((20, 20, 1), bool)
    gt[2:18, 4:8, 0] = True
    empty = match_books(gt, np.zeros((0, 4), int), np.zeros((20, 20, 0), bool))
    np.testing.assert_array_equal(empty.box_iou, [0.0])
    both = empty.extend(match_books(gt, np.array([[2, 4, 18, 8]]), gt))
    assert len(both.fill) == 2
    assert MaskGap().extend(both).rows()[3]["box_found"] == 0.5
