"""Augmentation: masks follow the image pixel-exactly, boxes follow the masks, out-of-frame instances
are dropped and counted, photometric transforms leave masks alone, seeded and thread-safe."""

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from bookseg.data.augment import AugmentResult, build_augmentation
from bookseg.data.records import boxes_from_masks, rasterize_polygon

H, W = 60, 90
COLOURS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [255, 0, 255]], np.uint8)
PRESETS = sorted((Path(__file__).resolve().parents[2] / "conf" / "augmentation").glob("*.yaml"))


def _scene():
    """Image whose pixel colour names its instance (background black) and the matching masks.

    Instance k has class id k + 1 and colour COLOURS[k]. Instance 3 is a 3x3 square at the right edge.
    """
    masks = np.zeros((H, W, 5), bool)
    masks[5:25, 5:20, 0] = True
    masks[:, :, 1] = rasterize_polygon(np.array([[30.0, 5.0], [60.0, 12.0], [38.0, 35.0]]), H, W)
    masks[:, :, 2] = rasterize_polygon(
        np.array([[64.0, 20.0], [80.0, 28.0], [70.0, 50.0], [55.0, 42.0]]), H, W
    )
    masks[28:31, 87:90, 3] = True
    masks[45:58, 10:40, 4] = True
    assert masks.sum(axis=2).max() == 1
    image = np.zeros((H, W, 3), np.uint8)
    for k in range(5):
        image[masks[:, :, k]] = COLOURS[k]
    return image, masks, np.arange(1, 6, dtype=np.int32)


def _assert_aligned(result: AugmentResult, n_in: int = 5) -> None:
    """Every mask pixel shows its instance's colour and every pixel of that colour is in the mask."""
    image, masks = result.image, result.masks
    assert image.dtype == np.uint8 and masks.dtype == bool and result.class_ids.dtype == np.int32
    assert masks.shape == image.shape[:2] + (len(result.class_ids),)
    kept = set()
    for j, class_id in enumerate(result.class_ids):
        coloured = np.all(image == COLOURS[class_id - 1], axis=-1)
        np.testing.assert_array_equal(coloured, masks[:, :, j], err_msg=f"instance {class_id}")
        kept.add(int(class_id))
    for class_id in set(range(1, n_in + 1)) - kept:
        assert not np.all(image == COLOURS[class_id - 1], axis=-1).any()  # gone from the image too
    assert not image[~masks.any(axis=-1)].any()  # no coloured pixel outside every mask
    np.testing.assert_array_equal(result.boxes, boxes_from_masks(masks))
    assert result.boxes.dtype == np.int32
    assert result.dropped == n_in - len(result.class_ids)


def _augment(items, seed=0):
    return build_augmentation(items, seed=seed)(*_scene())


@pytest.mark.parametrize(
    ("name", "numpy_op"),
    [
        ("HorizontalFlip", lambda a: a[:, ::-1]),
        ("VerticalFlip", lambda a: a[::-1]),
        ("Transpose", lambda a: np.swapaxes(a, 0, 1)),
    ],
)
def test_flips_and_transpose_equal_numpy(name, numpy_op):
    image, masks, _ = _scene()
    result = _augment([{"_target_": f"albumentations.{name}", "p": 1.0}])
    _assert_aligned(result)
    np.testing.assert_array_equal(result.image, numpy_op(image))
    np.testing.assert_array_equal(result.masks, numpy_op(masks))
    assert result.dropped == 0


def test_rotate90_equals_numpy_rot90_for_each_turn():
    image, masks, _ = _scene()
    turns = set()
    for seed in range(12):
        result = _augment([{"_target_": "albumentations.RandomRotate90", "p": 1.0}], seed=seed)
        _assert_aligned(result)
        matches = [k for k in range(4) if np.array_equal(result.image, np.rot90(image, k))]
        assert len(matches) == 1
        np.testing.assert_array_equal(result.masks, np.rot90(masks, matches[0]))
        turns.add(matches[0])
    assert turns >= {1, 3}  # the non-square image really turned both ways


