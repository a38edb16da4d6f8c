"""`bookseg anchors`: exact coverage on hand-made boxes, agreement with the RPN targets, boxes at model
size, the suggestion on tall thin boxes, and the command's output on the synthetic shelves."""

from __future__ import annotations

import io
import itertools
import re
from pathlib import Path

import numpy as np
import pytest

from bookseg.analysis.anchor_command import format_analysis, model_config, run_anchors
from bookseg.analysis.anchor_geometry import AnchorGrid, best_anchor_iou, positive_anchors
from bookseg.analysis.anchor_suggest import kmeans_log_ratios
from bookseg.analysis.anchors import analyze_anchors, instance_box, model_boxes, resize_box
from bookseg.cli import main
from bookseg.data.records import ImageRecord, Instance, boxes_from_masks
from bookseg.mrcnn.anchors import pixel_anchors_for
from bookseg.mrcnn.boxes import iou_matrix
from bookseg.mrcnn.config import MrcnnConfig
from bookseg.mrcnn.images import resize_geometry, resize_masks
from bookseg.mrcnn.rpn_targets import build_rpn_targets

# A 64x64 image with one pyramid level: centres every 16 px at 0, 16, 32, 48; ratio 1 anchors are
# 16x16, ratio 0.25 anchors 32 tall and 8 wide.
HAND_GRID = AnchorGrid(scales=(16.0,), ratios=(1.0, 0.25), steps=(16,), shapes=((4, 4),))
HAND_GT = np.array(
    [
        [8, 8, 24, 24],  # = the square anchor at (16, 16): IoU 1
        [0, 12, 32, 20],  # = the tall anchor at (16, 16): IoU 1
        [12, 12, 28, 28],  # square anchor at (16, 16): 12*12 / (256 + 256 - 144) = 144/368
        [4, 8, 20, 24],  # square anchor at (16, 16): 12*16 / (256 + 256 - 192) = 192/320 = 0.6
    ],
    np.float64,
)
HAND_BEST = np.array([1.0, 1.0, 144 / 368, 0.6])


def _record(image_id: str, height: int, width: int, boxes, crowd=()) -> ImageRecord:
    """Record whose instances are axis-aligned rectangles (y1, x1, y2, x2) as polygons."""
    instances = []
    for k, (y1, x1, y2, x2) in enumerate(boxes):
        polygon = np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], np.float64)
        instances.append(Instance("book", polygon=polygon, region=f"region {k}", iscrowd=k in crowd))
    return ImageRecord(image_id, Path(f"/nonexistent/{image_id}.png"), width, height, instances)


def _cpu_config(**changes) -> MrcnnConfig:
    return MrcnnConfig(image_min_dim=256, image_max_dim=256, **changes)


def test_hand_made_best_iou_and_coverage_shares():
    best = best_anchor_iou(HAND_GT, HAND_GRID)
    np.testing.assert_allclose(best, HAND_BEST, rtol=1e-12)
    np.testing.assert_allclose(best, iou_matrix(HAND_GT, HAND_GRID.boxes()).max(axis=1), rtol=1e-12)
    assert np.mean(best >= 0.5) == 3 / 4 and np.mean(best >= 0.7) == 2 / 4


def test_hand_made_positive_anchors():
    found = positive_anchors(HAND_GT, np.zeros(4, int), HAND_GRID)
    # Boxes 0 and 1 own their IoU-1 anchors; boxes 2 and 3 reach no 0.7, and their best anchor is the
    # square one at (16, 16), which box 0 owns: 2 distinct positives in the image, one per box.
    assert found.per_box.tolist() == [1, 1, 1, 1]
    assert found.per_image.tolist() == [2]
    match, _ = build_rpn_targets(
        HAND_GRID.boxes(),
        np.ones(4),
        HAND_GT,
        MrcnnConfig(rpn_train_anchors_per_image=10_000),
        np.random.default_rng(0),
    )
    assert int((match == 1).sum()) == 2


def test_box_between_centres_has_tied_best_anchors():
    # A 16x16 box centred at (24, 16) sits halfway between the centres at rows 16 and 32. The square
    # anchors there overlap it 8 x 16 = 128 px, the tall ones (32 x 8) 16 x 8 = 128 px: four anchors
    # tie at 128 / (256 + 256 - 128) = 1/3, and matterport makes all of them positive.
    box = np.array([[16, 8, 32, 24]], float)
    found = positive_anchors(box, np.zeros(1, int), HAND_GRID)
    np.testing.assert_allclose(found.best_iou, [1 / 3])
    assert found.per_box.tolist() == [4] and found.per_image.tolist() == [4]
    match, _ = build_rpn_targets(
        HAND_GRID.boxes(),
        np.ones(1),
        box,
        MrcnnConfig(rpn_train_anchors_per_image=10_000),
        np.random.default_rng(0),
    )
    assert int((match == 1).sum()) == 4


