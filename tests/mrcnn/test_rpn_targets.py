"""RPN targets: exact hand-made labels and deltas, crowds, caps, speed, and a dense cross-check."""

import math
import time

import numpy as np
import pytest

from bookseg.mrcnn.anchors import pixel_anchors_for
from bookseg.mrcnn.boxes import iou_matrix
from bookseg.mrcnn.config import MrcnnConfig
from bookseg.mrcnn.rpn_targets import anchor_gt_overlaps, build_rpn_targets

# Hand-made anchors (pixels) against GT g0 = [0, 0, 10, 10] and a small g1 = [60, 60, 64, 64]:
HAND_ANCHORS = np.array(
    [
        [0, 0, 10, 10],  # a0: IoU(g0) = 1 -> positive
        [0, 1, 10, 11],  # a1: IoU(g0) = 90/110 = 0.818 >= 0.7 -> positive
        [0, 5, 10, 15],  # a2: IoU(g0) = 50/150 = 0.333 -> neutral
        [20, 20, 30, 30],  # a3: IoU 0 -> negative
        [40, 40, 50, 50],  # a4: negative
        [100, 100, 110, 110],  # a5: negative
        [0, 0, 20, 20],  # a6: IoU(g0) = 100/400 = 0.25 < 0.3 -> negative
        [58, 58, 68, 68],  # a7: IoU(g1) = 16/100 = 0.16, but g1's best anchor -> positive
        [61, 61, 71, 71],  # a8: IoU(g1) = 9/107 = 0.084 -> negative
    ],
    np.float64,
)
HAND_GT = np.array([[0, 0, 10, 10], [60, 60, 64, 64]], np.float64)


def _config(per_image):
    return MrcnnConfig(rpn_train_anchors_per_image=per_image)


def test_hand_case_exact_labels_and_deltas():
    match, bbox = build_rpn_targets(
        HAND_ANCHORS, np.array([1, 1]), HAND_GT, _config(8), np.random.default_rng(0)
    )
    assert match.dtype == np.int32 and bbox.dtype == np.float32
    np.testing.assert_array_equal(match, [1, 1, 0, -1, -1, -1, -1, 1, -1])
    assert bbox.shape == (8, 4)
    log_04 = math.log(0.4) / 0.2  # g1 is 4 px, a7 is 10 px: log(4/10) / std 0.2
    expected = np.zeros((8, 4))
    expected[0] = [0, 0, 0, 0]  # a0 -> g0 exact
    expected[1] = [0, -1, 0, 0]  # a1 centre x 6 -> 5: -1/10 / 0.1
    expected[2] = [-1, -1, log_04, log_04]  # a7 centre 63 -> 62: -1/10 / 0.1
    np.testing.assert_allclose(bbox, expected, rtol=1e-6, atol=1e-6)


def test_ties_make_every_best_anchor_positive():
    anchors = np.array([[0, 0, 10, 10], [0, 10, 10, 20], [50, 50, 60, 60]], np.float64)
    gt = np.array([[0, 5, 10, 15]], np.float64)  # IoU 1/3 with both of the first two anchors
    match, bbox = build_rpn_targets(anchors, [1], gt, _config(8), np.random.default_rng(0))
    np.testing.assert_array_equal(match, [1, 1, -1])
    np.testing.assert_allclose(bbox[:2], [[0, 5, 0, 0], [0, -5, 0, 0]], atol=1e-6)


def test_crowd_region_blocks_negatives_and_never_makes_positives():
    anchors = np.concatenate([HAND_ANCHORS, [[200, 200, 210, 210]]])
    gt = np.concatenate([HAND_GT, [[200, 200, 260, 260]]])
    # The last anchor overlaps the crowd box with IoU 100/3600 >= 0.001 -> neutral, not negative.
    match, bbox = build_rpn_targets(anchors, [1, 1, -1], gt, _config(16), np.random.default_rng(0))
    np.testing.assert_array_equal(match, [1, 1, 0, -1, -1, -1, -1, 1, -1, 0])
    # Only crowds: nothing positive, the anchor near the crowd neutral, the rest negative.
    match, bbox = build_rpn_targets(anchors, [-1], gt[2:], _config(16), np.random.default_rng(0))
    assert (match == 1).sum() == 0
    assert match[-1] == 0 and (match[:-1] == -1).all()
    assert not bbox.any()