@pytest.mark.parametrize(
    "item",
    [
        {"_target_": "albumentations.Rotate", "limit": [33, 33], "interpolation": 0, "p": 1.0},
        {"_target_": "albumentations.Rotate", "limit": [-151, -151], "interpolation": 0, "p": 1.0},
        # A linear mask interpolation in the config is overridden: masks stay binary and exact.
        {
            "_target_": "albumentations.Rotate",
            "limit": [17, 17],
            "interpolation": 0,
            "mask_interpolation": 1,
            "p": 1.0,
        },
        {"_target_": "albumentations.Affine", "scale": 1.4, "interpolation": 0, "p": 1.0},
        {"_target_": "albumentations.Affine", "scale": 0.7, "rotate": [20, 20], "interpolation": 0, "p": 1.0},
        {
            "_target_": "albumentations.Affine",
            "translate_px": {"x": [-7, -7], "y": [4, 4]},
            "interpolation": 0,
            "p": 1.0,
        },
    ],
    ids=["rotate33", "rotate-151", "rotate-linear-mask-setting", "scale1.4", "scale0.7-rotate", "translate"],
)
def test_geometric_transforms_keep_masks_on_their_pixels(item):
    result = _augment([item])
    _assert_aligned(result)
    assert result.masks.any(axis=(0, 1)).all()


def test_instance_translated_out_of_the_frame_is_dropped_and_counted():
    item = {
        "_target_": "albumentations.Affine",
        "translate_px": {"x": [5, 5], "y": [0, 0]},
        "interpolation": 0,
        "p": 1.0,
    }
    result = _augment([item])
    _assert_aligned(result)
    assert result.dropped == 1
    assert result.class_ids.tolist() == [1, 2, 3, 5]  # the 3x3 square at the right edge left the image
    _, masks, _ = _scene()
    np.testing.assert_array_equal(result.masks[:, 5:, 0], masks[:, :-5, 0])


def test_min_visible_pixels_drops_slivers():
    item = {
        "_target_": "albumentations.Affine",
        "translate_px": {"x": [2, 2], "y": [0, 0]},
        "interpolation": 0,
        "p": 1.0,
    }
    assert _augment([item]).dropped == 0  # one 3x1 column of the square is left
    strict = build_augmentation([item], seed=0, min_visible_pixels=4)
    result = strict(*_scene())
    assert result.dropped == 1 and 4 not in result.class_ids


def test_scaling_by_randomscale_changes_the_size_and_keeps_alignment():
    item = {"_target_": "albumentations.RandomScale", "scale_limit": [0.5, 0.5], "interpolation": 0, "p": 1.0}
    result = _augment([item])
    assert result.image.shape == (90, 135, 3)
    _assert_aligned(result)


@pytest.mark.parametrize(
    "item",
    [
        {
            "_target_": "albumentations.RandomBrightnessContrast",
            "brightness_limit": [0.3, 0.3],
            "contrast_limit": [0.2, 0.2],
            "p": 1.0,
        },
        {"_target_": "albumentations.GaussianBlur", "blur_limit": [5, 5], "p": 1.0},
    ],
    ids=["brightness-contrast", "blur"],
)
def test_photometric_transforms_leave_masks_untouched(item):
    image, masks, class_ids = _scene()
    result = _augment([item])
    assert not np.array_equal(result.image, image)
    np.testing.assert_array_equal(result.masks, masks)
    np.testing.assert_array_equal(result.class_ids, class_ids)
    np.testing.assert_array_equal(result.boxes, boxes_from_masks(masks))
    assert result.dropped == 0


def test_images_without_instances():
    image, _, _ = _scene()
    augment = build_augmentation(
        [
            {"_target_": "albumentations.Rotate", "limit": 40, "p": 1.0},
            {"_target_": "albumentations.Transpose", "p": 1.0},
        ],
        seed=0,
    )
    result = augment(image, np.zeros((H, W, 0), bool), np.zeros(0, np.int32))
    assert result.image.shape == (W, H, 3)
    assert result.masks.shape == (W, H, 0) and result.class_ids.shape == (0,)
    assert result.boxes.shape == (0, 4) and result.dropped == 0


def _heavy():
    return [
        {"_target_": "albumentations.HorizontalFlip", "p": 0.5},
        {"_target_": "albumentations.Rotate", "limit": 180, "p": 0.7},
        {"_target_": "albumentations.RandomBrightnessContrast", "p": 0.5},
    ]


