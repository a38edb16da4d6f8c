"""COCO and LabelMe readers: real bookshelf_v5 splits, polygons, RLE, crowd, groups, masks."""

from __future__ import annotations

import base64

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from bookseg.data.readers import DatasetError, load_dataset
from bookseg.data.records import rasterize_polygon

from ._fixtures_readers import BOOKSHELF, coco, labelme, write_image, write_json


@pytest.mark.parametrize(("split", "images", "instances"), [("train", 96, 1006), ("valid", 23, 45)])
def test_bookshelf_v5_splits(split, images, instances):
    dataset = load_dataset(BOOKSHELF / split / "annotations.json")
    assert dataset.format == "coco"
    assert (len(dataset.records), dataset.num_instances) == (images, instances)
    assert dataset.class_names == ["book"]
    assert not dataset.report.errors and not dataset.report.warnings
    record = dataset.records[0]
    assert record.attributes["id"] == 1 and record.group == record.image_id
    # Roboflow repeats the first vertex at the end; the reader drops it
    assert not (record.instances[0].polygon[0] == record.instances[0].polygon[-1]).all()


def test_folder_with_annotations_json_is_coco():
    dataset = load_dataset(BOOKSHELF / "valid", check_images=False)
    assert dataset.source.name == "annotations.json" and len(dataset.records) == 23


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO uncompressed RLE (column-major runs, starting with a run of zeros), built by hand."""
    flat = mask.flatten(order="F").astype(np.int8)
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    counts = np.diff(np.concatenate([[0], changes])).tolist()
    return {"size": list(mask.shape), "counts": counts}


def test_coco_polygons_multipart_rle_crowd_and_categories(tmp_path):
    write_image(tmp_path / "a.png", 40, 30)
    write_image(tmp_path / "b.png", 40, 30)
    write_image(tmp_path / "neg.png", 40, 30)
    blob = np.zeros((30, 40), bool)
    blob[5:12, 20:31] = True
    crowd = np.zeros((30, 40), bool)
    crowd[20:25, 2:9] = True
    compressed = mask_utils.encode(np.asfortranarray(blob.astype(np.uint8)))
    compressed["counts"] = compressed["counts"].decode("ascii")
    data = coco(
        images=[
            {"id": 7, "file_name": "a.png", "width": 40, "height": 30},
            {"id": 8, "file_name": "b.png", "width": 40, "height": 30},
            {"id": 9, "file_name": "neg.png", "width": 40, "height": 30},
        ],
        annotations=[
            {"image_id": 7, "category_id": 3, "segmentation": [[2, 2, 10, 2, 10, 10, 2, 10, 2, 2]]},
            # an occluded book in two parts: one instance, the union of both
            {"image_id": 7, "category_id": 3, "segmentation": [[20, 2, 24, 2, 24, 8], [26, 2, 30, 2, 30, 8]]},
            {"image_id": 8, "category_id": 5, "segmentation": compressed},
            {"image_id": 8, "category_id": 3, "segmentation": _uncompressed_rle(crowd), "iscrowd": 1},
        ],
        categories=[
            {"id": 5, "name": "magazine"},
            {"id": 3, "name": "book"},
            {"id": 4, "name": "box"},
            {"id": 6, "name": "book"},
        ],
    )
    dataset = load_dataset(write_json(tmp_path / "instances.json", data))
    assert dataset.class_names == ["magazine", "book", "box"]  # category order, duplicate name merged
    a, b, negative = dataset.records
    square, two_parts = a.instances
    np.testing.assert_array_equal(square.polygon, [[2, 2], [10, 2], [10, 10], [2, 10]])
    expected = rasterize_polygon(np.array([[20, 2], [24, 2], [24, 8]]), 30, 40) | rasterize_polygon(
        np.array([[26, 2], [30, 2], [30, 8]]), 30, 40
    )
    assert two_parts.polygon is None
    np.testing.assert_array_equal(two_parts.mask, expected)
    magazine, crowd_instance = b.instances
    assert magazine.class_name == "magazine"
    np.testing.assert_array_equal(magazine.mask, blob)
    np.testing.assert_array_equal(crowd_instance.mask, crowd)
    assert crowd_instance.iscrowd and not magazine.iscrowd
    assert negative.instances == []
    counts = dataset.report.counts
    assert counts == {
        "duplicate_category": 1,
        "unused_category": 1,
        "crowd_region": 1,
        "image_without_instances": 1,
    }
    unused = next(p for p in dataset.report.warnings if p.kind == "unused_category")
    assert "box" in unused.message


def test_coco_reference_errors(tmp_path):
    write_image(tmp_path / "a.png", 40, 30)
    data = coco(
        images=[{"id": 1, "file_name": "a.png", "width": 40, "height": 30}],
        annotations=[
            {"image_id": 2, "category_id": 1, "segmentation": [[1, 1, 5, 1, 5, 5]]},
            {"image_id": 1, "category_id": 9, "segmentation": [[1, 1, 5, 1, 5, 5]]},
            {"image_id": 1, "category_id": 1, "segmentation": [], "bbox": [1, 1, 4, 4]},
            {"image_id": 1, "category_id": 1, "segmentation": {"size": [10, 10], "counts": [0, 100]}},
            {"image_id": 1, "category_id": 1, "segmentation": [[1, 1, 5, 1, 5]]},
        ],
    )
    path = write_json(tmp_path / "instances.json", data)
    with pytest.raises(DatasetError) as caught:
        load_dataset(path)
    assert [(p.kind, p.region) for p in caught.value.problems] == [
        ("unknown_image", "annotation 1"),
        ("unknown_category", "annotation 2"),
        ("bad_region", "annotation 3"),
        ("bad_region", "annotation 5"),
        ("bad_region", "annotation 4 (rle)"),  # found at validation, once the image size is known
    ]
    text = str(caught.value)
    assert "no segmentation (bounding box only)" in text
    assert "mask is 10x10 (WxH) but the image is 40x30" in text


def _mask_b64(mask: np.ndarray) -> str:
    ok, png = cv2.imencode(".png", mask.astype(np.uint8))
    assert ok
    return base64.b64encode(png.tobytes()).decode("ascii")


def test_labelme_shapes_groups_and_masks(tmp_path):
    write_image(tmp_path / "img" / "shelf.jpg", 64, 48)
    crop = np.zeros((6, 5), np.uint8)
    crop[1:5, 1:4] = 1
    shapes = [
        {"points": [[2, 2], [12, 2], [12, 20]], "shape_type": "polygon"},
        {"points": [[30, 20], [20, 10]], "shape_type": "rectangle", "label": "box"},  # corners in any order
        {"points": [[40, 30], [40, 35]], "shape_type": "circle"},
        {"points": [[1, 40], [10, 40], [10, 46]], "shape_type": "linestrip"},
        {"points": [[5, 5]], "shape_type": "point"},
        {"points": [[50, 2], [54, 7]], "shape_type": "mask", "mask": _mask_b64(crop)},
        {"points": [[56, 2], [60, 2], [60, 10]], "group_id": 1},  # two shapes, one instance
        {"points": [[56, 20], [60, 20], [60, 30]], "group_id": 1},
    ]
    path = write_json(tmp_path / "shelf.json", labelme("img\\shelf.jpg", shapes))  # Windows separator
    dataset = load_dataset(path, class_attribute="label")
    assert dataset.format == "labelme" and dataset.class_names == ["book", "box"]
    (record,) = dataset.records
    assert record.image_id == "img/shelf.jpg"
    triangle, rect, circle, strip, mask, group = record.instances
    np.testing.assert_array_equal(triangle.polygon, [[2, 2], [12, 2], [12, 20]])
    assert strip.region == 'shape 3 (linestrip, "book")' and len(strip.polygon) == 3
    np.testing.assert_array_equal(rect.polygon, [[20, 10], [30, 10], [30, 20], [20, 20]])
    assert rect.class_name == "box"
    np.testing.assert_allclose(circle.polygon.mean(axis=0), [40, 30], atol=1e-9)
    np.testing.assert_allclose(np.hypot(*(circle.polygon - [40, 30]).T), 5.0)
    expected = np.zeros((48, 64), bool)
    expected[3:7, 51:54] = True  # crop placed with its top-left pixel at (50, 2)
    np.testing.assert_array_equal(mask.mask, expected)
    both = rasterize_polygon(np.array([[56, 2], [60, 2], [60, 10]]), 48, 64) | rasterize_polygon(
        np.array([[56, 20], [60, 20], [60, 30]]), 48, 64
    )
    np.testing.assert_array_equal(group.mask, both)
    assert group.region.endswith("group 1")
    report = dataset.report
    assert report.counts == {"polyline_closed": 1, "point_skipped": 1, "shapes_merged": 1}
    assert report.regions == 8 == report.instances + report.dropped_regions()


def test_labelme_folder_size_mismatch_and_images_dir(tmp_path):
    write_image(tmp_path / "a.png", 64, 48)
    write_image(tmp_path / "b.png", 64, 48)
    write_json(tmp_path / "a.json", labelme("a.png", [{"points": [[2, 2], [12, 2], [12, 20]]}]))
    write_json(
        tmp_path / "b.json", labelme("b.png", [{"points": [[2, 2], [12, 2], [12, 20]]}], width=48, height=64)
    )
    with pytest.raises(DatasetError) as caught:
        load_dataset(tmp_path)
    (problem,) = caught.value.problems
    assert (problem.kind, problem.file, problem.image) == ("size_mismatch", str(tmp_path / "b.json"), "b.png")
    assert (
        "annotation gives 48x64 (WxH)" in problem.message
        and "width and height are swapped" in problem.message
    )
    # labels elsewhere, images in their own folder: imagePath "../images/x.png" is looked up by name
    write_image(tmp_path / "images" / "c.png", 64, 48)
    write_json(
        tmp_path / "labels" / "c.json", labelme("../images/c.png", [{"points": [[2, 2], [12, 2], [12, 20]]}])
    )
    with pytest.raises(DatasetError, match="escapes the images folder"):
        load_dataset(tmp_path / "labels")
    dataset = load_dataset(tmp_path / "labels", images_dir=tmp_path / "images")
    assert dataset.records[0].path == (tmp_path / "images" / "c.png").resolve()
    assert dataset.source == tmp_path / "labels" / "c.json"


def test_labelme_image_missing_but_embedded_is_read_from_image_data(tmp_path, monkeypatch):
    """LabelMe opens a file whose image is gone when it embeds it (`imageData`); so does bookseg,
    writing the image into the cache folder, never next to the user's files."""
    monkeypatch.setenv("BOOKSEG_CACHE", str(tmp_path / "cache"))
    write_image(tmp_path / "gone.png", 64, 48)
    content = (tmp_path / "gone.png").read_bytes()
    (tmp_path / "gone.png").unlink()
    data = labelme("gone.png", [{"points": [[2, 2], [12, 2], [12, 20]], "shape_type": "polygon"}])
    data["imageData"] = base64.b64encode(content).decode()
    dataset = load_dataset(write_json(tmp_path / "ann" / "shelf.json", data))
    (record,) = dataset.records
    assert record.path.parent == tmp_path / "cache" / "labelme-images"
    assert record.path.read_bytes() == content and (record.width, record.height) == (64, 48)
    assert dataset.report.counts == {"embedded_image": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ann", "cache"]

    data["imageData"] = None  # nothing embedded: the missing file stays an error naming it
    with pytest.raises(DatasetError, match="gone.png"):
        load_dataset(write_json(tmp_path / "ann" / "shelf.json", data))
