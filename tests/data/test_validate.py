"""Validation: every error and warning kind on tiny broken data sets, polygon geometry, rasterisation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from bookseg.data.polygons import (
    clip_polygon,
    drop_repeated_vertices,
    is_degenerate,
    self_intersections,
    signed_area,
)
from bookseg.data.problems import PROBLEM_KINDS, ValidationReport
from bookseg.data.readers import DatasetError, load_dataset, read_dataset
from bookseg.data.records import rasterize_polygon

from ._fixtures_readers import (
    coco,
    polygon,
    shape,
    square,
    via2_entry,
    write_image,
    write_json,
    write_via2_dataset,
)


def test_every_error_kind_is_collected_and_located(tmp_path):
    write_image(tmp_path / "outside.jpg")  # the target of "../outside.jpg", outside the data set folder
    root = tmp_path / "set"
    entries = [
        via2_entry("ok.jpg", [square(1, 1, 8)]),
        via2_entry("gone.jpg", [square(1, 1, 8)]),
        via2_entry("broken.jpg", [square(1, 1, 8)]),
        via2_entry(
            "shapes.jpg",
            [square(1, 1, 8), shape("hexagon", side=3), shape("rect", x=1, y="a", width=2, height=2)],
        ),
        via2_entry("./ok.jpg", [square(1, 1, 8)]),  # the same file as ok.jpg
        via2_entry("../outside.jpg", [square(1, 1, 8)]),
        via2_entry("/etc/hosts.jpg", [square(1, 1, 8)]),
        via2_entry("http://example.com/a.jpg", [square(1, 1, 8)]),
    ]
    path = write_via2_dataset(root, entries)
    (root / "gone.jpg").unlink()
    (root / "broken.jpg").write_bytes(b"this is no JPEG")
    with pytest.raises(DatasetError) as caught:
        load_dataset(path)
    found = [(p.kind, p.image, p.region) for p in caught.value.problems]
    assert found == [
        ("unknown_shape", "shapes.jpg", "region 1 (hexagon)"),
        ("bad_region", "shapes.jpg", "region 2 (rect)"),
        ("unsafe_path", "../outside.jpg", ""),
        ("unsafe_path", "/etc/hosts.jpg", ""),
        ("remote_image", "http://example.com/a.jpg", ""),
        ("missing_image", "gone.jpg", ""),
        ("unreadable_image", "broken.jpg", ""),
        ("duplicate_image", "./ok.jpg", ""),
    ]
    assert all(p.file == str(path) for p in caught.value.problems)
    assert all(PROBLEM_KINDS[p.kind].severity == "error" for p in caught.value.problems)
    message = str(caught.value)
    assert message.startswith("8 errors in the data set:")
    assert f'{path}: image "gone.jpg": image file not found: {root.resolve() / "gone.jpg"}' in message
    assert 'entry resolves to the same image as entry "ok.jpg"' in message


def test_error_message_shows_20_errors_and_counts_the_rest(tmp_path):
    entries = [via2_entry("a.jpg", [shape("blob")] * 25)]
    path = write_via2_dataset(tmp_path, entries)
    with pytest.raises(DatasetError) as caught:
        load_dataset(path)
    assert len(caught.value.problems) == 25
    text = str(caught.value)
    assert text.count("unknown shape 'blob'") == 20 and text.endswith("... and 5 more errors")


def test_size_mismatch_explains_exif_rotation(tmp_path):
    stored = Image.fromarray(np.zeros((30, 50, 3), np.uint8))  # 50 x 30 as stored, portrait when displayed
    exif = stored.getexif()
    exif[0x0112] = 6
    stored.save(tmp_path / "p.jpg", exif=exif)
    data = coco([{"id": 1, "file_name": "p.jpg", "width": 50, "height": 30}], [])
    with pytest.raises(DatasetError) as caught:
        load_dataset(write_json(tmp_path / "c.json", data))
    (problem,) = caught.value.problems
    assert problem.kind == "size_mismatch" and problem.image == "p.jpg"
    assert "image file" in problem.message and "is 30x50 after EXIF orientation 6" in problem.message
    # check_images=False trusts the annotated size and never opens the file
    (tmp_path / "p.jpg").unlink()
    assert len(load_dataset(tmp_path / "c.json", check_images=False).records) == 1


def test_warnings_fix_or_skip_and_counts_add_up(tmp_path):
    # images are 64 x 48
    regions = [
        square(2, 2, 10),  # fine
        polygon([5, 20], [5, 20]),  # two points
        polygon([1, 10, 19], [1, 10, 19]),  # collinear
        polygon([-20, 30, 30, -20], [10, 10, 20, 20]),  # 20 px outside on the left: clipped
        polygon([100, 120, 120], [5, 5, 30]),  # entirely outside
        polygon([10, 30, 30, 10], [30, 44, 30, 44]),  # bow-tie: self-intersecting
        polygon([40, 64.3, 64.3, 40], [30, 30, 40, 40]),  # 0.3 px beyond the border: rounding
        polygon([40, 40.4, 40.4, 40], [2.6, 2.6, 3.4, 3.4]),  # 0.4 x 0.8 px: covers no pixel centre
        None,
        shape("point", cx=3, cy=3),
        shape("polyline", all_points_x=[40, 60, 60], all_points_y=[10, 10, 20]),
    ]
    path = write_via2_dataset(tmp_path, [via2_entry("a.jpg", regions), via2_entry("empty.jpg", [])])
    dataset = load_dataset(path)
    report = dataset.report
    assert report.counts == {
        "null_region": 1,
        "point_skipped": 1,
        "polyline_closed": 1,
        "degenerate_polygon": 2,
        "points_outside_image": 1,
        "outside_image": 1,
        "self_intersecting": 1,
        "points_on_border": 1,
        "no_pixels": 1,
        "image_without_instances": 1,
    }
    assert report.regions == 11 and report.instances == 5
    assert report.regions == report.instances + report.dropped_regions()
    a, empty = dataset.records
    assert empty.instances == [] and empty.image_id == "empty.jpg"
    kept = {inst.region: inst for inst in a.instances}
    assert sorted(kept) == [
        "region 0 (polygon)",
        "region 10 (polyline)",
        "region 3 (polygon)",
        "region 5 (polygon)",
        "region 6 (polygon)",
    ]
    clipped = kept["region 3 (polygon)"].polygon
    assert clipped[:, 0].min() == 0 and signed_area(clipped) == pytest.approx(30 * 10)
    assert kept["region 6 (polygon)"].polygon[:, 0].max() == 64
    bowtie = kept["region 5 (polygon)"].to_mask(48, 64)
    assert bowtie[31, 11] and bowtie[31, 28] and not bowtie[31, 20]  # two lobes, nothing between
    for problem in report.warnings:
        assert problem.file == str(path) and problem.image == "a.jpg" and problem.region.startswith("region ")
    outside = next(p for p in report.warnings if p.kind == "points_outside_image")
    assert outside.region == "region 3 (polygon)" and "20.0 px outside the 64x48 image" in outside.message
    summary = report.summary()
    assert "0 errors, 9 warnings, 2 notes; 11 regions read, 5 instances kept, 6 regions not kept" in summary
    assert "warning degenerate_polygon: 2 in 1 images" in summary
    assert "note image_without_instances: 1 in 1 images" in summary


def test_class_names_restrict_classes(tmp_path):
    entries = [via2_entry("a.jpg", [square(1, 1, 8, kind="book"), square(20, 1, 8, kind="vase")])]
    path = write_via2_dataset(tmp_path, entries)
    assert load_dataset(path, class_attribute="kind", class_names=["book", "vase"]).class_names == [
        "book",
        "vase",
    ]
    dataset = read_dataset(path, class_attribute="kind", class_names=["book"])
    (problem,) = dataset.report.errors
    assert (problem.kind, problem.image, problem.region) == ("unknown_class", "a.jpg", "region 1 (polygon)")
    assert dataset.num_instances == 1


def test_report_rejects_uncatalogued_kinds():
    with pytest.raises(ValueError, match="unknown problem kind"):
        ValidationReport().add("typo_kind", "f.json")


# ---- polygon geometry -------------------------------------------------------------------------


def test_self_intersections_and_degenerate_polygons():
    simple = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], float)
    bowtie = np.array([[0, 0], [10, 10], [10, 0], [0, 10]], float)
    touching = np.array([[0, 0], [10, 0], [5, 5], [10, 10], [0, 10], [5, 0]], float)  # vertex on an edge
    spike = np.array([[0, 0], [10, 0], [10, 10], [10, 5]], float)  # last edge folds back on itself
    pentagram = np.array(
        [[50 + 40 * math.sin(k * 4 * math.pi / 5), 50 - 40 * math.cos(k * 4 * math.pi / 5)] for k in range(5)]
    )
    flags = self_intersections([simple, bowtie, touching, spike, pentagram, simple[:3]])
    np.testing.assert_array_equal(flags, [False, True, True, True, True, False])
    assert signed_area(bowtie) == 0 and not is_degenerate(bowtie, True)
    assert is_degenerate(np.array([[0, 0], [5, 5], [9, 9]], float), False)
    assert is_degenerate(np.array([[0, 0], [5, 5], [0, 0], [5, 5]], float), True)
    assert not is_degenerate(simple, False)
    np.testing.assert_array_equal(
        drop_repeated_vertices([[0, 0], [1, 0], [1, 0], [1, 1], [0, 0]]), [[0, 0], [1, 0], [1, 1]]
    )


def test_clipping_keeps_the_pixels_inside_the_image():
    rng = np.random.default_rng(5)
    for _ in range(40):
        poly = rng.uniform(-15, 45, (rng.integers(3, 9), 2))
        clipped = clip_polygon(poly, 30, 20)
        assert clipped.size == 0 or (
            clipped.min() >= 0 and clipped[:, 0].max() <= 30 and clipped[:, 1].max() <= 20
        )
        np.testing.assert_array_equal(rasterize_polygon(poly, 20, 30), rasterize_polygon(clipped, 20, 30))


def _reference_mask(poly: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pixel-centre rule by brute force: centre on an edge, or inside by ray-crossing parity."""
    mask = np.zeros((height, width), bool)
    edges = list(zip(poly, np.roll(poly, -1, axis=0)))
    for i in range(height):
        for j in range(width):
            cx, cy = j + 0.5, i + 0.5
            inside = on_edge = False
            for (ax, ay), (bx, by) in edges:
                cross = (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)
                within = (
                    min(ax, bx) - 1e-9 <= cx <= max(ax, bx) + 1e-9
                    and min(ay, by) - 1e-9 <= cy <= max(ay, by) + 1e-9
                )
                on_edge |= abs(cross) < 1e-9 and within
                if (ay > cy) != (by > cy) and cx < ax + (cy - ay) * (bx - ax) / (by - ay):
                    inside = not inside
            mask[i, j] = inside or on_edge
    return mask