def test_same_seed_and_call_sequence_give_the_same_outputs():
    runs = []
    for seed in (5, 5, 6):
        augment = build_augmentation(_heavy(), seed=seed)
        runs.append([augment(*_scene()) for _ in range(4)])
    for a, b in zip(runs[0], runs[1]):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.masks, b.masks)
    assert any(not np.array_equal(a.image, c.image) for a, c in zip(runs[0], runs[2]))


def test_per_call_rng_is_reproducible_across_threads():
    augment = build_augmentation(_heavy(), seed=0)
    sequential = [augment(*_scene(), rng=np.random.default_rng(i)) for i in range(8)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        parallel = list(pool.map(lambda i: augment(*_scene(), rng=np.random.default_rng(i)), range(8)))
    for a, b in zip(sequential, parallel):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.masks, b.masks)
    assert len({a.image.tobytes() for a in sequential}) > 1


def test_spec_forms_dict_omegaconf_and_empty():
    named = build_augmentation(
        {"flip": {"_target_": "albumentations.HorizontalFlip", "p": 1.0}, "rotate": None}
    )
    assert [type(t).__name__ for t in named.transforms] == ["HorizontalFlip"]
    listed = build_augmentation(OmegaConf.create([{"_target_": "albumentations.VerticalFlip", "p": 1.0}]))
    _, masks, _ = _scene()
    np.testing.assert_array_equal(listed(*_scene()).masks, masks[::-1])
    nested = build_augmentation(
        [
            {
                "_target_": "albumentations.OneOf",
                "p": 1.0,
                "transforms": [{"_target_": "albumentations.Transpose", "p": 1.0}],
            }
        ]
    )
    _assert_aligned(nested(*_scene()))
    assert build_augmentation([]) is None and build_augmentation(None) is None
    assert build_augmentation({"rotate": None}) is None


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ([{"_target_": "albumentations.Rotate", "border_mode": 4}], "item 0: Rotate has border_mode=4"),
        (
            {"shift": {"_target_": "albumentations.Affine", "fill_mask": 1}},
            "item 'shift': Affine has fill_mask=1",
        ),
        (
            [
                {
                    "_target_": "albumentations.OneOf",
                    "transforms": [{"_target_": "albumentations.Rotate", "border_mode": 2}],
                }
            ],
            "item 0, child 0: Rotate has border_mode",
        ),
        ([{"_target_": "collections.OrderedDict"}], "item 0: OrderedDict is not an albumentations transform"),
        ([{"_target_": "albumentations.NoSuchThing"}], "item 0: cannot build 'albumentations.NoSuchThing'"),
        ([{"p": 0.5}], "item 0: expected a mapping with '_target_'"),
        ("albumentations.HorizontalFlip", "must be a list or a dict"),
    ],
)
def test_bad_specs_name_the_item(spec, message):
    wrong_type = "not an albumentations transform" in message or "must be a list" in message
    with pytest.raises(TypeError if wrong_type else ValueError, match=message):
        build_augmentation(spec)


def test_bad_inputs_are_explained():
    augment = build_augmentation([{"_target_": "albumentations.HorizontalFlip"}])
    image, masks, class_ids = _scene()
    with pytest.raises(ValueError, match="uint8"):
        augment(image.astype(np.float32), masks, class_ids)
    with pytest.raises(ValueError, match="masks must be"):
        augment(image, masks[:10], class_ids)
    with pytest.raises(ValueError, match="5 masks but 4 class ids"):
        augment(image, masks, class_ids[:4])


@pytest.mark.parametrize("preset", PRESETS, ids=[p.stem for p in PRESETS])
def test_every_preset_in_conf_builds_and_keeps_masks_binary(preset):
    spec = OmegaConf.load(preset).transforms
    augment = build_augmentation(spec, seed=0)
    if augment is None:
        assert len(spec) == 0
        return
    image, masks, _ = _scene()
    for i in range(5):
        result = augment(image, masks, np.arange(1, 6, dtype=np.int32), rng=np.random.default_rng(i))
        assert result.masks.dtype == bool and result.masks.shape[:2] == result.image.shape[:2]
        assert result.dropped + len(result.class_ids) == 5
        np.testing.assert_array_equal(result.boxes, boxes_from_masks(result.masks))
