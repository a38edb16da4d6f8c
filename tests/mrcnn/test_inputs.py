"""Input pipeline: per-image examples from tiny images written in tmp_path, and batched tf.data datasets."""

import logging
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from bookseg.data.records import ImageRecord, Instance, boxes_from_masks
from bookseg.mrcnn import images as im
from bookseg.mrcnn.anchors import pixel_anchors_for
from bookseg.mrcnn.config import MrcnnConfig
from bookseg.mrcnn.inputs import (
    INPUT_NAMES,
    PipelineStats,
    build_example,
    dataset_from_examples,
    epoch_order,
    example_rng,
    load_training_example,
    make_dataset,
    resize_ground_truth,
)

CLASSES = {"book": 1, "magazine": 2}
# 64 x 96 images: scale 1 (min side 64 = image_min_dim), placed at (32, 16) in the 128² square.
CONFIG = MrcnnConfig(
    num_classes=3,
    image_min_dim=64,
    image_max_dim=128,
    rpn_anchor_scales=(8, 16, 32, 64, 128),
    max_gt_instances=5,
    rpn_train_anchors_per_image=32,
    mini_mask_shape=(14, 14),
    images_per_batch=2,
)


def _rect(x1, y1, x2, y2):
    return np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], float)


def _write_image(path, h=64, w=96, seed=0):
    image = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    cv2.imwrite(str(path), image[:, :, ::-1])  # stored as BGR, read back as RGB
    return image


def _record(path, instances, name="img.png", h=64, w=96):
    return ImageRecord(name, path, w, h, instances, source="test.json")


@pytest.fixture
def two_books(tmp_path):
    path = tmp_path / "books.png"
    image = _write_image(path)
    record = _record(
        path,
        [
            Instance("book", _rect(10, 5, 30, 45), region="region 0"),
            Instance("magazine", _rect(50, 20, 90, 60), region="region 1"),
        ],
    )
    return record, image


def test_example_shapes_dtypes_and_exact_boxes(two_books):
    record, image = two_books
    ex = load_training_example(record, CONFIG, CLASSES, rng=np.random.default_rng(0), image_index=4)
    assert set(ex) == set(INPUT_NAMES)
    n_anchors = len(pixel_anchors_for(CONFIG, (128, 128)))
    expected = {
        "input_image": (np.float32, (128, 128, 3)),
        "input_image_meta": (np.float32, (CONFIG.image_meta_size,)),
        "input_rpn_match": (np.int32, (n_anchors,)),
        "input_rpn_bbox": (np.float32, (32, 4)),
        "input_gt_class_ids": (np.int32, (5,)),
        "input_gt_boxes": (np.float32, (5, 4)),
        "input_gt_masks": (np.bool_, (14, 14, 5)),
    }
    for name, (dtype, shape) in expected.items():
        assert ex[name].dtype == dtype and ex[name].shape == shape, name
    # Polygon x 10..30, y 5..45 covers pixel columns 10..29 and rows 5..44; shifted by the window (32, 16).
    np.testing.assert_array_equal(ex["input_gt_boxes"][:2], [[37, 26, 77, 46], [52, 66, 92, 106]])
    assert not ex["input_gt_boxes"][2:].any()
    np.testing.assert_array_equal(ex["input_gt_class_ids"], [1, 2, 0, 0, 0])
    assert ex["input_gt_masks"][:, :, :2].all() and not ex["input_gt_masks"][:, :, 2:].any()
    # The molded image is the photo minus the mean pixel inside the window, -mean in the padding.
    np.testing.assert_allclose(ex["input_image"][32:96, 16:112], image - np.float32(CONFIG.mean_pixel))
    np.testing.assert_allclose(ex["input_image"][0, 0], -np.float32(CONFIG.mean_pixel))
    meta = im.parse_image_meta(ex["input_image_meta"])
    assert meta["image_id"] == 4
    np.testing.assert_array_equal(meta["original_image_shape"], [64, 96, 3])
    np.testing.assert_array_equal(meta["window"], [32, 16, 96, 112])
    np.testing.assert_array_equal(meta["active_class_ids"], [1, 1, 1])