def test_caps_positives_to_half_and_fills_with_negatives():
    match, bbox = build_rpn_targets(HAND_ANCHORS, [1, 1], HAND_GT, _config(4), np.random.default_rng(3))
    positive = np.flatnonzero(match == 1)
    assert len(positive) == 2 and set(positive) <= {0, 1, 7}
    assert (match == -1).sum() == 2
    assert set(np.flatnonzero(match == -1)) <= {3, 4, 5, 6, 8}
    # Deltas follow the surviving positives in anchor order.
    _, full_bbox = build_rpn_targets(HAND_ANCHORS, [1, 1], HAND_GT, _config(8), np.random.default_rng(0))
    rows = {0: 0, 1: 1, 7: 2}
    np.testing.assert_allclose(bbox[:2], full_bbox[[rows[i] for i in positive]], atol=1e-6)
    assert not bbox[2:].any()


def test_no_gt_gives_only_negatives_capped():
    config = MrcnnConfig(image_max_dim=128, rpn_anchor_scales=(8, 16, 32, 64, 128))
    anchors = pixel_anchors_for(config, (128, 128))
    match, bbox = build_rpn_targets(
        anchors, np.zeros(0, np.int32), np.zeros((0, 4)), config, np.random.default_rng(0)
    )
    assert match.shape == (len(anchors),)
    assert (match == 1).sum() == 0
    assert (match == -1).sum() == config.rpn_train_anchors_per_image == 256
    assert not bbox.any()


def test_real_anchors_counts_and_seeded_reproducibility():
    config = MrcnnConfig(image_max_dim=256)
    anchors = pixel_anchors_for(config, (256, 256))
    rng = np.random.default_rng(7)
    y, x = rng.uniform(0, 150, 40), rng.uniform(0, 220, 40)
    gt = np.stack([y, x, y + rng.uniform(30, 100, 40), x + rng.uniform(8, 30, 40)], 1).round()
    ids = np.ones(40, np.int32)
    a = build_rpn_targets(anchors, ids, gt, config, np.random.default_rng(11))
    b = build_rpn_targets(anchors, ids, gt, config, np.random.default_rng(11))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    n_pos, n_neg = (a[0] == 1).sum(), (a[0] == -1).sum()
    assert 0 < n_pos <= 128
    assert n_pos + n_neg == 256
    # Deltas fill the first n_pos rows (random GT boxes never coincide with an anchor), then zeros.
    assert np.abs(a[1][:n_pos]).sum(axis=1).min() > 0
    assert np.abs(a[1][n_pos:]).sum() == 0


def test_overlaps_match_dense_iou_any_order_and_chunking():
    config = MrcnnConfig()
    anchors = pixel_anchors_for(config, (256, 192))
    rng = np.random.default_rng(0)
    anchors = anchors[rng.permutation(len(anchors))]  # the pruning must not depend on the order
    y, x = rng.uniform(-10, 230, 25), rng.uniform(-10, 170, 25)
    gt = np.stack([y, x, y + rng.uniform(2, 120, 25), x + rng.uniform(2, 60, 25)], 1).round()
    dense = iou_matrix(anchors, gt)
    anchor_max, anchor_argmax, pairs = anchor_gt_overlaps(anchors, gt, chunk=777)
    np.testing.assert_allclose(anchor_max, dense.max(axis=1), atol=1e-12)
    hit = anchor_max > 0
    np.testing.assert_array_equal(anchor_argmax[hit], dense.argmax(axis=1)[hit])
    expected = np.argwhere((dense == dense.max(axis=0)) & (dense.max(axis=0) > 0))
    assert set(map(tuple, pairs)) == set(map(tuple, expected))


def test_65k_anchors_100_gt_is_fast():
    config = MrcnnConfig(image_max_dim=512)
    anchors = pixel_anchors_for(config, (512, 512))
    assert len(anchors) == 65_472
    rng = np.random.default_rng(0)
    y, x = rng.uniform(0, 312, 100), rng.uniform(0, 452, 100)
    gt = np.stack([y, x, y + rng.uniform(50, 200, 100), x + rng.uniform(10, 60, 100)], 1)
    start = time.perf_counter()
    build_rpn_targets(anchors, np.ones(100, np.int32), gt, config, np.random.default_rng(0))
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, f"RPN targets took {elapsed:.2f} s for 65k anchors x 100 GT"


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError, match="2 class ids but 1 boxes"):
        build_rpn_targets(HAND_ANCHORS, [1, 1], HAND_GT[:1], _config(8))
