"""VIA 2 project writer: file layout VIA needs, mask -> polygon conversion, no silent overwrite."""

import json
import logging
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from bookseg.data.polygons import self_intersections
from bookseg.data.records import ImageRecord, Instance, rasterize_polygon
from bookseg.data.via_writer import mask_to_polygon, write_via2_project

H, W = 40, 60


def _image(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 255, (H, W, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), rgb)
    return path


def _rect_mask(y0, y1, x0, x1):
    mask = np.zeros((H, W), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def _records(tmp_path):
    triangle = np.array([[5.0, 5.0], [30.0, 8.0], [12.5, 33.0]])
    first = ImageRecord(
        "a.png",
        _image(tmp_path / "data" / "images" / "a.png"),
        W,
        H,
        instances=[Instance("book", polygon=triangle), Instance("box", mask=_rect_mask(20, 35, 40, 52))],
        attributes={"group": "g1", "shot": 3},
    )
    second = ImageRecord("b.png", _image(tmp_path / "data" / "images" / "b.png", 1), W, H)
    return [first, second]


def test_project_has_the_layout_via_loads(tmp_path):
    records = _records(tmp_path)
    path = write_via2_project(records, tmp_path / "data" / "project.json")
    project = json.loads(path.read_text())

    assert list(project) == [
        "_via_settings",
        "_via_img_metadata",
        "_via_attributes",
        "_via_data_format_version",
        "_via_image_id_list",
    ]
    settings = project["_via_settings"]
    assert set(settings) == {"ui", "core", "project"}
    assert settings["core"]["default_filepath"] == "images/"
    assert settings["project"]["name"] == "project"
    size_a = os.path.getsize(records[0].path)
    size_b = os.path.getsize(records[1].path)
    assert project["_via_image_id_list"] == [f"a.png{size_a}", f"b.png{size_b}"]
    assert list(project["_via_img_metadata"]) == project["_via_image_id_list"]

    entry = project["_via_img_metadata"][f"a.png{size_a}"]
    assert list(entry) == ["filename", "size", "regions", "file_attributes"]
    assert entry["filename"] == "a.png" and entry["size"] == size_a
    assert entry["file_attributes"] == {"group": "g1", "shot": "3"}
    assert isinstance(entry["regions"], list) and len(entry["regions"]) == 2
    polygon = entry["regions"][0]["shape_attributes"]
    assert polygon == {"name": "polygon", "all_points_x": [5, 30, 12.5], "all_points_y": [5, 8, 33]}
    assert [r["region_attributes"] for r in entry["regions"]] == [{"name": "book"}, {"name": "box"}]
    # The mask became an open polygon (first vertex not repeated) covering exactly the rectangle.
    shape = entry["regions"][1]["shape_attributes"]
    points = np.stack([shape["all_points_x"], shape["all_points_y"]], axis=1)
    assert len(points) == 4 and not np.array_equal(points[0], points[-1])
    np.testing.assert_array_equal(rasterize_polygon(points, H, W), _rect_mask(20, 35, 40, 52))

    assert project["_via_img_metadata"][f"b.png{size_b}"]["regions"] == []
    assert project["_via_attributes"]["region"] == {
        "name": {"type": "text", "description": "object class", "default_value": ""}
    }
    assert set(project["_via_attributes"]["file"]) == {"group", "shot"}


def test_refuses_to_overwrite_unless_asked(tmp_path):
    records = _records(tmp_path)
    path = tmp_path / "data" / "project.json"
    path.write_text("user data")
    with pytest.raises(FileExistsError, match="project.json"):
        write_via2_project(records, path)
    assert path.read_text() == "user data"
    write_via2_project(records, path, overwrite=True)
    assert "_via_img_metadata" in json.loads(path.read_text())


def test_default_filepath_is_absolute_for_images_outside_the_json_folder(tmp_path):
    records = _records(tmp_path)
    project = json.loads(write_via2_project(records, tmp_path / "out" / "p.json").read_text())
    expected = (tmp_path / "data" / "images").resolve().as_posix() + "/"
    assert project["_via_settings"]["core"]["default_filepath"] == expected
    explicit = write_via2_project(records, tmp_path / "out" / "q.json", default_filepath="/srv/photos")
    assert json.loads(explicit.read_text())["_via_settings"]["core"]["default_filepath"] == "/srv/photos/"


def test_images_in_subfolders_keep_relative_file_names(tmp_path):
    records = [
        ImageRecord("x", _image(tmp_path / "d" / "one" / "x.png"), W, H),
        ImageRecord("y", _image(tmp_path / "d" / "two" / "x.png"), W, H),
    ]
    project = json.loads(write_via2_project(records, tmp_path / "d" / "p.json").read_text())
    assert project["_via_settings"]["core"]["default_filepath"] == "./"
    names = [e["filename"] for e in project["_via_img_metadata"].values()]
    assert names == ["one/x.png", "two/x.png"]


def test_duplicate_file_names_are_an_error(tmp_path):
    path = _image(tmp_path / "a.png")
    records = [ImageRecord("a", path, W, H), ImageRecord("b", path, W, H)]
    with pytest.raises(ValueError, match="share the file name"):
        write_via2_project(records, tmp_path / "p.json")


def test_missing_image_file_gets_size_minus_one(tmp_path):
    record = ImageRecord("gone.png", tmp_path / "gone.png", W, H)
    project = json.loads(write_via2_project([record], tmp_path / "p.json").read_text())
    assert project["_via_image_id_list"] == ["gone.png-1"]
    assert project["_via_img_metadata"]["gone.png-1"]["size"] == -1


def test_extra_region_attributes_are_written_and_declared(tmp_path):
    records = _records(tmp_path)
    extras = {"a.png": [{"score": 0.91}, {"score": "0.5"}]}
    project = json.loads(
        write_via2_project(records, tmp_path / "p.json", region_attributes=extras).read_text()
    )
    regions = next(iter(project["_via_img_metadata"].values()))["regions"]
    assert [r["region_attributes"] for r in regions] == [
        {"name": "book", "score": "0.91"},
        {"name": "box", "score": "0.5"},
    ]
    assert set(project["_via_attributes"]["region"]) == {"name", "score"}
    with pytest.raises(ValueError, match="2 instances"):
        write_via2_project(records, tmp_path / "q.json", region_attributes={"a.png": [{"score": 1}]})
    with pytest.raises(ValueError, match="unknown image ids: nope"):
        write_via2_project(records, tmp_path / "r.json", region_attributes={"nope": []})


def test_unsimplified_contour_rasterises_back_to_the_same_mask():
    rng = np.random.default_rng(0)
    for _ in range(50):
        mask = np.zeros((64, 64), np.uint8)
        points = rng.uniform(0, 64, (6, 2)).astype(np.int32)
        cv2.fillConvexPoly(mask, cv2.convexHull(points), 1)
        if mask.sum() < 3:
            continue
        polygon, parts = mask_to_polygon(mask > 0, simplify_tolerance=0)
        assert parts == 1
        np.testing.assert_array_equal(rasterize_polygon(polygon, 64, 64), mask > 0)


def test_light_simplification_keeps_rotated_books_accurate():
    exact_vertices, simplified_vertices, ious = 0, 0, []
    for angle in range(0, 90, 7):
        mask = np.zeros((120, 120), np.uint8)
        box = cv2.boxPoints(((60.0, 60.0), (14.0, 90.0), float(angle)))
        cv2.fillPoly(mask, [np.round(box).astype(np.int32)], 1)
        exact, _ = mask_to_polygon(mask > 0, simplify_tolerance=0)
        polygon, _ = mask_to_polygon(mask > 0)
        exact_vertices += len(exact)
        simplified_vertices += len(polygon)
        back = rasterize_polygon(polygon, 120, 120)
        ious.append((back & (mask > 0)).sum() / (back | (mask > 0)).sum())
    assert simplified_vertices < exact_vertices / 3
    assert min(ious) > 0.9 and np.mean(ious) > 0.97


@pytest.mark.parametrize(
    "pixels",
    [[(7, 9)], [(3, c) for c in range(5, 20)], [(r, 30) for r in range(2, 9)]],
    ids=["single pixel", "row line", "column line"],
)
def test_thin_masks_become_their_pixel_box(pixels):
    mask = np.zeros((20, 40), bool)
    for r, c in pixels:
        mask[r, c] = True
    polygon, _ = mask_to_polygon(mask)
    assert len(polygon) >= 3
    np.testing.assert_array_equal(rasterize_polygon(polygon, 20, 40), mask)


def test_one_pixel_spurs_do_not_make_the_outline_self_intersecting():
    """A book partly hidden so that a 1-px-wide strip of it stays visible (as the synthetic shelves make)."""
    mask = np.zeros((40, 30), bool)
    mask[5:30, 8:20] = True
    mask[30:38, 8] = True  # a spur one pixel wide, below the left edge
    mask[10:25, 13] = False  # a slit one pixel wide, open at the top
    mask[5:10, 13] = False
    exact = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0][0]
    assert self_intersections([exact.reshape(-1, 2) + 0.5])[0]  # the plain trace runs back over itself
    polygon, parts = mask_to_polygon(mask)
    assert parts == 1 and not self_intersections([polygon])[0]
    drawn = rasterize_polygon(polygon, *mask.shape)
    assert np.count_nonzero(drawn & mask) / np.count_nonzero(drawn | mask) > 0.85


