"""utils.Dataset: registration, prepare() tables, source class maps, image loading, default load_mask."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from bookseg.compat import utils


def test_prepare_builds_matterports_tables():
    dataset = utils.Dataset()
    dataset.add_class("coco", 1, "person, people")
    dataset.add_class("coco", 3, "car")
    dataset.add_class("coco", 3, "car again")  # already registered: ignored
    dataset.add_class("shelf", 1, "book")
    for i in range(3):
        dataset.add_image("coco" if i < 2 else "shelf", image_id=f"id{i}", path=f"/x/{i}.jpg", width=10 + i)
    dataset.prepare()

    assert dataset.num_classes == 4
    assert dataset.class_names == ["BG", "person", "car", "book"]
    np.testing.assert_array_equal(dataset.class_ids, [0, 1, 2, 3])
    np.testing.assert_array_equal(dataset.image_ids, [0, 1, 2])
    assert dataset.num_images == 3
    assert dataset.map_source_class_id("coco.3") == 2
    assert dataset.map_source_class_id("shelf.1") == 3
    assert dataset.get_source_class_id(2, "coco") == 3
    assert dataset.source_class_ids == {"": [0], "coco": [0, 1, 2], "shelf": [0, 3]}
    assert dataset.image_from_source_map["shelf.id2"] == 2
    assert dataset.image_info[1]["width"] == 11
    assert dataset.source_image_link(0) == "/x/0.jpg"
    assert dataset.image_reference(0) == ""
    np.testing.assert_array_equal(dataset.active_class_ids(2, 4), [1, 0, 0, 1])
    with pytest.raises(ValueError, match="not 'shelf'"):
        dataset.get_source_class_id(1, "shelf")
    with pytest.raises(ValueError, match="dot"):
        dataset.add_class("a.b", 1, "x")


def test_load_image_reads_rgb(tmp_path):
    image = np.zeros((5, 7, 3), np.uint8)
    image[..., 0] = 200  # red
    cv2.imwrite(str(tmp_path / "a.png"), image[:, :, ::-1])
    gray = tmp_path / "g.png"
    cv2.imwrite(str(gray), np.full((4, 6), 77, np.uint8))
    dataset = utils.Dataset()
    dataset.add_image("s", "a", str(tmp_path / "a.png"))
    dataset.add_image("s", "g", str(gray))
    dataset.prepare()
    np.testing.assert_array_equal(dataset.load_image(0), image)
    loaded = dataset.load_image(1)
    assert loaded.shape == (4, 6, 3) and loaded.dtype == np.uint8 and (loaded == 77).all()


def test_default_load_mask_has_no_instances(caplog):
    dataset = utils.Dataset()
    dataset.add_image("s", "a", "/nowhere.png")
    dataset.prepare()
    masks, class_ids = dataset.load_mask(0)
    assert masks.shape[-1] == 0 and class_ids.shape == (0,) and class_ids.dtype == np.int32
    assert "not overridden" in caplog.text


def test_subclass_masks_round_trip(shapes):
    assert shapes.class_names == ["BG", "book", "box"]
    image = shapes.load_image(0)
    masks, class_ids = shapes.load_mask(0)
    assert image.shape == (48, 80, 3) and masks.shape[:2] == (48, 80)
    assert masks.shape[-1] == len(class_ids) == len(shapes.image_info[0]["shapes"])
    for k, (class_id, y1, x1, y2, x2) in enumerate(shapes.image_info[0]["shapes"]):
        assert class_ids[k] == class_id
        np.testing.assert_array_equal(utils.extract_bboxes(masks[:, :, k : k + 1])[0], [y1, x1, y2, x2])
