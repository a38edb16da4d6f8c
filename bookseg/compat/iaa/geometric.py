"""imgaug's geometric augmenters (`Fliplr`, `Flipud`, `Rot90`, `Affine`, `CropAndPad`) as albumentations transforms.

Directions follow imgaug: `Rot90(k=1)` and `Affine(rotate=+a)` turn the image clockwise (as displayed,
y down). albumentations turns counter-clockwise for positive values, so angles are negated and k
turns become (4 - k) % 4 of `np.rot90`. Borders are constant (imgaug `mode="constant"`); masks are
filled with 0 and resampled nearest-neighbour by the training `Augmenter`.
"""

from __future__ import annotations

import albumentations as A
import cv2

from bookseg.compat.iaa.base import Augmenter, UnsupportedParameterError, probability, value_range

_ORDER = {0: cv2.INTER_NEAREST, 1: cv2.INTER_LINEAR, 3: cv2.INTER_CUBIC}


def _constant_mode(mode, cval, what: str):
    if mode != "constant":
        raise UnsupportedParameterError(
            f'{what}(mode={mode!r}): only mode="constant" is supported; reflected or replicated borders '
            "copy books into the image without masks"
        )
    if isinstance(cval, tuple | list):
        raise UnsupportedParameterError(f"{what}(cval={cval!r}): give one fill value (0-255)")
    return cval


class Fliplr(Augmenter):
    """Mirror left-right with probability `p` (imgaug's default p=1)."""

    def __init__(self, p=1, **kwargs):
        super().__init__(**kwargs)
        self.p = probability(p, "Fliplr(p)")

    def to_albumentations(self):
        return A.HorizontalFlip(p=self.p)


class Flipud(Augmenter):
    """Mirror top-bottom with probability `p` (imgaug's default p=1)."""

    def __init__(self, p=1, **kwargs):
        super().__init__(**kwargs)
        self.p = probability(p, "Flipud(p)")

    def to_albumentations(self):
        return A.VerticalFlip(p=self.p)


class TurnBy90(A.RandomRotate90):
    """albumentations' RandomRotate90 restricted to counter-clockwise factors drawn uniformly from `factors`."""

    def __init__(self, factors=(0, 1, 2, 3), p: float = 1.0):
        super().__init__(p=p)
        self.factors = tuple(int(f) % 4 for f in factors)

    def get_params(self):
        return {"factor": self.factors[self.py_random.randrange(len(self.factors))]}


class Rot90(Augmenter):
    """Turn clockwise by k * 90 degrees.

    `k`: an int; a list of ints (one drawn uniformly); a tuple (a, b) = an int drawn from a..b.
    `keep_size=True` (imgaug's default) squeezes a turned non-square image back to its old size in
    imgaug; here the turned image keeps its turned size (bookseg resizes every image to the network
    input afterwards, without distortion), so masks and image stay exact either way.
    """

    def __init__(self, k=1, keep_size=True, **kwargs):
        super().__init__(**kwargs)
        del keep_size
        if isinstance(k, int) and not isinstance(k, bool):
            turns = [k]
        elif isinstance(k, list) and k and all(isinstance(v, int) for v in k):
            turns = list(k)
        elif isinstance(k, tuple) and len(k) == 2 and all(isinstance(v, int) for v in k) and k[0] <= k[1]:
            turns = list(range(k[0], k[1] + 1))
        else:
            raise UnsupportedParameterError(
                f"Rot90(k={k!r}): use an int, a list of ints or a (min, max) tuple"
            )
        self.turns = turns

    def to_albumentations(self):
        return TurnBy90(factors=[(4 - t % 4) % 4 for t in self.turns], p=1.0)


class Affine(Augmenter):
    """imgaug's Affine: scale, translate (percent or px), rotate (degrees, clockwise) and shear.

    Each parameter is a number (fixed) or a (min, max) tuple (uniform), `scale`, `translate_*` and
    `shear` also a dict {"x": ..., "y": ...}. `order` 0 / 1 / 3 = nearest / bilinear / bicubic for the
    image. Shear is passed to albumentations as is (its sign convention was not checked against imgaug).
    """

    def __init__(
        self,
        scale=None,
        translate_percent=None,
        translate_px=None,
        rotate=None,
        shear=None,
        order=1,
        cval=0,
        mode="constant",
        fit_output=False,
        backend="auto",
        **kwargs,
    ):
        super().__init__(**kwargs)
        del backend
        if order not in _ORDER:
            raise UnsupportedParameterError(f"Affine(order={order!r}): use 0, 1 or 3")
        self.cval = _constant_mode(mode, cval, "Affine")
        self.order, self.fit_output = order, bool(fit_output)
        self.scale = self._xy(1.0 if scale is None else scale, "Affine(scale)")
        self.translate_percent = (
            None if translate_percent is None else self._xy(translate_percent, "Affine(translate_percent)")
        )
        self.translate_px = None if translate_px is None else self._xy(translate_px, "Affine(translate_px)")
        low, high = value_range(0.0 if rotate is None else rotate, "Affine(rotate)")
        self.rotate = (-high, -low)  # clockwise (imgaug) -> counter-clockwise (albumentations)
        self.shear = self._xy(0.0 if shear is None else shear, "Affine(shear)")

    @staticmethod
    def _xy(value, what: str):
        if isinstance(value, dict):
            unknown = set(value) - {"x", "y"}
            if unknown:
                raise UnsupportedParameterError(f"{what}: unknown keys {sorted(unknown)}; use 'x' and 'y'")
            return {axis: value_range(v, f"{what}[{axis!r}]") for axis, v in value.items()}
        return value_range(value, what)

    def to_albumentations(self):
        return A.Affine(
            scale=self.scale,
            translate_percent=self.translate_percent,
            translate_px=self.translate_px,
            rotate=self.rotate,
            shear=self.shear,
            interpolation=_ORDER[self.order],
            mask_interpolation=cv2.INTER_NEAREST,
            fit_output=self.fit_output,
            border_mode=cv2.BORDER_CONSTANT,
            fill=self.cval,
            fill_mask=0,
            p=1.0,
        )


class CropAndPad(Augmenter):
    """Crop (negative values) or pad (positive values) each side, by pixels `px` or fractions `percent`.

    Forms as imgaug's: a number, a (min, max) tuple, or a 4-tuple (top, right, bottom, left) of those.
    `keep_size=True` resizes the result back to the input size.
    """

    def __init__(
        self,
        px=None,
        percent=None,
        pad_mode="constant",
        pad_cval=0,
        keep_size=True,
        sample_independently=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if (px is None) == (percent is None):
            raise ValueError("CropAndPad: give exactly one of px and percent")
        self.pad_cval = _constant_mode(pad_mode, pad_cval, "CropAndPad")
        self.px, self.percent = px, percent
        self.keep_size, self.sample_independently = bool(keep_size), bool(sample_independently)

    def to_albumentations(self):
        return A.CropAndPad(
            px=self.px,
            percent=self.percent,
            keep_size=self.keep_size,
            sample_independently=self.sample_independently,
            interpolation=cv2.INTER_LINEAR,
            mask_interpolation=cv2.INTER_NEAREST,
            border_mode=cv2.BORDER_CONSTANT,
            fill=self.pad_cval,
            fill_mask=0,
            p=1.0,
        )
