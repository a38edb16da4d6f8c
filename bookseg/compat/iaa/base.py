"""The base of the `iaa` augmenters: each one describes an imgaug augmenter and builds its albumentations twin.

An augmenter here holds imgaug's arguments and `to_albumentations()` returns the equivalent
albumentations transform (a compose for `Sequential`, `Sometimes`, ...). Training runs that transform
inside `bookseg.data.augment.Augmenter`, which moves the instance masks with the image pixel-exactly
(nearest-neighbour masks, zero fill) and drops instances pushed out of the frame.
"""

from __future__ import annotations

import albumentations as A
import numpy as np


class UnsupportedParameterError(ValueError):
    """An imgaug argument form this shim does not translate (the message says what to write instead)."""


class Augmenter:
    """Base class: imgaug's constructor keywords `name`, `seed`, `random_state`, `deterministic` are
    accepted and ignored (every training example is seeded by the input pipeline)."""

    def __init__(self, name=None, seed=None, random_state=None, deterministic=False):
        del seed, random_state, deterministic
        self.name = name or type(self).__name__

    def to_albumentations(self) -> A.BasicTransform | A.BaseCompose:
        raise NotImplementedError

    def to_deterministic(self) -> Augmenter:
        """imgaug API: the same augmenter (determinism comes from the per-example seed here)."""
        return self

    def augment(self, image: np.ndarray, masks: np.ndarray | None = None, seed: int | None = None):
        """Augment one image and its instance masks once.

        Args:
            image: uint8 [H, W, 3].
            masks: bool [H, W, N] instance masks, or None.
            seed: seed of this call (None: random).

        Returns:
            (image uint8 [H', W', 3], masks bool [H', W', N] or None). Unlike training, instances
            pushed out of the frame are kept (as empty masks), so N is unchanged.
        """
        compose = A.Compose([self.to_albumentations()], seed=seed)
        if masks is None:
            return compose(image=image)["image"], None
        stacked = np.moveaxis(np.asarray(masks, np.uint8), -1, 0)
        out = compose(image=image, masks=list(stacked) if len(stacked) else [])
        height, width = out["image"].shape[:2]
        if len(out["masks"]):
            new_masks = np.moveaxis(np.asarray(out["masks"]), 0, -1) > 0
        else:
            new_masks = np.zeros((height, width, 0), bool)
        return out["image"], new_masks

    def augment_image(self, image: np.ndarray) -> np.ndarray:
        """imgaug API: one augmented image (uint8 [H', W', 3])."""
        return self.augment(image)[0]

    def augment_images(self, images) -> list[np.ndarray]:
        return [self.augment_image(image) for image in images]

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return self.augment_image(image)

    def __repr__(self) -> str:
        return f"iaa.{type(self).__name__}({self.name!r})"


def as_transform(child) -> A.BasicTransform | A.BaseCompose:
    """An `iaa` augmenter or an albumentations transform, as an albumentations transform."""
    if isinstance(child, Augmenter):
        return child.to_albumentations()
    if isinstance(child, A.BasicTransform | A.BaseCompose):
        return child
    raise TypeError(
        f"{child!r} is neither a bookseg.compat.iaa augmenter nor an albumentations transform "
        "(imgaug's own augmenters cannot run here: imgaug does not import on numpy 2)"
    )


def children_list(children) -> list:
    """imgaug's child forms (None, one augmenter, a list) as a list."""
    if children is None:
        return []
    if isinstance(children, list | tuple):
        return list(children)
    return [children]


def probability(value, what: str) -> float:
    """A fixed probability in [0, 1] (imgaug also takes stochastic parameters; those are rejected)."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise UnsupportedParameterError(f"{what}: only a number in [0, 1] is supported here, got {value!r}")
    if not 0 <= value <= 1:
        raise ValueError(f"{what}: a probability must lie in [0, 1], got {value}")
    return float(value)


def value_range(value, what: str) -> tuple[float, float]:
    """imgaug's number-or-range forms: a number v -> (v, v); a tuple (a, b) -> uniform in [a, b]."""
    if isinstance(value, int | float | np.number) and not isinstance(value, bool):
        return float(value), float(value)
    if (
        isinstance(value, tuple)
        and len(value) == 2
        and all(isinstance(v, int | float | np.number) for v in value)
    ):
        low, high = float(value[0]), float(value[1])
        if low > high:
            raise ValueError(f"{what}: range {value} has its bounds swapped")
        return low, high
    if isinstance(value, list):
        raise UnsupportedParameterError(
            f"{what}: a list (imgaug picks one of its values) is not supported; use a (min, max) tuple, "
            "or iaa.OneOf([...]) over one augmenter per value"
        )
    raise UnsupportedParameterError(
        f"{what}: only a number or a (min, max) tuple is supported, got {value!r} (imgaug stochastic "
        "parameters do not translate)"
    )


def per_channel_flag(value, what: str) -> bool:
    """imgaug's `per_channel`: True / False (a probability of per-channel sampling is rejected)."""
    if isinstance(value, bool):
        return value
    if value in (0, 1):
        return bool(value)
    raise UnsupportedParameterError(f"{what}: per_channel must be True or False here, got {value!r}")