def test_gt_boxes_match_full_masks_when_mini_masks_are_off(two_books):
    record, _ = two_books
    config = CONFIG.replace(use_mini_mask=False, image_min_dim=96, image_max_dim=192)  # scale 1.5
    ex = load_training_example(record, config, CLASSES, rng=np.random.default_rng(0))
    masks = ex["input_gt_masks"]
    assert masks.shape == (192, 192, 5)
    np.testing.assert_array_equal(boxes_from_masks(masks[:, :, :2]), ex["input_gt_boxes"][:2])
    # The same masks as resizing the record's masks independently.
    _, _, scale, padding = im.resize_image(np.zeros((64, 96, 3), np.uint8), config)
    np.testing.assert_array_equal(masks[:, :, :2], im.resize_masks(record.masks(), scale, padding))


def test_rpn_targets_count_and_cover_every_gt(two_books):
    record, _ = two_books
    ex = load_training_example(record, CONFIG, CLASSES, rng=np.random.default_rng(0))
    match = ex["input_rpn_match"]
    n_pos, n_neg = (match == 1).sum(), (match == -1).sum()
    assert 2 <= n_pos <= 16 and n_pos + n_neg == 32
    assert np.abs(ex["input_rpn_bbox"][:n_pos]).sum(axis=1).min() > 0
    assert not ex["input_rpn_bbox"][n_pos:].any()
    # Each GT box is the best match of some positive anchor.
    anchors = pixel_anchors_for(CONFIG, (128, 128))[match == 1]
    from bookseg.mrcnn.boxes import iou_matrix

    assert set(iou_matrix(anchors, ex["input_gt_boxes"][:2]).argmax(axis=1)) == {0, 1}


def test_image_without_instances_is_a_valid_negative(tmp_path):
    path = tmp_path / "empty.png"
    _write_image(path)
    stats = PipelineStats()
    ex = load_training_example(_record(path, []), CONFIG, CLASSES, rng=np.random.default_rng(0), stats=stats)
    assert not ex["input_gt_class_ids"].any() and not ex["input_gt_boxes"].any()
    assert not ex["input_gt_masks"].any()
    assert (ex["input_rpn_match"] == 1).sum() == 0 and (ex["input_rpn_match"] == -1).sum() == 32
    assert not ex["input_rpn_bbox"].any()
    assert stats.images == 1 and stats.images_without_instances == 1


def test_subsamples_to_max_gt_instances_and_counts(tmp_path):
    path = tmp_path / "many.png"
    _write_image(path)
    instances = [
        Instance("book", _rect(5 + 12 * i, 5, 15 + 12 * i, 50), region=f"region {i}") for i in range(7)
    ]
    stats = PipelineStats()
    ex = load_training_example(
        _record(path, instances), CONFIG, CLASSES, rng=np.random.default_rng(0), stats=stats
    )
    assert (ex["input_gt_class_ids"] == 1).sum() == 5
    assert stats.dropped_over_max == 2
    # The kept boxes are 5 distinct ones of the 7 (x1 = 5 + 12 i + 16 in the molded image), in order.
    x1 = ex["input_gt_boxes"][:, 1]
    assert len(set(x1)) == 5 and set(x1) <= {21 + 12 * i for i in range(7)} and list(x1) == sorted(x1)


def test_crowd_gets_negative_id_and_empty_annotation_is_counted_and_warned(tmp_path, caplog):
    path = tmp_path / "crowd.png"
    _write_image(path)
    record = _record(
        path,
        [
            Instance("book", _rect(10, 5, 30, 45), region="region 0"),
            Instance("book", _rect(40, 5, 90, 60), region="region 1", iscrowd=True),
            Instance("book", _rect(200, 200, 220, 230), region="region 2"),  # entirely outside the image
        ],
        name="crowd.png",
    )
    stats = PipelineStats()
    with caplog.at_level(logging.WARNING, logger="bookseg.mrcnn.inputs"):
        ex = load_training_example(record, CONFIG, CLASSES, rng=np.random.default_rng(0), stats=stats)
    np.testing.assert_array_equal(ex["input_gt_class_ids"], [1, -1, 0, 0, 0])
    assert stats.empty_in_annotation == 1
    assert 'test.json: image "crowd.png", region 2' in caplog.text


