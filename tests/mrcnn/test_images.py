"""bookseg.mrcnn.images: resize/pad modes, mask resizing, mini masks, molding, meta, unmold_detections."""

import cv2
import numpy as np
import pytest

from bookseg.data.records import boxes_from_masks
from bookseg.mrcnn import images as im
from bookseg.mrcnn.boxes import norm_boxes
from bookseg.mrcnn.config import MrcnnConfig


def _random_image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_square_upscales_to_min_dim_and_pads_centred():
    config = MrcnnConfig(image_min_dim=128, image_max_dim=256)
    image = _random_image(100, 150)
    out, window, scale, padding = im.resize_image(image, config)
    # scale = 128/100 = 1.28; 150 * 1.28 = 192 <= 256 so no cap -> 128 x 192 placed in 256 x 256.
    assert scale == pytest.approx(1.28)
    assert out.shape == (256, 256, 3) and out.dtype == np.uint8
    assert window == (64, 32, 192, 224)
    assert padding == [(64, 64), (32, 32), (0, 0)]
    expected = cv2.resize(image, (192, 128), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(out[64:192, 32:224], expected)
    assert not out[:64].any() and not out[192:].any() and not out[:, :32].any() and not out[:, 224:].any()


def test_square_caps_long_side_at_max_dim():
    config = MrcnnConfig(image_min_dim=800, image_max_dim=1024)
    out, window, scale, padding = im.resize_image(_random_image(300, 1200), config)
    assert out.shape == (1024, 1024, 3)
    # 800/300 would make the long side 3200 > 1024, so scale = 1024/1200 -> 256 x 1024.
    assert scale == pytest.approx(1024 / 1200)
    assert window == (384, 0, 640, 1024)
    assert padding == [(384, 384), (0, 0), (0, 0)]


def test_square_never_upscales_beyond_need_and_odd_padding():
    config = MrcnnConfig(image_min_dim=64, image_max_dim=128)
    out, window, scale, padding = im.resize_image(_random_image(101, 77), config)
    assert out.shape == (128, 128, 3)
    assert scale == 1.0  # min side 77 >= 64: no upscaling, long side 101 <= 128: no cap
    assert window == (13, 25, 114, 102)
    assert padding == [(13, 14), (25, 26), (0, 0)]


def test_image_min_scale_raises_scale():
    config = MrcnnConfig(image_min_dim=64, image_max_dim=512, image_min_scale=2.0)
    out, window, scale, _ = im.resize_image(_random_image(100, 150), config)
    assert scale == 2.0 and out.shape == (512, 512, 3)
    assert (window[2] - window[0], window[3] - window[1]) == (200, 300)


def test_pad64_and_none_modes():
    config = MrcnnConfig(image_resize_mode="pad64", image_min_dim=64, image_max_dim=64)
    image = _random_image(100, 130)
    out, window, scale, padding = im.resize_image(image, config)
    assert scale == 1.0 and out.shape == (128, 192, 3)
    assert window == (14, 31, 114, 161)
    np.testing.assert_array_equal(out[14:114, 31:161], image)
    out, window, scale, padding = im.resize_image(image, config.replace(image_resize_mode="none"))
    assert out is image and window == (0, 0, 100, 130) and scale == 1.0
    assert padding == [(0, 0), (0, 0), (0, 0)]


def test_resize_rejects_unknown_mode_and_bad_rank():
    with pytest.raises(ValueError, match="unknown image_resize_mode 'crop'"):
        im.resize_image(_random_image(10, 10), MrcnnConfig(image_resize_mode="crop"))
    with pytest.raises(ValueError, match=r"\[h, w, C\]"):
        im.resize_image(np.zeros((10, 10), np.uint8), MrcnnConfig())


def test_resize_masks_follows_the_image_exactly():
    config = MrcnnConfig(image_min_dim=128, image_max_dim=256)
    masks = np.zeros((100, 150, 2), bool)
    masks[10:50, 20:60, 0] = True
    masks[60:90, 100:140, 1] = True
    _, _, scale, padding = im.resize_image(_random_image(100, 150), config)
    out = im.resize_masks(masks, scale, padding)
    assert out.shape == (256, 256, 2) and out.dtype == bool
    # Rows 10..49 at scale 1.28: output rows i with floor((i + .5) / 1.28) in [10, 50) -> 13..63,
    # plus the 64 px top padding -> 77..127. Columns 20..59 -> 26..76, + 32 -> 58..108.
    np.testing.assert_array_equal(boxes_from_masks(out)[0], [77, 58, 128, 109])
    # The box scales like a continuous box: 10 * 1.28 + 64 = 76.8, 50 * 1.28 + 64 = 128.
    assert not out[:64].any() and not out[:, :32].any()


def test_resize_masks_zero_and_many_instances():
    assert im.resize_masks(np.zeros((20, 30, 0), bool), 2.0, [(0, 0), (0, 0), (0, 0)]).shape == (40, 60, 0)
    many = np.zeros((8, 8, 600), bool)
    many[2:4, 2:4, 599] = True  # more channels than one cv2.resize call takes
    out = im.resize_masks(many, 2.0, [(1, 1), (0, 0), (0, 0)])
    assert out.shape == (18, 16, 600)
    np.testing.assert_array_equal(boxes_from_masks(out[:, :, 599:]), [[5, 4, 9, 8]])
    assert not out[:, :, :599].any()


def test_minimize_expand_round_trip():
    masks = np.zeros((200, 120, 2), bool)
    masks[20:180, 10:40, 0] = True  # a plain rectangle survives exactly
    masks[50:150, 60:110, 1] = True
    masks[50:100, 60:85, 1] = False  # an L shape
    boxes = boxes_from_masks(masks)
    mini = im.minimize_masks(boxes, masks, (56, 56))
    assert mini.shape == (56, 56, 2) and mini.dtype == bool
    assert mini[:, :, 0].all()
    back = im.expand_mask(boxes, mini, masks.shape)
    assert back.shape == masks.shape
    np.testing.assert_array_equal(back[:, :, 0], masks[:, :, 0])
    inter = (back[:, :, 1] & masks[:, :, 1]).sum()
    union = (back[:, :, 1] | masks[:, :, 1]).sum()
    assert inter / union > 0.95
    assert not back[:, :, 1][~np.pad(np.ones((100, 50), bool), [(50, 50), (60, 10)])].any()
    single = im.expand_mask(boxes[0], mini[:, :, 0], masks.shape)
    np.testing.assert_array_equal(single, masks[:, :, 0])


def test_paste_masks_places_each_mask_in_its_box_cut_to_the_image():
    full, left_half = np.ones((28, 28), np.float32), np.zeros((28, 28), np.float32)
    left_half[:, :14] = 1.0
    masks = np.stack([full, left_half, full, full, full])
    boxes = np.array(
        [
            [10, 20, 50, 40],  # inside: exactly the box
            [60, 0, 100, 60],  # left half of a 60 px wide box: columns 0..29
            [-10, 150, 30, 170],  # reaches above the image: cut at row 0
            [5, 5, 5, 9],  # empty
            [90, 90, 80, 95],  # inverted
        ]
    )
    out = im.paste_masks(masks, boxes, (120, 160))
    assert out.shape == (120, 160, 5) and out.dtype == bool
    expected = np.zeros((120, 160, 5), bool)
    expected[10:50, 20:40, 0] = True
    expected[60:100, 0:30, 1] = True
    expected[0:30, 150:160, 2] = True
    np.testing.assert_array_equal(out, expected)
    assert im.paste_masks(np.zeros((0, 28, 28)), np.zeros((0, 4)), (120, 160)).shape == (120, 160, 0)
    with pytest.raises(ValueError, match="2 boxes but 1 masks"):
        im.paste_masks(masks[:1], boxes[:2], (120, 160))


def test_paste_masks_interpolates_bilinearly_then_thresholds():
    """A horizontal ramp 0..1 crosses 0.5 in the middle of the box whatever the box width."""
    ramp = np.tile(np.linspace(0.0, 1.0, 28, dtype=np.float32), (28, 1))
    for width in (7, 28, 101):
        out = im.paste_masks(ramp[None], np.array([[0, 0, 10, width]]), (10, width))[:, :, 0]
        first_on = int(np.flatnonzero(out[0])[0])
        assert abs(first_on - width / 2) <= 1, (width, first_on)
        assert out[:, first_on:].all() and not out[:, :first_on].any()


def test_minimize_rejects_empty_box():
    with pytest.raises(ValueError, match="instance 0 has an empty box"):
        im.minimize_masks(np.array([[5, 5, 5, 9]]), np.ones((10, 10, 1), bool), (56, 56))


def test_mold_and_unmold_image():
    config = MrcnnConfig()
    image = np.array([[[123, 117, 104], [0, 255, 10]]], np.uint8)
    molded = im.mold_image(image, config)
    assert molded.dtype == np.float32
    np.testing.assert_allclose(molded[0, 0], [-0.7, 0.2, 0.1], atol=1e-4)
    np.testing.assert_allclose(molded[0, 1], [-123.7, 138.2, -93.9], atol=1e-4)
    np.testing.assert_array_equal(im.unmold_image(molded, config), image)


def test_image_meta_round_trip_single_and_batch():
    config = MrcnnConfig(num_classes=3)
    meta = im.compose_image_meta(7, (100, 150, 3), (256, 256, 3), (64, 32, 192, 224), 1.28, np.ones(3))
    assert meta.dtype == np.float32 and meta.shape == (config.image_meta_size,)
    parsed = im.parse_image_meta(meta)
    assert parsed["image_id"] == 7
    np.testing.assert_array_equal(parsed["original_image_shape"], [100, 150, 3])
    np.testing.assert_array_equal(parsed["image_shape"], [256, 256, 3])
    np.testing.assert_array_equal(parsed["window"], [64, 32, 192, 224])
    assert parsed["scale"] == pytest.approx(1.28)
    np.testing.assert_array_equal(parsed["active_class_ids"], [1, 1, 1])
    batch = im.parse_image_meta(np.stack([meta, meta]))
    assert batch["window"].shape == (2, 4) and batch["image_id"].shape == (2,)


def test_mold_inputs_shapes():
    config = MrcnnConfig(image_min_dim=64, image_max_dim=128)
    molded, metas, windows = im.mold_inputs([_random_image(100, 60), _random_image(40, 128, 1)], config)
    assert molded.shape == (2, 128, 128, 3) and molded.dtype == np.float32
    assert metas.shape == (2, config.image_meta_size)
    # 100x60: scale 64/60 -> 107 x 64 centred in 128². 40x128: 64/40 = 1.6 would give a 205 px long
    # side, so the cap 128/128 = 1 wins -> 40 x 128.
    np.testing.assert_array_equal(windows, [[10, 32, 117, 96], [44, 0, 84, 128]])
    assert list(im.parse_image_meta(metas)["image_id"]) == [0, 1]


def _detections_for(original_boxes, class_ids, scores, config, original_shape):
    """Normalised molded-image detections for boxes given in original pixels."""
    molded, window, scale, _ = im.resize_image(np.zeros(original_shape, np.uint8), config)
    shift = np.array([window[0], window[1], window[0], window[1]])
    molded_boxes = np.asarray(original_boxes, np.float64) * scale + shift
    det = np.zeros((6, 6), np.float32)
    det[: len(class_ids), :4] = norm_boxes(molded_boxes, molded.shape)
    det[: len(class_ids), 4] = class_ids
    det[: len(class_ids), 5] = scores
    return det, molded.shape, window


def test_unmold_detections_boxes_masks_and_padding_rows():
    config = MrcnnConfig(image_min_dim=128, image_max_dim=256, num_classes=3)
    shape = (100, 150, 3)
    det, molded_shape, window = _detections_for(
        [[10, 20, 50, 60], [0, 100, 100, 150]], [2, 1], [0.9, 0.8], config, shape
    )
    masks = np.zeros((6, 28, 28, 3), np.float32)
    masks[0, :, :, 2] = 0.9  # class 2 channel: whole box
    masks[0, :, :, 1] = 0.0  # another class's channel must not be used
    masks[1, :, :14, 1] = 0.6  # left half of the second box
    masks[1, :, 14:, 1] = 0.4  # below threshold
    out = im.unmold_detections(det, masks, shape, molded_shape, window)
    np.testing.assert_array_equal(out["rois"], [[10, 20, 50, 60], [0, 100, 100, 150]])
    assert out["rois"].dtype == np.int32
    np.testing.assert_array_equal(out["class_ids"], [2, 1])
    np.testing.assert_allclose(out["scores"], [0.9, 0.8])
    assert out["masks"].shape == (100, 150, 2) and out["masks"].dtype == bool
    expected0 = np.zeros((100, 150), bool)
    expected0[10:50, 20:60] = True
    np.testing.assert_array_equal(out["masks"][:, :, 0], expected0)
    expected1 = np.zeros((100, 150), bool)
    expected1[:, 100:125] = True  # 28 -> 50 px wide: the left 14 cells cover 25 columns
    np.testing.assert_array_equal(out["masks"][:, :, 1], expected1)


def test_unmold_detections_drops_zero_area_and_clips_to_image():
    config = MrcnnConfig(image_min_dim=128, image_max_dim=256, num_classes=2)
    shape = (100, 150, 3)
    det, molded_shape, window = _detections_for(
        [[10, 20, 10, 60], [-20, 140, 40, 170]], [1, 1], [0.9, 0.7], config, shape
    )
    masks = np.ones((6, 28, 28, 2), np.float32)
    out = im.unmold_detections(det, masks, shape, molded_shape, window)
    np.testing.assert_array_equal(out["rois"], [[0, 140, 40, 150]])
    np.testing.assert_allclose(out["scores"], [0.7])
    assert out["masks"].shape == (100, 150, 1)
    assert out["masks"][:, :, 0].sum() == 40 * 10


def test_unmold_detections_empty():
    config = MrcnnConfig(image_min_dim=128, image_max_dim=256)
    out = im.unmold_detections(
        np.zeros((4, 6)), np.zeros((4, 28, 28, 2)), (100, 150, 3), (256, 256, 3), (64, 32, 192, 224)
    )
    assert out["rois"].shape == (0, 4) and out["class_ids"].shape == (0,) and out["scores"].shape == (0,)
    assert out["masks"].shape == (100, 150, 0)
    del config
