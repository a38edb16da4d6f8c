"""Proposal, ROI-align, detection-target and detection layers on hand-made boxes."""

import numpy as np
import pytest
import tensorflow as tf

from bookseg.mrcnn.detection import refine_detections
from bookseg.mrcnn.detection_targets import box_iou, detection_targets
from bookseg.mrcnn.proposals import apply_box_deltas, clip_boxes, norm_boxes_graph, propose
from bookseg.mrcnn.roi_align import pyramid_roi_align, roi_levels

from .conftest import tiny_config

STD = (0.1, 0.1, 0.2, 0.2)


# ---------------------------------------------------------------------------------- box ops
def test_apply_box_deltas_and_clip():
    boxes = tf.constant([[0.2, 0.2, 0.4, 0.6]])
    moved = apply_box_deltas(boxes, tf.constant([[0.5, 0.0, np.log(2.0), 0.0]], tf.float32)).numpy()
    # height 0.2 -> centre y 0.3 + 0.1 = 0.4, height doubled to 0.4.
    np.testing.assert_allclose(moved, [[0.2, 0.2, 0.6, 0.6]], atol=1e-6)
    clipped = clip_boxes(tf.constant([[-0.1, 0.5, 1.2, 0.9]]), tf.constant([0.0, 0.0, 1.0, 0.8])).numpy()
    np.testing.assert_allclose(clipped, [[0.0, 0.5, 1.0, 0.8]])


def test_norm_boxes_graph_matches_matterport_convention():
    got = norm_boxes_graph(
        tf.constant([[0.0, 0.0, 64.0, 128.0], [10.0, 20.0, 33.0, 65.0]]), (64, 128)
    ).numpy()
    np.testing.assert_allclose(got, [[0, 0, 1, 1], [10 / 63, 20 / 127, 32 / 63, 64 / 127]], rtol=1e-6)


