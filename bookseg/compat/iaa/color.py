"""imgaug's pixel-value augmenters (`Multiply`, `GaussianBlur`, `AdditiveGaussianNoise`, `LinearContrast`).

They change pixels only, never geometry, so masks are untouched. Parameters are numbers (fixed) or
(min, max) tuples (uniform), in imgaug's units: pixel values 0-255 for noise, sigma in pixels for blur.
"""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np

from bookseg.compat.iaa.base import Augmenter, per_channel_flag, value_range

# imgaug leaves an image unblurred below this sigma; albumentations divides by sigma, so 0 is lifted to it.
_MIN_SIGMA = 0.01


class Multiply(Augmenter):
    """Multiply pixel values by `mul` (per image, or per channel with per_channel=True)."""

    def __init__(self, mul=(0.8, 1.2), per_channel=False, **kwargs):
        super().__init__(**kwargs)
        self.mul = value_range(mul, "Multiply(mul)")
        self.per_channel = per_channel_flag(per_channel, "Multiply")

    def to_albumentations(self):
        return A.MultiplicativeNoise(
            multiplier=self.mul, per_channel=self.per_channel, elementwise=False, p=1.0
        )


class GaussianBlur(Augmenter):
    """Gaussian blur with standard deviation `sigma` (pixels); the kernel size follows from sigma."""

    def __init__(self, sigma=(0.0, 3.0), **kwargs):
        super().__init__(**kwargs)
        low, high = value_range(sigma, "GaussianBlur(sigma)")
        self.sigma = (max(low, _MIN_SIGMA), max(high, _MIN_SIGMA))

    def to_albumentations(self):
        return A.GaussianBlur(blur_limit=0, sigma_limit=self.sigma, p=1.0)


class AdditiveGaussianNoise(Augmenter):
    """Add Gaussian noise of mean `loc` and standard deviation `scale`, both in pixel values (0-255)."""

    def __init__(self, loc=0, scale=(0, 15), per_channel=False, **kwargs):
        super().__init__(**kwargs)
        self.loc = value_range(loc, "AdditiveGaussianNoise(loc)")
        self.scale = value_range(scale, "AdditiveGaussianNoise(scale)")
        self.per_channel = per_channel_flag(per_channel, "AdditiveGaussianNoise")

    def to_albumentations(self):
        return A.GaussNoise(
            std_range=(self.scale[0] / 255.0, self.scale[1] / 255.0),
            mean_range=(self.loc[0] / 255.0, self.loc[1] / 255.0),
            per_channel=self.per_channel,
            p=1.0,
        )


class CenteredContrast(A.ImageOnlyTransform):
    """imgaug's linear contrast on uint8: v -> clip(127.5 + alpha * (v - 127.5)), truncated to uint8.

    albumentations' RandomBrightnessContrast scales around 0, not around the middle grey, hence this
    transform. `alpha` is drawn uniformly from `alpha_range` per image (or per channel).
    """

    def __init__(self, alpha_range=(0.6, 1.4), per_channel: bool = False, p: float = 1.0):
        super().__init__(p=p)
        self.alpha_range, self.per_channel = tuple(alpha_range), bool(per_channel)

    def get_params(self):
        draws = 3 if self.per_channel else 1
        return {"alphas": [self.py_random.uniform(*self.alpha_range) for _ in range(draws)]}

    def apply(self, img, alphas=(1.0,), **params):
        values = np.arange(256, dtype=np.float32)
        tables = [np.clip(127.5 + a * (values - 127.5), 0, 255).astype(np.uint8) for a in alphas]
        if len(tables) == 1:
            return cv2.LUT(img, tables[0])
        return np.stack([cv2.LUT(img[..., c], tables[c]) for c in range(img.shape[-1])], axis=-1)

    def get_transform_init_args_names(self):
        return ("alpha_range", "per_channel")


class LinearContrast(Augmenter):
    """Scale pixel differences from middle grey by `alpha` (imgaug's formula, see `CenteredContrast`)."""

    def __init__(self, alpha=(0.6, 1.4), per_channel=False, **kwargs):
        super().__init__(**kwargs)
        self.alpha = value_range(alpha, "LinearContrast(alpha)")
        self.per_channel = per_channel_flag(per_channel, "LinearContrast")

    def to_albumentations(self):
        return CenteredContrast(alpha_range=self.alpha, per_channel=self.per_channel, p=1.0)