def test_unknown_class_and_size_mismatch_errors_name_the_image(tmp_path):
    path = tmp_path / "x.png"
    _write_image(path)
    record = _record(path, [Instance("dvd", _rect(1, 1, 9, 9), region="region 3")], name="x.png")
    with pytest.raises(ValueError, match=r'test.json: image "x.png", region 3: class "dvd" is not one of'):
        load_training_example(record, CONFIG, CLASSES)
    wrong = _record(path, [], name="x.png", h=70)
    with pytest.raises(ValueError, match=r'image "x.png".*96x64.*96x70'):
        load_training_example(wrong, CONFIG, CLASSES)


def test_augmentation_hook_is_applied_before_resize(two_books):
    record, image = two_books
    calls = {}

    def flip_and_drop_last(img, masks, class_ids, rng):
        calls["rng"] = rng
        assert img.shape == (64, 96, 3) and masks.shape == (64, 96, 2)
        return SimpleNamespace(
            image=img[:, ::-1], masks=masks[:, ::-1, :1], class_ids=class_ids[:1], boxes=None, dropped=1
        )

    stats = PipelineStats()
    rng = np.random.default_rng(0)
    ex = load_training_example(record, CONFIG, CLASSES, augment=flip_and_drop_last, rng=rng, stats=stats)
    assert calls["rng"] is rng
    assert stats.dropped_by_augmentation == 1
    # Columns 10..29 flipped in a 96 px wide image -> 66..85, + 16 window offset.
    np.testing.assert_array_equal(ex["input_gt_boxes"][:2], [[37, 82, 77, 102], [0, 0, 0, 0]])
    np.testing.assert_allclose(
        ex["input_image"][32:96, 16:112], image[:, ::-1] - np.float32(CONFIG.mean_pixel)
    )


def _records_for_dataset(tmp_path, n=5):
    records = []
    for i in range(n):
        path = tmp_path / f"im{i}.png"
        _write_image(path, seed=i)
        instances = (
            [Instance("book", _rect(5 + 10 * i, 5, 25 + 10 * i, 55), region="region 0")] if i % 2 else []
        )
        records.append(_record(path, instances, name=f"im{i}.png"))
    return records


def _take(dataset, n):
    return [{k: v.numpy() for k, v in batch.items()} for batch in dataset.take(n)]


def test_dataset_static_shapes_and_reproducible(tmp_path):
    records = _records_for_dataset(tmp_path)
    stats = PipelineStats()
    first = make_dataset(records, CONFIG, ["book", "magazine"], seed=3, stats=stats)
    n_anchors = len(pixel_anchors_for(CONFIG, (128, 128)))
    spec = first.element_spec
    assert spec["input_image"].shape == (2, 128, 128, 3)
    assert spec["input_rpn_match"].shape == (2, n_anchors)
    assert spec["input_gt_masks"].shape == (2, 14, 14, 5) and spec["input_gt_masks"].dtype.name == "bool"
    a = _take(first, 5)  # 10 examples: two epochs of 5 images, batches crossing the epoch boundary
    b = _take(make_dataset(records, CONFIG, ["book", "magazine"], seed=3), 5)
    for x, y in zip(a, b):
        for name in INPUT_NAMES:
            np.testing.assert_array_equal(x[name], y[name])
    ids = np.concatenate([batch["input_image_meta"][:, 0] for batch in a]).astype(int)
    assert sorted(ids[:5]) == list(range(5)) and sorted(ids[5:]) == list(range(5))
    assert list(ids[:5]) != list(ids[5:])  # reshuffled for the second epoch (seed 3)
    assert stats.images >= 10
    c = _take(make_dataset(records, CONFIG, ["book", "magazine"], seed=4), 5)
    assert any(not np.array_equal(x["input_image_meta"], y["input_image_meta"]) for x, y in zip(a, c))


