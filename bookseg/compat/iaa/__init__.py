"""imgaug-compatible augmenters for matterport scripts, built on albumentations (imgaug does not import on numpy 2).

Replace `import imgaug.augmenters as iaa` (or `from imgaug import augmenters as iaa`) with
`from bookseg.compat import iaa`. Supported: `Sequential`, `Sometimes`, `SomeOf`, `OneOf`, `Fliplr`,
`Flipud`, `Affine`, `Rot90`, `Multiply`, `GaussianBlur`, `AdditiveGaussianNoise`, `LinearContrast`,
`CropAndPad`. albumentations transforms may be mixed in as children. Any other imgaug augmenter
raises `UnsupportedAugmenterError` naming the albumentations transform to use instead.
"""

from __future__ import annotations

from bookseg.compat.iaa.base import Augmenter, UnsupportedParameterError
from bookseg.compat.iaa.color import AdditiveGaussianNoise, GaussianBlur, LinearContrast, Multiply
from bookseg.compat.iaa.geometric import Affine, CropAndPad, Fliplr, Flipud, Rot90
from bookseg.compat.iaa.meta import OneOf, Sequential, SomeOf, Sometimes

__all__ = [
    "AdditiveGaussianNoise",
    "Affine",
    "Augmenter",
    "CropAndPad",
    "Fliplr",
    "Flipud",
    "GaussianBlur",
    "LinearContrast",
    "Multiply",
    "OneOf",
    "Rot90",
    "Sequential",
    "SomeOf",
    "Sometimes",
    "UnsupportedAugmenterError",
    "UnsupportedParameterError",
]

# imgaug augmenters matterport scripts use beyond the subset, and what to pass instead.
ALTERNATIVES = {
    "Add": "albumentations.RandomBrightnessContrast(contrast_limit=0)",
    "AddToHueAndSaturation": "albumentations.HueSaturationValue",
    "AverageBlur": "albumentations.Blur",
    "CLAHE": "albumentations.CLAHE",
    "CoarseDropout": "albumentations.CoarseDropout",
    "ContrastNormalization": "iaa.LinearContrast (same formula)",
    "Crop": "iaa.CropAndPad with negative px/percent, or albumentations.RandomCrop",
    "Dropout": "albumentations.PixelDropout",
    "ElasticTransformation": "albumentations.ElasticTransform",
    "Emboss": "albumentations.Emboss",
    "Grayscale": "albumentations.ToGray",
    "MedianBlur": "albumentations.MedianBlur",
    "MotionBlur": "albumentations.MotionBlur",
    "Pad": "iaa.CropAndPad with positive px/percent, or albumentations.PadIfNeeded",
    "PerspectiveTransform": "albumentations.Perspective",
    "PiecewiseAffine": "albumentations.PiecewiseAffine",
    "Resize": "albumentations.Resize",
    "Sharpen": "albumentations.Sharpen",
}


class UnsupportedAugmenterError(AttributeError):
    """An imgaug augmenter outside the supported subset (the message names the albumentations alternative)."""


def __getattr__(name: str):
    if name.startswith("_") or not name[:1].isupper():
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    alternative = ALTERNATIVES.get(name, "the matching albumentations transform (albumentations.ai/docs)")
    raise UnsupportedAugmenterError(
        f"iaa.{name} is not in bookseg's imgaug subset ({', '.join(n for n in __all__ if n[0].isupper() and 'Error' not in n and n != 'Augmenter')}). "
        f"Use {alternative} instead: albumentations transforms can be passed directly, alone, in a list "
        "or as children of iaa.Sequential / Sometimes / OneOf / SomeOf"
    )
