"""Exact-value tests for bookseg.mrcnn.anchors and bookseg.mrcnn.boxes."""

import math

import numpy as np
import pytest

from bookseg.mrcnn.anchors import (
    anchors_for,
    backbone_shapes,
    level_anchors,
    pixel_anchors_for,
    pyramid_anchors,
)
from bookseg.mrcnn.boxes import box_area, decode_boxes, denorm_boxes, encode_boxes, iou_matrix, norm_boxes
from bookseg.mrcnn.config import MrcnnConfig


def test_level_anchors_exact_coordinates_2x2_map_stride_4():
    # scale 32, ratios (w/h) 0.5, 1, 2:
    #   ratio 0.5 -> h = 32/sqrt(.5) = 32*sqrt(2), w = 32*sqrt(.5) = 16*sqrt(2): half sizes (16r2, 8r2)
    #   ratio 1   -> 32 x 32: half sizes (16, 16)
    #   ratio 2   -> h = 16*sqrt(2), w = 32*sqrt(2): half sizes (8r2, 16r2)
    # Centres (cy, cx) at cell top-left corners, row-major: (0,0), (0,4), (4,0), (4,4).
    r2 = math.sqrt(2.0)
    half = [(16 * r2, 8 * r2), (16.0, 16.0), (8 * r2, 16 * r2)]
    expected = []
    for cy, cx in [(0, 0), (0, 4), (4, 0), (4, 4)]:
        for hh, hw in half:
            expected.append([cy - hh, cx - hw, cy + hh, cx + hw])
    got = level_anchors(32, [0.5, 1, 2], (2, 2), feature_stride=4, anchor_stride=1)
    assert got.shape == (12, 4)
    np.testing.assert_allclose(got, np.array(expected), rtol=0, atol=1e-12)
    # Spot-check two literal values: first anchor y1 = -22.627..., last anchor x2 = 4 + 22.627...
    assert got[0, 0] == pytest.approx(-22.62741699796952)
    assert got[-1, 3] == pytest.approx(26.62741699796952)


def test_level_anchors_anchor_stride_2_skips_cells():
    got = level_anchors(8, [1.0], (4, 4), feature_stride=4, anchor_stride=2)
    # Cells (0,0), (0,2), (2,0), (2,2) -> centres (0,0), (0,8), (8,0), (8,8); 8x8 boxes.
    expected = [[-4, -4, 4, 4], [-4, 4, 4, 12], [4, -4, 12, 4], [4, 4, 12, 12]]
    np.testing.assert_array_equal(got, expected)


def test_backbone_shapes_round_up():
    assert backbone_shapes((100, 130), (4, 8, 16, 32, 64)) == [(25, 33), (13, 17), (7, 9), (4, 5), (2, 3)]


def test_anchor_count_1024_matterport_defaults():
    config = MrcnnConfig()
    anchors = pixel_anchors_for(config, (1024, 1024))
    # (256^2 + 128^2 + 64^2 + 32^2 + 16^2) cells * 3 ratios
    assert anchors.shape == (261_888, 4)
    # Level order: P2 first (scale 32), P6 last (scale 512).
    first, last = anchors[0], anchors[-1]
    assert (first[3] - first[1]) * (first[2] - first[0]) == pytest.approx(32 * 32)
    assert (last[3] - last[1]) * (last[2] - last[0]) == pytest.approx(512 * 512)
    # The last anchor of P6 is centred on the last cell corner (15*64, 15*64), ratio 2 (wide).
    np.testing.assert_allclose([(last[0] + last[2]) / 2, (last[1] + last[3]) / 2], [960, 960])
    assert last[3] - last[1] > last[2] - last[0]