def test_dataset_single_pass_in_order(tmp_path):
    records = _records_for_dataset(tmp_path)
    batches = _take(make_dataset(records, CONFIG, ["book", "magazine"], shuffle=False, repeat=False), 10)
    assert len(batches) == 2  # 5 images, batches of 2: the fifth is left out (and a warning says so)
    ids = np.concatenate([b["input_image_meta"][:, 0] for b in batches]).astype(int)
    assert list(ids) == [0, 1, 2, 3]
    # Image 1 has a book, image 0 none.
    assert batches[0]["input_gt_class_ids"][0].sum() == 0 and batches[0]["input_gt_class_ids"][1, 0] == 1


def test_build_example_is_load_training_example_after_loading(two_books):
    record, image = two_books
    stats = PipelineStats()
    by_record = load_training_example(record, CONFIG, CLASSES, rng=np.random.default_rng(5), image_index=2)
    by_arrays = build_example(
        image,
        record.masks(),
        record.class_ids(CLASSES),
        CONFIG,
        rng=np.random.default_rng(5),
        image_index=2,
        active_class_ids=[1, 1, 0],
        stats=stats,
    )
    for name in INPUT_NAMES:
        if name != "input_image_meta":
            np.testing.assert_array_equal(by_arrays[name], by_record[name], err_msg=name)
    meta = im.parse_image_meta(by_arrays["input_image_meta"])
    assert meta["image_id"] == 2
    np.testing.assert_array_equal(meta["active_class_ids"], [1, 1, 0])
    assert stats.images == 1 and stats.empty_in_annotation == 0


def test_resize_ground_truth_keeps_full_masks_and_drops_emptied(two_books):
    record, image = two_books
    masks = np.concatenate([record.masks(), np.zeros((64, 96, 1), bool)], axis=2)  # + an empty mask
    stats = PipelineStats()
    resized, meta, class_ids, boxes, masks = resize_ground_truth(
        image, masks, np.array([1, 2, 1], np.int32), CONFIG, image_index=7, stats=stats
    )
    assert resized.dtype == np.uint8 and resized.shape == (128, 128, 3)
    np.testing.assert_array_equal(resized[32:96, 16:112], image)
    assert masks.shape == (128, 128, 2) and stats.emptied_by_resize == 1
    np.testing.assert_array_equal(class_ids, [1, 2])
    np.testing.assert_array_equal(boxes, [[37, 26, 77, 46], [52, 66, 92, 106]])
    np.testing.assert_array_equal(boxes, boxes_from_masks(masks))
    meta = im.parse_image_meta(meta)
    assert meta["image_id"] == 7
    np.testing.assert_array_equal(meta["window"], [32, 16, 96, 112])


def test_dataset_from_examples_seeds_each_example_by_epoch_and_position(tmp_path):
    records = _records_for_dataset(tmp_path, n=4)
    calls = []

    def example(index, rng):
        calls.append(index)
        return load_training_example(records[index], CONFIG, CLASSES, rng=rng, image_index=index)

    batches = _take(dataset_from_examples(example, 4, CONFIG, seed=3, repeat=False), 10)
    assert len(batches) == 2 and sorted(calls) == [0, 1, 2, 3]
    # The same batches as make_dataset over the records: same order, same per-example randomness.
    same = _take(make_dataset(records, CONFIG, ["book", "magazine"], seed=3, repeat=False), 10)
    for x, y in zip(batches, same):
        for name in INPUT_NAMES:
            np.testing.assert_array_equal(x[name], y[name])
    order = epoch_order(4, 0, shuffle=True, seed=3)
    ids = np.concatenate([b["input_image_meta"][:, 0] for b in batches]).astype(int)
    assert list(ids) == list(order)
    first = load_training_example(records[order[0]], CONFIG, CLASSES, rng=example_rng(3, 0, 0))
    np.testing.assert_array_equal(batches[0]["input_rpn_match"][0], first["input_rpn_match"])