def test_box_iou():
    a = tf.constant([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    b = tf.constant([[0.0, 0.0, 0.5, 1.0], [2.0, 2.0, 3.0, 3.0]])
    np.testing.assert_allclose(box_iou(a, b).numpy(), [[0.5, 0.0], [0.0, 0.0]])


# ---------------------------------------------------------------------------------- proposals
def _proposal_inputs():
    anchors = np.array(
        [
            [0.10, 0.10, 0.40, 0.40],  # 0: best score
            [0.11, 0.11, 0.41, 0.41],  # 1: IoU ~0.87 with 0 -> suppressed
            [0.50, 0.50, 0.90, 0.90],  # 2: separate
            [0.00, 0.60, 0.30, 0.95],  # 3: separate, lowest score
        ],
        np.float32,
    )
    fg = np.array([0.9, 0.8, 0.7, 0.1], np.float32)
    probs = np.stack([1 - fg, fg], axis=-1)[None]
    return anchors, probs, np.zeros((1, 4, 4), np.float32)


def test_proposals_nms_keeps_best_of_overlapping_and_pads():
    anchors, probs, deltas = _proposal_inputs()
    out = propose(
        tf.constant(probs),
        tf.constant(deltas),
        tf.constant(anchors),
        proposal_count=4,
        nms_threshold=0.7,
        pre_nms_limit=100,
        rpn_bbox_std_dev=STD,
    ).numpy()
    np.testing.assert_allclose(out[0], [anchors[0], anchors[2], anchors[3], [0, 0, 0, 0]], atol=1e-6)


def test_proposals_pre_nms_limit_and_count():
    anchors, probs, deltas = _proposal_inputs()
    out = propose(
        tf.constant(probs),
        tf.constant(deltas),
        tf.constant(anchors),
        proposal_count=3,
        nms_threshold=0.7,
        pre_nms_limit=2,
        rpn_bbox_std_dev=STD,
    ).numpy()
    # Only anchors 0 and 1 are considered; 1 is suppressed.
    np.testing.assert_allclose(out[0], [anchors[0], [0, 0, 0, 0], [0, 0, 0, 0]], atol=1e-6)


def test_proposals_apply_scaled_deltas_clip_and_batch():
    anchors, probs, deltas = _proposal_inputs()
    deltas = np.repeat(deltas, 2, axis=0)
    probs = np.repeat(probs, 2, axis=0)
    deltas[1, 0] = [1.0, 0.0, 0.0, 0.0]  # x std 0.1 -> moves anchor 0 down by 0.1 * 0.3
    deltas[1, 2] = [0.0, 0.0, 0.0, 5.0]  # width * e^(0.2*5) -> clipped to [0, 1]
    out = propose(
        tf.constant(probs),
        tf.constant(deltas),
        tf.constant(anchors),
        proposal_count=3,
        nms_threshold=0.7,
        pre_nms_limit=100,
        rpn_bbox_std_dev=STD,
    ).numpy()
    np.testing.assert_allclose(out[0], [anchors[0], anchors[2], anchors[3]], atol=1e-6)
    np.testing.assert_allclose(out[1, 0], [0.13, 0.10, 0.43, 0.40], atol=1e-6)
    width = 0.4 * np.e
    np.testing.assert_allclose(
        out[1, 1], [0.5, max(0.7 - width / 2, 0), 0.9, min(0.7 + width / 2, 1)], atol=1e-6
    )


# ---------------------------------------------------------------------------------- ROI align
def test_roi_levels_follow_fpn_formula():
    side = np.array([10, 56, 112, 224, 448, 1000], np.float32) / 1023.0
    boxes = np.stack([np.zeros_like(side), np.zeros_like(side), side, side], axis=-1)[None]
    levels = roi_levels(tf.constant(boxes), tf.constant([1024.0, 1024.0])).numpy()
    np.testing.assert_array_equal(levels[0], [2, 2, 3, 4, 5, 5])
    padding = roi_levels(tf.zeros([1, 2, 4]), tf.constant([1024.0, 1024.0])).numpy()
    np.testing.assert_array_equal(padding, [[2, 2]])


def test_pyramid_roi_align_pools_from_the_right_level_in_input_order():
    image_hw = tf.constant([256.0, 256.0])
    # Level l of image b is filled with the value 10 * l + b.
    maps = [
        tf.constant(
            np.full((2, 256 // s, 256 // s, 3), 0.0, np.float32)
            + (10 * level + np.arange(2))[:, None, None, None]
        )
        for level, s in zip((2, 3, 4, 5), (4, 8, 16, 32))
    ]
    # roughly: 20 px -> level 2, 80 px -> 3, 180 px -> 4, 255 px -> 4 (4 + round(log2(255/224)))
    sides = np.array([[20, 80, 180], [180, 20, 80]], np.float32) / 255.0
    boxes = np.stack([np.zeros_like(sides), np.zeros_like(sides), sides, sides], axis=-1)
    pooled = pyramid_roi_align(tf.constant(boxes), image_hw, maps, (7, 7)).numpy()
    assert pooled.shape == (2, 3, 7, 7, 3)
    expected_levels = roi_levels(tf.constant(boxes), image_hw).numpy()
    np.testing.assert_array_equal(expected_levels, [[2, 3, 4], [4, 2, 3]])
    expected = 10 * expected_levels + np.arange(2)[:, None]
    np.testing.assert_allclose(pooled[..., 0].mean(axis=(2, 3)), expected, atol=1e-5)
    assert np.ptp(pooled, axis=(2, 3, 4)).max() < 1e-5


def test_pyramid_roi_align_crops_the_box_content():
    # A horizontal ramp on P2: value = column index; a box on the left half pools small values.
    ramp = np.tile(np.arange(16, dtype=np.float32), (16, 1))[None, :, :, None]
    maps = [tf.constant(ramp)] + [tf.zeros([1, 16 // 2**k, 16 // 2**k, 1]) for k in (1, 2, 3)]
    boxes = tf.constant([[[0.0, 0.0, 1.0, 0.5]]])
    pooled = pyramid_roi_align(boxes, tf.constant([64.0, 64.0]), maps, (2, 2)).numpy()
    np.testing.assert_allclose(pooled[0, 0, 0, :, 0], [0.0, 7.5], atol=1e-5)


# ---------------------------------------------------------------------------------- detection targets
def _targets_config(**changes):
    return tiny_config(train_rois_per_image=10, roi_positive_ratio=0.33, mini_mask_shape=(28, 28), **changes)


def _gt(n_max=3):
    ids = np.zeros((1, n_max), np.int32)
    boxes = np.zeros((1, n_max, 4), np.float32)
    masks = np.zeros((1, 28, 28, n_max), np.float32)
    ids[0, 0] = 1
    boxes[0, 0] = [0.1, 0.1, 0.5, 0.5]
    masks[0, :, :14, 0] = 1.0  # left half of the GT box
    return ids, boxes, masks


def _proposals():
    far = [[0.6 + 0.05 * i, 0.6, 0.7 + 0.05 * i, 0.7] for i in range(5)]
    rows = [[0.1, 0.1, 0.5, 0.5], [0.12, 0.1, 0.52, 0.5], *far, [0.0, 0.0, 0.0, 0.0]]
    return np.array([rows], np.float32)


def test_detection_targets_sampling_deltas_and_masks():
    config = _targets_config()
    ids, boxes, masks = _gt()
    rois, class_ids, deltas, target_masks, valid = (
        t.numpy()
        for t in detection_targets(
            tf.constant(_proposals()),
            tf.constant(ids),
            tf.constant(boxes),
            tf.constant(masks),
            config,
            deterministic=True,
        )
    )
    assert rois.shape == (1, 10, 4) and target_masks.shape == (1, 10, 28, 28)
    # 2 positives (<= int(10 * 0.33) = 3), then int(2 / 0.33) - 2 = 4 negatives, then 4 padding rows.
    np.testing.assert_array_equal(class_ids[0], [1, 1, 0, 0, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(valid[0], [1, 1, 1, 1, 1, 1, 0, 0, 0, 0])
    positives = rois[0, :2][np.argsort(rois[0, :2, 0])]
    np.testing.assert_allclose(positives, [[0.1, 0.1, 0.5, 0.5], [0.12, 0.1, 0.52, 0.5]], atol=1e-6)
    assert all(r[0] >= 0.6 for r in rois[0, 2:6])  # negatives are the far proposals
    np.testing.assert_array_equal(rois[0, 6:], 0)
    exact = int(np.flatnonzero(np.isclose(rois[0, :2, 0], 0.1))[0])
    np.testing.assert_allclose(deltas[0, exact], 0, atol=1e-6)
    shifted = 1 - exact
    np.testing.assert_allclose(deltas[0, shifted], [-0.02 / 0.4 / 0.1, 0, 0, 0], atol=1e-5)
    np.testing.assert_array_equal(target_masks[0, exact, :, :14], 1)
    np.testing.assert_array_equal(target_masks[0, exact, :, 14:], 0)
    np.testing.assert_array_equal(target_masks[0, 2:], 0)


def test_detection_targets_from_full_size_masks():
    config = _targets_config(use_mini_mask=False)
    ids, boxes, _ = _gt()
    full = np.zeros((1, 101, 101, 3), np.float32)
    full[0, 10:51, 10:31, 0] = 1.0  # rows 10..50, columns 10..30 of the box [0.1, 0.1, 0.5, 0.5] * 100
    rois, class_ids, _, target_masks, _ = (
        t.numpy()
        for t in detection_targets(
            tf.constant(_proposals()),
            tf.constant(ids),
            tf.constant(boxes),
            tf.constant(full),
            config,
            deterministic=True,
        )
    )
    exact = int(np.flatnonzero(np.isclose(rois[0, :2, 0], 0.1) & (class_ids[0, :2] == 1))[0])
    # The ROI spans columns 10..50; the mask covers 10..30, i.e. the left half of the 28 columns.
    assert target_masks[0, exact, :, :13].min() == 1 and target_masks[0, exact, :, 15:].max() == 0


def test_detection_targets_without_gt_sample_negatives():
    config = _targets_config()
    ids, boxes, masks = _gt()
    ids[:] = 0
    boxes[:] = 0
    _, class_ids, _, _, valid = detection_targets(
        tf.constant(_proposals()), tf.constant(ids), tf.constant(boxes), tf.constant(masks), config
    )
    assert class_ids.numpy().sum() == 0
    # 7 real proposals available, up to 10 - int(10 * 0.33) = 7 negatives wanted.
    assert valid.numpy().sum() == 7


def test_detection_targets_crowd_regions_are_never_negatives():
    config = _targets_config()
    ids, boxes, masks = _gt()
    ids[0, 1] = -1  # crowd box over the first two far proposals
    boxes[0, 1] = [0.6, 0.6, 0.7, 0.7]
    rois, class_ids, _, _, valid = (
        t.numpy()
        for t in detection_targets(
            tf.constant(_proposals()),
            tf.constant(ids),
            tf.constant(boxes),
            tf.constant(masks),
            config,
            deterministic=True,
        )
    )
    negatives = rois[0][(valid[0] > 0) & (class_ids[0] == 0)]
    crowd = np.array([0.6, 0.6, 0.7, 0.7], np.float32)
    assert len(negatives) == 3  # 5 far proposals minus the 2 touching the crowd box
    assert box_iou(tf.constant(negatives), tf.constant(crowd[None])).numpy().max() < 0.001
    assert (class_ids[0] > 0).sum() == 2  # the crowd box is never a positive target


def test_detection_targets_deterministic_mode_repeats():
    config = _targets_config()
    ids, boxes, masks = _gt()
    args = (tf.constant(_proposals()), tf.constant(ids), tf.constant(boxes), tf.constant(masks), config)
    first = detection_targets(*args, deterministic=True)
    second = detection_targets(*args, deterministic=True)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


# ---------------------------------------------------------------------------------- detection layer
def test_detection_layer_per_class_nms_threshold_and_order():
    rois = np.array(
        [
            [
                [0.10, 0.10, 0.50, 0.50],  # 0: class 1, 0.90
                [0.11, 0.11, 0.51, 0.51],  # 1: class 1, 0.80 -> suppressed by 0 (same class)
                [0.10, 0.10, 0.50, 0.50],  # 2: class 2, 0.85 -> kept (other class)
                [0.60, 0.60, 0.90, 0.90],  # 3: background argmax -> dropped
                [0.60, 0.10, 0.90, 0.40],  # 4: class 1, 0.60 < 0.7 -> dropped
                [0.00, 0.00, 0.00, 0.00],  # 5: padding -> never detected
            ]
        ],
        np.float32,
    )
    probs = np.array(
        [
            [
                [0.05, 0.90, 0.05],
                [0.10, 0.80, 0.10],
                [0.05, 0.10, 0.85],
                [0.70, 0.20, 0.10],
                [0.20, 0.60, 0.20],
                [0.00, 1.00, 0.00],
            ]
        ],
        np.float32,
    )
    deltas = np.zeros((1, 6, 3, 4), np.float32)
    window = tf.constant([[0.0, 0.0, 1.0, 1.0]])
    out = refine_detections(
        tf.constant(rois),
        tf.constant(probs),
        tf.constant(deltas),
        window,
        min_confidence=0.7,
        max_instances=4,
        nms_threshold=0.3,
        bbox_std_dev=STD,
    ).numpy()
    assert out.shape == (1, 4, 6)
    np.testing.assert_allclose(out[0, 0], [0.1, 0.1, 0.5, 0.5, 1, 0.90], atol=1e-6)
    np.testing.assert_allclose(out[0, 1], [0.1, 0.1, 0.5, 0.5, 2, 0.85], atol=1e-6)
    np.testing.assert_array_equal(out[0, 2:], 0)
    top1 = refine_detections(
        tf.constant(rois),
        tf.constant(probs),
        tf.constant(deltas),
        window,
        min_confidence=0.7,
        max_instances=1,
        nms_threshold=0.3,
        bbox_std_dev=STD,
    ).numpy()
    np.testing.assert_allclose(top1[0, 0, 4:], [1, 0.90], atol=1e-6)
    low = refine_detections(
        tf.constant(rois),
        tf.constant(probs),
        tf.constant(deltas),
        window,
        min_confidence=0.5,
        max_instances=4,
        nms_threshold=0.3,
        bbox_std_dev=STD,
    ).numpy()
    assert (low[0, :, 4] > 0).sum() == 3  # ROI 4 (0.60) now passes


def test_detection_layer_applies_class_deltas_and_clips_to_window():
    rois = np.array(
        [[[0.2, 0.2, 0.6, 0.6], [0.0, 0.0, 0.0, 0.0]], [[0.2, 0.2, 0.6, 0.6], [0.1, 0.1, 0.2, 0.2]]],
        np.float32,
    )
    probs = np.array([[[0.0, 1.0], [1.0, 0.0]], [[0.0, 1.0], [0.1, 0.9]]], np.float32)
    deltas = np.zeros((2, 2, 2, 4), np.float32)
    deltas[0, 0, 1] = [1.0, 0.0, 0.0, 0.0]  # moves down by 0.1 * 0.4
    deltas[0, 0, 0] = [9.0, 9.0, 9.0, 9.0]  # background deltas are ignored
    windows = tf.constant([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.5, 1.0]])
    out = refine_detections(
        tf.constant(rois),
        tf.constant(probs),
        tf.constant(deltas),
        windows,
        min_confidence=0.7,
        max_instances=2,
        nms_threshold=0.3,
        bbox_std_dev=STD,
    ).numpy()
    np.testing.assert_allclose(out[0, 0, :4], [0.24, 0.2, 0.64, 0.6], atol=1e-6)
    np.testing.assert_array_equal(out[0, 1], 0)
    np.testing.assert_allclose(out[1, 0, :4], [0.2, 0.2, 0.5, 0.6], atol=1e-6)  # clipped to window y2 0.5
    np.testing.assert_allclose(out[1, 1, :4], [0.1, 0.1, 0.2, 0.2], atol=1e-6)


@pytest.mark.parametrize("min_confidence", [0.0, 0.95])
def test_detection_layer_min_confidence_is_inclusive_and_zero_keeps_all_foreground(min_confidence):
    rois = tf.constant([[[0.1, 0.1, 0.3, 0.3], [0.5, 0.5, 0.9, 0.9]]])
    probs = tf.constant([[[0.05, 0.95], [0.6, 0.4]]])
    out = refine_detections(
        rois,
        probs,
        tf.zeros([1, 2, 2, 4]),
        tf.constant([[0.0, 0.0, 1.0, 1.0]]),
        min_confidence=min_confidence,
        max_instances=2,
        nms_threshold=0.3,
        bbox_std_dev=STD,
    ).numpy()
    # ROI 1 is background by argmax, so it is dropped whatever the threshold.
    np.testing.assert_allclose(out[0, :, 4:], [[1, 0.95], [0, 0]], atol=1e-6)


@pytest.mark.parametrize("use_mini_mask", [True, False])
def test_mask_target_of_a_roi_wider_than_its_book(use_mini_mask):
    """A 21-px-wide book 4 px inside a 28-px-wide ROI fills exactly target columns 4..24, with mini masks
    (28 or 56) and with full-image masks: the ROI is cut along pixel edges (the corner-aligned crop of
    normalised boxes made such targets about a pixel narrower)."""
    from bookseg.mrcnn.boxes import norm_boxes
    from bookseg.mrcnn.detection_targets import detection_targets_one_image
    from bookseg.mrcnn.images import minimize_masks

    for mini in (28, 56):
        config = tiny_config(use_mini_mask=use_mini_mask, mini_mask_shape=(mini, mini))
        book, roi = np.array([[8, 28, 56, 49]]), np.array([[8, 24, 56, 52]])  # y1, x1, y2, x2 pixels
        full = np.zeros((64, 64, 1), bool)
        full[8:56, 28:49, 0] = True
        masks = minimize_masks(book, full, config.mini_mask_shape) if use_mini_mask else full
        _, _, _, targets, _ = detection_targets_one_image(
            tf.constant(norm_boxes(roi, (64, 64)), tf.float32),
            tf.constant([1], tf.int32),
            tf.constant(norm_boxes(book, (64, 64)), tf.float32),
            tf.constant(masks, tf.float32),
            config,
            deterministic=True,
        )
        expected = np.zeros((28, 28), np.float32)
        expected[:, 4:25] = 1.0
        np.testing.assert_array_equal(targets.numpy()[0], expected)


def test_a_larger_canonical_size_pools_rois_one_level_finer():
    boxes = tf.constant([[[0.0, 0.0, 0.25, 0.25], [0.0, 0.0, 0.05, 0.4], [0.0, 0.0, 0.9, 0.9]]])
    image_hw = tf.constant([512.0, 512.0])
    fpn = roi_levels(boxes, image_hw).numpy()
    finer = roi_levels(boxes, image_hw, canonical_size=448.0).numpy()
    np.testing.assert_array_equal(fpn, [[3, 2, 5]])
    np.testing.assert_array_equal(finer, [[2, 2, 4]])