@pytest.mark.parametrize("anchor_stride", [1, 2])
def test_grid_matches_model_anchors_and_rpn_targets_on_random_boxes(anchor_stride):
    config = _cpu_config(
        rpn_anchor_ratios=(0.25, 0.5, 1.0, 2.0),
        rpn_anchor_stride=anchor_stride,
        rpn_train_anchors_per_image=10**7,
    )
    anchors = pixel_anchors_for(config, (256, 256))
    grid = AnchorGrid.for_config(config, (256, 256))
    assert np.array_equal(grid.boxes(), anchors) and grid.num_anchors == len(anchors)
    rng = np.random.default_rng(anchor_stride)
    for trial in range(12):
        m = int(rng.integers(1, 12))
        corner = rng.uniform(-20, 250, (m, 2))
        gt = np.concatenate([corner, corner + np.exp(rng.uniform(np.log(3), np.log(200), (m, 2)))], axis=1)
        if trial % 3 == 0:
            gt = np.round(gt)
        found = positive_anchors(gt, np.zeros(m, int), grid)
        np.testing.assert_allclose(found.best_iou, iou_matrix(gt, anchors).max(axis=1), rtol=0, atol=1e-12)
        match, _ = build_rpn_targets(anchors, np.ones(m), gt, config, np.random.default_rng(0))
        assert found.per_image[0] == (match == 1).sum()


def test_images_compete_only_within_themselves():
    # The same box in two images: each image has its own positive anchor.
    gt = np.array([HAND_GT[0], HAND_GT[0]])
    found = positive_anchors(gt, np.array([0, 1]), HAND_GRID)
    assert found.per_box.tolist() == [1, 1] and found.per_image.tolist() == [1, 1]