def test_rasterize_polygon_follows_the_documented_pixel_centre_even_odd_rule():
    rng = np.random.default_rng(11)
    for trial in range(60):
        n = rng.integers(3, 8)
        # half the trials on a half-pixel grid, so vertices and edges hit pixel centres exactly
        poly = rng.integers(-4, 34, (n, 2)) / 2.0 if trial % 2 else rng.uniform(-2, 17, (n, 2))
        np.testing.assert_array_equal(
            rasterize_polygon(poly, 15, 16), _reference_mask(poly, 15, 16), err_msg=str(poly)
        )
    square_ = np.array([[0, 0], [4, 0], [4, 4], [0, 4]], float)
    assert rasterize_polygon(square_, 6, 6).sum() == 16
    assert rasterize_polygon(square_ * 0.7 + 0.6, 6, 6).sum() == 4  # [0.6, 3.4]^2 holds centres 1.5, 2.5
    star = np.array(
        [[50 + 40 * math.sin(k * 4 * math.pi / 5), 50 - 40 * math.cos(k * 4 * math.pi / 5)] for k in range(5)]
    )
    star_mask = rasterize_polygon(star, 100, 100)
    assert not star_mask[50, 50] and star_mask[20, 50]  # even-odd: the centre pentagon is a hole


def test_contour_through_boundary_pixel_centres_rasterises_back_to_its_mask():
    import cv2

    rng = np.random.default_rng(2)
    for _ in range(20):
        mask = np.zeros((40, 40), np.uint8)
        for _ in range(3):
            cv2.circle(mask, tuple(int(v) for v in rng.integers(5, 35, 2)), int(rng.integers(2, 9)), 1, -1)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        filled = np.zeros_like(mask)
        cv2.drawContours(filled, contours, -1, 1, -1)
        back = np.zeros((40, 40), bool)
        for contour in contours:
            back |= rasterize_polygon(contour.reshape(-1, 2) + 0.5, 40, 40)
        np.testing.assert_array_equal(back, filled.astype(bool))
