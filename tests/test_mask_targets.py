"""Mask-target fidelity: ground-truth masks of upright, thin and tilted books survive the resize, mini
mask, ROI target and paste-back, and the measure catches a path that loses them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bookseg.analysis.mask_targets import mask_round_trip, roi_mask_targets
from bookseg.data.records import ImageRecord, Instance
from bookseg.mrcnn.config import MrcnnConfig


def _spine(cx, cy, width, height, degrees):
    """Polygon (x, y) of a width x height rectangle centred at (cx, cy), turned by `degrees`."""
    t = np.deg2rad(degrees)
    corners = np.array([[-width, -height], [width, -height], [width, height], [-width, height]]) / 2
    rotation = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    return corners @ rotation.T + [cx, cy]


def _shelf(tilts):
    """A 576 x 1024 phone frame of 24-px-wide, 300-px-tall spines at the given tilts."""
    instances = [
        Instance("book", polygon=_spine(60 + 80 * i, 288, 24, 300, tilt), region=f"region {i}")
        for i, tilt in enumerate(tilts)
    ]
    return ImageRecord("shelf.jpg", Path("/nonexistent/shelf.jpg"), 1024, 576, instances)


def _config(**changes):
    return MrcnnConfig(**{"image_min_dim": 256, "image_max_dim": 256, "mini_mask_shape": (28, 28), **changes})


def test_thin_and_tilted_spines_survive_the_mask_path_at_the_cpu_size():
    trip = mask_round_trip([_shelf([0, 5, 10, 20, 30, -15])], _config())
    assert len(trip.iou) == 6
    assert trip.iou.min() >= 0.8, trip.iou  # a 6-px-wide spine at 256 px is still outlined
    assert trip.fill[0] > 0.95 and trip.fill[4] < 0.5  # upright fills its box, 30 degrees does not
    assert trip.aspect[0] == pytest.approx(24 / 300, abs=0.02)
    assert trip.targets.shape == (6, 28, 28) and set(np.unique(trip.targets)) <= {0.0, 1.0}
    assert "6 books" in trip.summary()


def test_a_coarse_mask_head_loses_tilted_spines():
    """The measure is not blind: 4 x 4 targets cannot hold a tilted spine, and the IoU says so."""
    fine = mask_round_trip([_shelf([30])], _config())
    coarse = mask_round_trip([_shelf([30])], _config(mask_shape=(4, 4)))
    assert coarse.iou[0] < fine.iou[0] - 0.1


def test_roi_targets_of_the_whole_box_reproduce_a_same_size_mini_mask():
    mini = np.zeros((28, 28, 2), bool)
    mini[:, 10:18, 0] = True
    np.fill_diagonal(mini[:, :, 1], True)
    np.testing.assert_array_equal(
        roi_mask_targets(mini, (28, 28)), np.moveaxis(mini, -1, 0).astype(np.float32)
    )


def test_targets_sample_the_mini_mask_at_cell_centres():
    """A 56 x 56 mini mask made of 2 x 2 blocks gives back exactly the 28 x 28 pattern of the blocks
    (a corner-aligned crop, matterport's, drifts by up to half a mini pixel and does not)."""
    pattern = np.random.default_rng(0).random((28, 28, 3)) > 0.5
    mini = np.kron(pattern, np.ones((2, 2, 1))).astype(bool)
    np.testing.assert_array_equal(
        roi_mask_targets(mini, (28, 28)), np.moveaxis(pattern, -1, 0).astype(np.float32)
    )


def test_a_larger_mini_mask_keeps_tilted_spines_as_well():
    shelf = [_shelf([10, 20, 30, -15])]
    small = mask_round_trip(shelf, _config())
    large = mask_round_trip(shelf, _config(mini_mask_shape=(56, 56)))
    assert np.median(large.iou) >= np.median(small.iou) - 0.015