def test_ten_thousand_boxes_against_a_1024_pyramid_take_seconds():
    import time

    config = MrcnnConfig(rpn_anchor_ratios=(0.125, 0.25, 0.5, 1.0, 4.0))
    grid = AnchorGrid.for_config(config, (1024, 1024))
    rng = np.random.default_rng(0)
    corner = rng.uniform(0, 1000, (10_000, 2))
    gt = np.concatenate([corner, corner + np.exp(rng.uniform(np.log(5), np.log(400), (10_000, 2)))], axis=1)
    start = time.perf_counter()
    found = positive_anchors(gt, np.arange(10_000) // 20, grid)
    assert time.perf_counter() - start < 10
    assert grid.num_anchors == 436_480 and found.per_box.min() >= 1


def test_boxes_reach_the_model_as_training_resizes_masks():
    config = _cpu_config()
    rects = [(100, 10, 300, 30), (7, 3, 20, 250), (0, 0, 512, 256), (401, 101, 403, 104)]
    record = _record("tall", 512, 256, rects)
    scale, window, shape = resize_geometry(512, 256, config)
    assert (scale, window, shape) == (0.5, (0, 64, 256, 192), (256, 256))
    boxes = model_boxes([record], config)
    masks = resize_masks(record.masks(), scale, [(0, 0), (64, 64), (0, 0)])
    np.testing.assert_array_equal(boxes.boxes, boxes_from_masks(masks))
    assert boxes.boxes[0].tolist() == [50, 69, 150, 79]
    assert boxes.shapes == [(256, 256)] and not boxes.skipped


def test_left_out_instances_are_counted_by_reason():
    config = _cpu_config()
    record = _record(
        "img",
        1024,
        1024,
        [(10, 10, 50, 50), (20, 20, 60, 60), (500, 500, 500.2, 600), (100, 100, 101, 101)],
        crowd=(1,),
    )
    outside = Instance(
        "book", polygon=np.array([[-30, -30], [-10, -30], [-10, -10]], float), region="region 4"
    )
    record.instances.append(outside)
    assert instance_box(outside, 1024, 1024) is None
    boxes = model_boxes([record], config)
    # region 2 is a 0.2 px sliver (no pixel centre inside), region 3 one pixel that 1024 -> 256 drops.
    assert dict(boxes.skipped) == {"crowd": 1, "empty_in_image": 2, "vanish_at_model_size": 1}
    assert len(boxes.boxes) == 1
    assert resize_box((100, 100, 101, 101), 0.25, (0, 0)) == (25, 25, 25, 25)


def test_kmeans_finds_the_two_shapes_of_books():
    ratios = np.r_[np.full(60, 0.2), np.full(40, 5.0)]
    assert kmeans_log_ratios(ratios, 2) == [0.2, 5.0]
    three = kmeans_log_ratios(ratios, 3)
    assert len(three) == 3 and {0.2, 5.0} <= set(three)


def test_suggestion_improves_coverage_of_tall_thin_boxes():
    rng = np.random.default_rng(0)
    records = []
    for i in range(12):
        boxes = []
        for _ in range(8):
            width = rng.uniform(8, 16)
            height = width * rng.uniform(5, 7)
            y, x = rng.uniform(0, 256 - height), rng.uniform(0, 256 - width)
            boxes.append((y, x, y + height, x + width))
        records.append(_record(f"shelf{i}", 256, 256, boxes))
    config = _cpu_config()
    analysis = analyze_anchors(records, config, source="thin", n_ratios=3)
    current, suggested = analysis.current.overall, analysis.suggested.overall
    assert current.boxes == suggested.boxes == 96
    assert current.iou70 < 0.1 and current.iou50 < 0.4
    assert suggested.iou70 > 0.6 and suggested.iou50 > 0.95
    assert min(analysis.suggested.ratios) <= 0.25 and len(analysis.suggested.ratios) == 3
    scales = analysis.suggested.scales
    assert len(scales) == 5 and all(a < b for a, b in itertools.pairwise(scales))
    assert [len(a.ratios) for a in analysis.alternatives] == [3, 4, 5]
    assert analysis.alternatives[0] is analysis.suggested
    # Heights 5-7 times the widths, up to the whole-pixel rounding of 8-16 px wide masks.
    assert np.all((analysis.aspect > 4.5) & (analysis.aspect < 7.5))


def test_wrong_number_of_scales_is_a_clear_error():
    with pytest.raises(ValueError, match="one scale per level"):
        model_config("tiny", "default", scales=[16, 32, 64])


@pytest.fixture(scope="module")
def synthetic_cache(tmp_path_factory) -> str:
    """One cache folder for the synthetic shelves of this module's tests (generated once)."""
    return str(tmp_path_factory.mktemp("cache"))


def test_anchors_command_on_synthetic_shelves(synthetic_cache, monkeypatch, capsys):
    monkeypatch.setenv("BOOKSEG_CACHE", synthetic_cache)
    assert main(["anchors", "synthetic", "--model", "tiny", "--anchors", "spines"]) == 0
    out = capsys.readouterr().out
    assert "synthetic shelves" in out and "model=tiny anchors=spines" in out
    assert "network input 128x128" in out and "ratios w/h [0.125, 0.25, 0.5, 4, 8]" in out
    n_boxes = int(re.search(r"(\d+) boxes;", out).group(1))
    rows = re.findall(r"^  all\s+(\d+)\s+([\d.]+)%\s+([\d.]+)%\s+([\d.]+)\s+([\d.]+)$", out, re.MULTILINE)
    assert len(rows) == 2 and all(int(r[0]) == n_boxes for r in rows)
    (_, cur50, cur70, _, _), (_, sug50, sug70, _, _) = rows
    assert float(sug50) + float(sug70) >= float(cur50) + float(cur70)
    assert "Suggested anchors" in out and "anchors.scales=[" in out
    assert re.search(r"^\s+5\s+[\d.]+%", out, re.MULTILINE)  # the 5-ratio alternative


def test_run_anchors_returns_the_analysis_with_custom_ratios(synthetic_cache, monkeypatch):
    monkeypatch.setenv("BOOKSEG_CACHE", synthetic_cache)
    out = io.StringIO()
    analysis = run_anchors(
        "synthetic", model="tiny", scales=[16, 32, 64, 128, 256], ratios=[0.2, 5], suggest=False, out=out
    )
    assert analysis.current.scales == [16, 32, 64, 128, 256] and analysis.current.ratios == [0.2, 5]
    assert analysis.suggested is None and "Suggested" not in out.getvalue()
    assert analysis.num_anchors == [(32 * 32 + 16 * 16 + 8 * 8 + 4 * 4 + 2 * 2) * 2]
    assert 0 <= analysis.current.overall.iou70 <= analysis.current.overall.iou50 <= 1


def test_anchors_command_reports_bad_input_without_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BOOKSEG_CACHE", str(tmp_path / "cache"))
    assert main(["anchors", str(tmp_path / "missing.json")]) == 2
    assert "bookseg anchors: error:" in capsys.readouterr().err
    assert main(["anchors", "synthetic", "--scales", "16", "32"]) == 2
    assert "one scale per level" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()  # the config is checked before any data is generated


def test_neighbour_overlap_counts_books_detection_nms_can_remove():
    # Image a: two leaning-book boxes side by side at IoU 1/3 (each 40 wide, overlapping by 20), one apart.
    # Image b: a box alone, and a box equal to image a's first (other images do not count).
    records = [
        _record("a", 256, 256, [(0, 0, 100, 40), (0, 20, 100, 60), (0, 200, 100, 240)]),
        _record("b", 256, 256, [(0, 0, 100, 40), (150, 150, 200, 200)]),
    ]
    config = _cpu_config()
    analysis = analyze_anchors(records, config, suggest=False)
    np.testing.assert_allclose(analysis.neighbour_iou, [1 / 3, 1 / 3, 0, 0, 0], atol=1e-9)
    text = format_analysis(analysis, config.replace(detection_nms_threshold=0.3))
    assert "(IoU > 0.3: 40%, > 0.5: 0%, > 0.7: 0%)" in text
    assert "model.detection_nms_threshold=0.3: 40% of these books can lose theirs" in text
    assert "model.detection_nms_threshold=0.5: 0%" in format_analysis(
        analysis, config.replace(detection_nms_threshold=0.5)
    )
