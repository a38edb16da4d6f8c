"""iaa: imgaug's augmenters built as albumentations transforms, masks following the image exactly."""

from __future__ import annotations

import albumentations as A
import numpy as np
import pytest

from bookseg.compat import iaa
from bookseg.compat.augmentation import as_augmenter


def _scene(height=24, width=32):
    """An image whose every pixel differs, and two instance masks."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    masks = np.zeros((height, width, 2), bool)
    masks[2:10, 3:20, 0] = True
    masks[12:22, 25:31, 1] = True
    return image, masks


@pytest.mark.parametrize(
    ("augmenter", "reference", "expected"),
    [
        (iaa.Fliplr(1.0), A.HorizontalFlip(p=1.0), lambda a: a[:, ::-1]),
        (iaa.Flipud(1.0), A.VerticalFlip(p=1.0), lambda a: a[::-1]),
        (iaa.Rot90(1), None, lambda a: np.rot90(a, -1)),  # imgaug turns clockwise
        (iaa.Rot90(2), None, lambda a: np.rot90(a, 2)),
        (iaa.Rot90(3), None, lambda a: np.rot90(a, 1)),
    ],
)
def test_flips_and_turns_are_pixel_exact_on_image_and_masks(augmenter, reference, expected):
    image, masks = _scene()
    out_image, out_masks = augmenter.augment(image, masks, seed=1)
    np.testing.assert_array_equal(out_image, expected(image))
    np.testing.assert_array_equal(out_masks, expected(masks))
    if reference is not None:
        ref = A.Compose([reference], seed=1)(
            image=image, masks=list(np.moveaxis(masks.astype(np.uint8), -1, 0))
        )
        np.testing.assert_array_equal(out_image, ref["image"])
        np.testing.assert_array_equal(out_masks, np.moveaxis(np.asarray(ref["masks"]), 0, -1) > 0)


def test_training_augmenter_moves_masks_and_boxes_with_the_image():
    image, masks = _scene()
    result = as_augmenter(iaa.Sequential([iaa.Fliplr(1.0), iaa.Rot90(1)]))(
        image, masks, np.array([1, 2]), rng=np.random.default_rng(0)
    )
    np.testing.assert_array_equal(result.image, np.rot90(image[:, ::-1], -1))
    np.testing.assert_array_equal(result.masks, np.rot90(masks[:, ::-1], -1))
    np.testing.assert_array_equal(result.class_ids, [1, 2])
    # mask 0 covered rows 2..9, cols 3..19 of the 24 x 32 image; mirrored then turned clockwise
    np.testing.assert_array_equal(result.boxes[0], [12, 14, 29, 22])


def test_affine_matches_its_albumentations_transform_and_turns_clockwise():
    image, masks = _scene(31, 31)
    augmenter = iaa.Affine(rotate=90, scale=(0.9, 1.1))
    out_image, out_masks = augmenter.augment(image, masks, seed=3)
    transform = augmenter.to_albumentations()
    assert isinstance(transform, A.Affine)
    assert transform.rotate == (-90.0, -90.0)  # clockwise in imgaug = negative in albumentations
    ref = A.Compose([transform], seed=3)(image=image, masks=list(np.moveaxis(masks.astype(np.uint8), -1, 0)))
    np.testing.assert_array_equal(out_image, ref["image"])
    np.testing.assert_array_equal(out_masks, np.moveaxis(np.asarray(ref["masks"]), 0, -1) > 0)
    # a fixed clockwise quarter turn of a square image: every mask pixel lands where np.rot90(-1) puts it
    _, turned = iaa.Affine(rotate=90).augment(image, masks, seed=0)
    np.testing.assert_array_equal(turned, np.rot90(masks, -1))


def test_masks_stay_binary_and_are_filled_with_zero():
    image, masks = _scene()
    augmenter = iaa.Sequential(
        [iaa.Affine(rotate=(-30, 30), translate_px={"x": (-5, 5)}), iaa.CropAndPad(px=(-3, 3))]
    )
    for seed in range(5):
        out_image, out_masks = augmenter.augment(image, masks, seed=seed)
        assert out_masks.dtype == bool and out_masks.shape[:2] == out_image.shape[:2] == image.shape[:2]
        assert out_masks.sum() > 0


def _frequency(augmenter, trials=400) -> float:
    """Fraction of calls that changed the image (each call seeded with its index)."""
    image, _ = _scene()
    changed = [not np.array_equal(augmenter.augment(image, seed=seed)[0], image) for seed in range(trials)]
    return float(np.mean(changed))


def test_probability_semantics():
    assert _frequency(iaa.Fliplr(0.0)) == 0.0
    assert _frequency(iaa.Fliplr(1.0)) == 1.0
    assert abs(_frequency(iaa.Fliplr(0.5)) - 0.5) < 0.08
    assert abs(_frequency(iaa.Sometimes(0.3, iaa.Flipud(1.0))) - 0.3) < 0.08
    # OneOf picks uniformly, then the child keeps its own probability: 1/2 * 1/2 + 1/2 * 0 = 1/4
    assert abs(_frequency(iaa.OneOf([iaa.Fliplr(0.5), iaa.Fliplr(0.0)])) - 0.25) < 0.08
    # Sometimes with an else branch: flip left-right 20 %, else up-down
    image, _ = _scene()
    outputs = [
        iaa.Sometimes(0.2, iaa.Fliplr(1.0), iaa.Flipud(1.0)).augment(image, seed=s)[0] for s in range(400)
    ]
    lr = np.mean([np.array_equal(o, image[:, ::-1]) for o in outputs])
    ud = np.mean([np.array_equal(o, image[::-1]) for o in outputs])
    assert abs(lr - 0.2) < 0.07 and abs(ud - 0.8) < 0.07 and lr + ud == 1.0


def test_some_of_applies_the_drawn_number_of_children():
    image, _ = _scene()
    children = [iaa.Fliplr(1.0), iaa.Flipud(1.0)]
    assert _frequency(iaa.SomeOf(0, children)) == 0.0
    both = [iaa.SomeOf(2, children).augment(image, seed=s)[0] for s in range(20)]
    assert all(np.array_equal(o, image[::-1, ::-1]) for o in both)
    # (0, 2): 0, 1 or 2 children, each count with 1/3; the image is unchanged only with 0 children
    assert abs(_frequency(iaa.SomeOf((0, 2), children)) - 2 / 3) < 0.08


def test_linear_contrast_uses_imgaugs_formula():
    image = np.array([[[0, 100, 255]]], np.uint8)
    out = iaa.LinearContrast(2.0).augment_image(image)
    np.testing.assert_array_equal(out, [[[0, 72, 255]]])  # 127.5 + 2 * (100 - 127.5) = 72.5 -> 72


def test_photometric_augmenters_change_pixels_not_shape():
    image, masks = _scene()
    for augmenter in [
        iaa.Multiply((1.3, 1.5)),
        iaa.GaussianBlur(sigma=(1.0, 2.0)),
        iaa.AdditiveGaussianNoise(scale=(10, 20)),
        iaa.LinearContrast((0.5, 0.7)),
    ]:
        out_image, out_masks = augmenter.augment(image, masks, seed=0)
        assert out_image.shape == image.shape and not np.array_equal(out_image, image), augmenter
        np.testing.assert_array_equal(out_masks, masks)
    assert np.array_equal(iaa.GaussianBlur(sigma=0.0).augment_image(image), image)


def test_albumentations_transforms_mix_in():
    image, _ = _scene()
    out = iaa.Sequential([A.HorizontalFlip(p=1.0), iaa.Flipud(1.0)]).augment_image(image)
    np.testing.assert_array_equal(out, image[::-1, ::-1])


def test_unsupported_augmenters_and_parameters_name_the_alternative():
    with pytest.raises(iaa.UnsupportedAugmenterError, match=r"iaa\.Grayscale .*albumentations\.ToGray"):
        iaa.Grayscale(alpha=1.0)
    assert not hasattr(iaa, "PiecewiseAffine")
    with pytest.raises(iaa.UnsupportedParameterError, match="list"):
        iaa.Multiply([0.5, 1.5])
    with pytest.raises(iaa.UnsupportedParameterError, match="constant"):
        iaa.Affine(rotate=10, mode="reflect")
    with pytest.raises(iaa.UnsupportedParameterError, match="random_order"):
        iaa.Sequential([iaa.Fliplr(0.5)], random_order=True)
    with pytest.raises(TypeError, match="imgaug"):
        iaa.Sequential([object()]).to_albumentations()