def test_split_and_empty_masks_are_counted_not_silent(tmp_path, caplog):
    two_parts = _rect_mask(2, 10, 2, 10) | _rect_mask(20, 38, 30, 50)
    record = ImageRecord(
        "a.png",
        _image(tmp_path / "a.png"),
        W,
        H,
        instances=[
            Instance("book", mask=two_parts),
            Instance("book", mask=np.zeros((H, W), bool)),
            Instance("book", mask=_rect_mask(0, 5, 50, 60)),
        ],
    )
    with caplog.at_level(logging.WARNING, logger="bookseg.data.via_writer"):
        path = write_via2_project([record], tmp_path / "p.json")
    message = " ".join(r.getMessage() for r in caplog.records)
    assert "1 empty masks skipped" in message
    assert "1 masks with several parts (only the largest written, 1 parts left out)" in message
    regions = next(iter(json.loads(path.read_text())["_via_img_metadata"].values()))["regions"]
    assert len(regions) == 2
    shape = regions[0]["shape_attributes"]
    kept = rasterize_polygon(np.stack([shape["all_points_x"], shape["all_points_y"]], 1), H, W)
    np.testing.assert_array_equal(kept, _rect_mask(20, 38, 30, 50))


def test_written_project_loads_through_the_reader(tmp_path):
    from bookseg.data.readers import load_dataset

    records = _records(tmp_path)
    path = write_via2_project(records, tmp_path / "data" / "project.json", class_attribute="label")
    dataset = load_dataset(path, class_attribute="label")

    assert dataset.class_names == ["book", "box"]
    loaded = {Path(r.path).name: r for r in dataset.records}
    assert sorted(loaded) == ["a.png", "b.png"]
    assert Path(loaded["a.png"].path) == records[0].path.resolve()
    assert loaded["a.png"].class_names() == ["book", "box"]
    assert loaded["a.png"].attributes["group"] == "g1"
    assert loaded["b.png"].instances == []
    np.testing.assert_array_equal(loaded["a.png"].masks(), records[0].masks())
