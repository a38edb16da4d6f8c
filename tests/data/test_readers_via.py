"""VIA 1 / 2 / 3 readers: real Open Shelves project, every shape, attributes, format detection."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bookseg.data.polygons import signed_area
from bookseg.data.readers import DatasetError, detect_format, load_dataset, read_dataset

from ._fixtures_readers import (
    OPEN_SHELVES,
    polygon,
    shape,
    square,
    via2_entry,
    via2_project,
    write_image,
    write_json,
    write_via2_dataset,
)


@pytest.fixture(scope="module")
def open_shelves():
    return load_dataset(OPEN_SHELVES)


def test_open_shelves_loads_482_images_9678_instances(open_shelves):
    assert open_shelves.format == "via2_project"
    assert len(open_shelves.records) == 482
    assert open_shelves.num_instances == 9678
    assert open_shelves.class_names == ["book"]
    report = open_shelves.report
    assert report.regions == 9678 and report.instances == 9678 and not report.errors
    # README: 1,337 regions in 311 images reach outside their image (by more than rounding)
    assert report.counts["points_outside_image"] == 1337
    assert len(report.kinds_by_image("points_outside_image")) == 311
    first = open_shelves.records[0]
    assert first.path.is_absolute() and first.path.is_file()
    assert first.path.parent.name == "images"  # found in the images/ subfolder
    assert first.group == first.image_id == first.path.name
    assert first.source == str(OPEN_SHELVES)
    assert (first.width, first.height) == (640, 640)


def test_open_shelves_polygons_clipped_into_image(open_shelves):
    for record in open_shelves.records[:60]:
        for inst in record.instances:
            assert inst.polygon.min() >= 0
            assert inst.polygon[:, 0].max() <= record.width and inst.polygon[:, 1].max() <= record.height


def test_open_shelves_order_follows_image_id_list(open_shelves):
    import json

    project = json.loads(OPEN_SHELVES.read_text())
    names = [project["_via_img_metadata"][key]["filename"] for key in project["_via_image_id_list"]]
    assert [r.image_id for r in open_shelves.records] == names


def test_class_attribute_reads_region_attribute_on_real_data():
    dataset = load_dataset(OPEN_SHELVES, class_attribute="name", check_images=False)
    assert dataset.class_names == ["book"] and dataset.num_instances == 9678


def test_via1_export_dict_regions_ordered_by_int_key_and_closed_polygons(tmp_path):
    write_image(tmp_path / "a.jpg", 64, 48)
    regions = {
        "10": polygon([40, 50, 45, 40], [5, 5, 15, 5], name="c"),  # VIA 1 repeats the first vertex
        "2": polygon([20, 30, 25, 20], [5, 5, 15, 5], name="b"),
        "0": polygon([1, 10, 5, 1], [5, 5, 15, 5], name="a"),
    }
    data = {
        "a.jpg1234": {
            "fileref": "",
            "size": 1234,
            "filename": "a.jpg",
            "base64_img_data": "",
            "file_attributes": {"caption": "shelf"},
            "regions": regions,
        }
    }
    path = write_json(tmp_path / "via_region_data.json", data)
    assert detect_format(data) == "via1"
    dataset = load_dataset(path, class_attribute="name")
    assert dataset.format == "via1"
    (record,) = dataset.records
    assert record.class_names() == ["a", "b", "c"]
    assert [inst.region for inst in record.instances] == [
        "region 0 (polygon)",
        "region 2 (polygon)",
        "region 10 (polygon)",
    ]
    np.testing.assert_array_equal(record.instances[0].polygon, [[1, 5], [10, 5], [5, 15]])
    assert record.attributes == {"caption": "shelf"}
    assert dataset.class_names == ["a", "b", "c"]


def test_via2_export_shapes_become_polygons(tmp_path):
    regions = [
        shape("rect", x=10, y=5, width=20, height=8),
        shape("circle", cx=40, cy=30, r=6),
        shape("ellipse", cx=20, cy=30, rx=10, ry=3, theta=math.pi / 2),
        shape("ellipse", cx=50, cy=10, rx=8, ry=4),  # VIA < 2.0.8: no theta
        None,  # hole written by JSON.stringify
        shape("point", cx=3, cy=3),
        shape("polyline", all_points_x=[2, 12, 12], all_points_y=[40, 40, 46]),
    ]
    write_image(tmp_path / "b.png", 64, 48)
    data = {"b.png-1": via2_entry("b.png", regions)}
    path = write_json(tmp_path / "export.json", data)
    assert detect_format(data) == "via2"
    dataset = load_dataset(path)
    rect, circle, ellipse, plain_ellipse, polyline = dataset.records[0].instances
    np.testing.assert_array_equal(rect.polygon, [[10, 5], [30, 5], [30, 13], [10, 13]])
    assert len(circle.polygon) == 64
    assert abs(signed_area(circle.polygon)) == pytest.approx(math.pi * 36, rel=0.005)
    # rotated by 90 degrees: the 10 px semi-axis now runs along y
    extent = ellipse.polygon.max(axis=0) - ellipse.polygon.min(axis=0)
    np.testing.assert_allclose(extent, [6, 20], atol=0.05)
    np.testing.assert_allclose(
        plain_ellipse.polygon.max(axis=0) - plain_ellipse.polygon.min(axis=0), [16, 8], atol=0.05
    )
    np.testing.assert_array_equal(polyline.polygon, [[2, 40], [12, 40], [12, 46]])
    report = dataset.report
    assert report.counts == {"null_region": 1, "point_skipped": 1, "polyline_closed": 1}
    assert report.regions == 7 and report.instances == 5
    assert report.regions == report.instances + report.dropped_regions()
    null = next(p for p in report.warnings if p.kind == "null_region")
    assert (null.file, null.image, null.region) == (str(path), "b.png", "region 4")


def test_via2_project_option_ids_map_to_labels(tmp_path):
    definitions = {
        "type": {
            "type": "radio",
            "description": "",
            "options": {"b": "book", "m": "magazine"},
            "default_options": {},
        },
        "tags": {
            "type": "checkbox",
            "description": "",
            "options": {"b": "book", "x": "box"},
            "default_options": {},
        },
        "size": {
            "type": "dropdown",
            "description": "",
            "options": {"s": "small", "l": "large"},
            "default_options": {},
        },
    }
    entries = [
        via2_entry(
            "a.jpg",
            [
                square(1, 1, 8, type="b", tags={"b": True}),
                square(20, 1, 8, type="m", tags={"x": True, "b": False}),
            ],
        ),
        via2_entry("b.jpg", [square(1, 1, 8, type="b", tags={"b": True}, size="l")]),
    ]
    path = write_via2_dataset(tmp_path, entries, region_attributes=definitions)
    assert load_dataset(path, class_attribute="type").class_names == ["book", "magazine"]
    by_checkbox = load_dataset(path, class_attribute="tags")
    assert [r.class_names() for r in by_checkbox.records] == [["book", "box"], ["book"]]


def test_via2_project_class_errors_name_file_image_region(tmp_path):
    definitions = {"tags": {"type": "checkbox", "options": {"b": "book", "x": "box"}, "default_options": {}}}
    entries = [
        via2_entry("a.jpg", [square(1, 1, 8, tags={"b": True, "x": True}), square(20, 1, 8, other="1")]),
        via2_entry("b.jpg", [square(1, 1, 8, tags={})]),
    ]
    path = write_via2_dataset(tmp_path, entries, region_attributes=definitions)
    with pytest.raises(DatasetError) as caught:
        load_dataset(path, class_attribute="tags")
    problems = caught.value.problems
    assert [(p.kind, p.image, p.region) for p in problems] == [
        ("ambiguous_class", "a.jpg", "region 0 (polygon)"),
        ("missing_class", "a.jpg", "region 1 (polygon)"),
        ("missing_class", "b.jpg", "region 0 (polygon)"),
    ]
    message = str(caught.value)
    assert f'{path}: image "a.jpg", region 1 (polygon): no value for class attribute "tags"' in message
    assert "(region attributes: other)" in message


def _via3_project() -> dict:
    return {
        "project": {"pid": "__VIA_PROJECT_ID__", "data_format_version": "3.1.1", "vid_list": ["2", "1"]},
        "config": {"file": {"loc_prefix": {"1": "", "2": "", "3": "imgs/", "4": ""}}, "ui": {}},
        "attribute": {
            "1": {
                "aname": "kind",
                "anchor_id": "FILE1_Z0_XY1",
                "type": 3,
                "options": {"0": "book", "1": "box"},
            },
            "2": {"aname": "shelf", "anchor_id": "FILE1_Z0_XY0", "type": 1, "options": {}},
            "3": {"aname": "kind", "anchor_id": "FILE1_Z0_XY0", "type": 1, "options": {}},
        },
        "file": {
            "1": {"fid": "1", "fname": "one.jpg", "type": 2, "loc": 1, "src": ""},
            "2": {"fid": 2, "fname": "two.jpg", "type": 2, "loc": 3, "src": "two.jpg"},
        },
        "view": {"1": {"fid_list": ["1"]}, "2": {"fid_list": [2]}},
        "metadata": {
            "1_a": {"vid": "1", "flg": 0, "z": [], "xy": [7, 2, 2, 12, 2, 12, 12], "av": {"1": "0"}},
            "1_b": {"vid": "1", "flg": 0, "z": [], "xy": [2, 20, 4, 10, 6], "av": {"1": "1"}},
            "1_c": {"vid": "1", "flg": 0, "z": [], "xy": [8, 40, 5, 50, 9, 45, 15, 35, 10], "av": {"1": "0"}},
            "1_d": {"vid": "1", "flg": 0, "z": [], "xy": [9, 30, 30, 40, 30, 35, 35], "av": {"1": "0"}},
            "1_e": {"vid": "1", "flg": 0, "z": [], "xy": [1, 5, 5], "av": {"1": "0"}},
            "1_f": {"vid": "1", "flg": 0, "z": [], "xy": [], "av": {"2": "top"}},
            "2_a": {"vid": "2", "flg": 0, "z": [], "xy": [4, 30, 20, 8, 4], "av": {"1": "1"}},
        },
    }


def test_via3_project_shapes_attributes_and_view_order(tmp_path):
    write_image(tmp_path / "one.jpg")
    write_image(tmp_path / "imgs" / "two.jpg")
    data = _via3_project()
    path = write_json(tmp_path / "via3.json", data)
    assert detect_format(data) == "via3"
    dataset = load_dataset(path, class_attribute="kind")
    two, one = dataset.records  # vid_list order: view 2 first
    assert (two.image_id, one.image_id) == ("two.jpg", "one.jpg")
    assert two.path == (tmp_path / "imgs" / "two.jpg").resolve()
    assert one.class_names() == ["book", "box", "book", "book"]
    assert one.attributes == {"shelf": "top"}
    triangle, rect, extreme_rect, extreme_circle = one.instances
    np.testing.assert_array_equal(triangle.polygon, [[2, 2], [12, 2], [12, 12]])
    np.testing.assert_array_equal(rect.polygon, [[20, 4], [30, 4], [30, 10], [20, 10]])
    np.testing.assert_array_equal(extreme_rect.polygon, [[35, 5], [50, 5], [50, 15], [35, 15]])
    centre = extreme_circle.polygon.mean(axis=0)
    np.testing.assert_allclose(centre, [35, 30], atol=1e-9)  # circle through (30,30), (40,30), (35,35)
    np.testing.assert_allclose(np.hypot(*(extreme_circle.polygon - centre).T), 5.0)
    assert extreme_circle.region == "region 1_d (extreme_circle)"
    assert dataset.report.counts["point_skipped"] == 1
    assert dataset.class_names == ["book", "box"]


def test_format_detection_and_mismatch(tmp_path):
    assert detect_format(via2_project([])) == "via2_project"
    assert detect_format({"images": [], "annotations": [], "categories": []}) == "coco"
    assert detect_format({"shapes": [], "imagePath": "a.jpg"}) == "labelme"
    assert detect_format({"a": {"filename": "a.jpg", "regions": []}}) == "via2"
    assert detect_format({"something": 1}) is None
    path = write_via2_dataset(tmp_path, [via2_entry("a.jpg", [square(1, 1, 5)])])
    assert load_dataset(path, format="via").format == "via2_project"
    with pytest.raises(DatasetError, match="format='coco' requested but the file is via2_project"):
        load_dataset(path, format="coco")
    write_json(tmp_path / "other.json", {"something": 1})
    with pytest.raises(DatasetError, match="not a VIA 1/2/3, COCO or LabelMe"):
        load_dataset(tmp_path / "other.json")


def test_folder_path_and_images_dir(tmp_path):
    write_image(tmp_path / "pics" / "a.jpg")
    write_json(tmp_path / "ann" / "project.json", via2_project([via2_entry("a.jpg", [square(1, 1, 5)])]))
    with pytest.raises(DatasetError, match="image file not found"):
        load_dataset(tmp_path / "ann")  # a folder with one .json
    dataset = load_dataset(tmp_path / "ann", images_dir=tmp_path / "pics")
    assert dataset.records[0].path == (tmp_path / "pics" / "a.jpg").resolve()
    assert dataset.source == tmp_path / "ann" / "project.json"


def test_read_dataset_returns_report_instead_of_raising(tmp_path):
    entries = [via2_entry("a.jpg", [square(1, 1, 5)]), via2_entry("gone.jpg", [square(1, 1, 5)])]
    path = write_via2_dataset(tmp_path, entries)
    (tmp_path / "gone.jpg").unlink()
    dataset = read_dataset(path)
    assert [r.image_id for r in dataset.records] == ["a.jpg"]
    assert [(p.kind, p.image) for p in dataset.report.errors] == [("missing_image", "gone.jpg")]


def test_via3_remote_and_absolute_files_are_errors(tmp_path):
    write_image(tmp_path / "one.jpg")
    data = _via3_project()
    data["file"]["2"].update(loc=2, src="https://example.com/two.jpg")
    data["file"]["3"] = {"fid": "3", "fname": "three.jpg", "type": 2, "loc": 3, "src": "/abs/three.jpg"}
    data["view"]["3"] = {"fid_list": ["3"]}
    data["project"]["vid_list"].append("3")
    data["config"]["file"]["loc_prefix"]["3"] = ""
    data["metadata"]["1_g"] = {"vid": "1", "flg": 0, "z": [2.5], "xy": [7, 1, 1, 5, 1, 5, 5], "av": {}}
    with pytest.raises(DatasetError) as caught:
        load_dataset(write_json(tmp_path / "via3.json", data), class_attribute="kind")
    assert [(p.kind, p.image, p.region) for p in caught.value.problems] == [
        ("remote_image", "two.jpg", ""),
        ("bad_region", "one.jpg", "region 1_g"),
        ("unsafe_path", "three.jpg", ""),
    ]


def test_via2_project_finds_images_through_default_filepath(tmp_path):
    """A project saved away from its photos (as `bookseg predict` writes it) loads without images_dir."""
    import cv2

    from bookseg.data.records import ImageRecord, Instance
    from bookseg.data.via_writer import write_via2_project

    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "a.png"), np.zeros((20, 30, 3), np.uint8))
    square = np.array([[2, 2], [12, 2], [12, 12], [2, 12]], float)
    record = ImageRecord("a.png", photos / "a.png", 30, 20, [Instance("book", polygon=square)])
    project = write_via2_project([record], tmp_path / "out" / "via_project.json")
    dataset = load_dataset(project)
    assert [r.path for r in dataset.records] == [(photos / "a.png").resolve()]
    assert dataset.num_instances == 1