def test_anchors_for_is_normalised_cached_read_only():
    config = MrcnnConfig(image_max_dim=128, rpn_anchor_scales=(8, 16, 32, 64, 128))
    normed = anchors_for(config, (128, 128, 3))
    pixels = pixel_anchors_for(config, (128, 128))
    assert normed.dtype == np.float32
    assert not normed.flags.writeable
    assert anchors_for(config, (128, 128)) is normed
    np.testing.assert_allclose(normed, norm_boxes(pixels, (128, 128)), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(
        pyramid_anchors((8, 16, 32, 64, 128), (0.5, 1, 2), (128, 128), (4, 8, 16, 32, 64)), pixels
    )


@pytest.mark.parametrize(
    "a, b, expected",
    [
        ([0, 0, 10, 10], [0, 0, 10, 10], 1.0),  # identical
        ([0, 0, 10, 10], [20, 20, 30, 30], 0.0),  # disjoint
        ([0, 0, 10, 10], [0, 0, 10, 5], 0.5),  # b is the left half of a
        ([0, 0, 10, 10], [0, 5, 10, 15], 50 / 150),  # half of each overlaps
        ([0, 0, 10, 10], [0, 10, 10, 20], 0.0),  # touching edges (x2 exclusive)
        ([0, 0, 10, 10], [10, 10, 20, 20], 0.0),  # touching corners
        ([0, 0, 0, 0], [0, 0, 0, 0], 0.0),  # empty union
    ],
)
def test_iou_hand_cases(a, b, expected):
    assert iou_matrix(np.array([a]), np.array([b]))[0, 0] == pytest.approx(expected)


def test_iou_matrix_shape_and_symmetry():
    a = np.array([[0, 0, 10, 10], [5, 5, 15, 15], [0, 0, 4, 4]])
    b = np.array([[0, 0, 10, 10], [2, 2, 6, 6]])
    m = iou_matrix(a, b)
    assert m.shape == (3, 2)
    np.testing.assert_allclose(m.T, iou_matrix(b, a))
    assert m[1, 0] == pytest.approx(25 / 175)
    assert m[2, 1] == pytest.approx(4 / 28)
    assert iou_matrix(a, np.zeros((0, 4))).shape == (3, 0)


def test_box_area_clips_negative_extent():
    np.testing.assert_array_equal(box_area(np.array([[0, 0, 2, 3], [5, 5, 4, 9]])), [6, 0])


def test_encode_hand_values():
    anchors = np.array([[0, 0, 10, 10], [0, 0, 10, 10]], np.float64)
    gt = np.array([[2, 2, 12, 12], [0, 0, 20, 20]], np.float64)
    deltas = encode_boxes(anchors, gt)
    # Shift by 2 px of a 10 px box = 0.2, / std 0.1 = 2; same size -> log 1 = 0.
    np.testing.assert_allclose(deltas[0], [2, 2, 0, 0])
    # Centre 5 -> 10 = 0.5 / 0.1 = 5; size x2 -> log 2 / 0.2.
    np.testing.assert_allclose(deltas[1], [5, 5, math.log(2) / 0.2, math.log(2) / 0.2])


def test_encode_decode_round_trip():
    rng = np.random.default_rng(0)
    y, x = rng.uniform(0, 500, 50), rng.uniform(0, 500, 50)
    boxes = np.stack([y, x, y + rng.uniform(1, 200, 50), x + rng.uniform(1, 200, 50)], 1)
    y, x = rng.uniform(0, 500, 50), rng.uniform(0, 500, 50)
    gt = np.stack([y, x, y + rng.uniform(1, 200, 50), x + rng.uniform(1, 200, 50)], 1)
    for std in [(0.1, 0.1, 0.2, 0.2), (1, 1, 1, 1)]:
        np.testing.assert_allclose(decode_boxes(boxes, encode_boxes(boxes, gt, std), std), gt, atol=1e-9)


def test_norm_denorm_round_trip_and_full_image():
    shape = (480, 640, 3)
    np.testing.assert_allclose(norm_boxes(np.array([[0, 0, 480, 640]]), shape), [[0, 0, 1, 1]])
    rng = np.random.default_rng(1)
    y1, x1 = rng.integers(0, 400, 30), rng.integers(0, 600, 30)
    boxes = np.stack([y1, x1, y1 + rng.integers(1, 80, 30), x1 + rng.integers(1, 40, 30)], 1)
    back = denorm_boxes(norm_boxes(boxes, shape), shape)
    assert back.dtype == np.int32
    np.testing.assert_array_equal(back, boxes)
