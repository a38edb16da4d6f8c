"""Augmentation from config: albumentations transforms built from Hydra-style `_target_` items.

Example (a list, or a dict name -> item where a null item disables that entry)::

    augment = build_augmentation([
        {"_target_": "albumentations.HorizontalFlip", "p": 0.5},
        {"_target_": "albumentations.Rotate", "limit": 180, "p": 0.5},
    ], seed=0)
    result = augment(image, masks, class_ids)   # AugmentResult

Masks always follow the image pixel-exactly: the transforms run in one `albumentations.Compose`
with `mask_interpolation=INTER_NEAREST` (it overrides every transform's own setting), so masks stay
binary, and transforms that fill the border must use a constant border with mask fill 0 (a mirrored
or replicated border would create copies of books that have no mask). Boxes are recomputed from
the augmented masks; instances pushed out of the frame are dropped and counted.

Copy-paste (`bookseg.data.copy_paste.CopyPaster`, passed as `copy_paste=`) runs before the
transforms, so they apply to the composite image.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import albumentations as A
import cv2
import numpy as np

from bookseg.data.records import boxes_from_masks


@dataclass
class AugmentResult:
    """One augmented image and its instances.

    Attributes:
        image: uint8 [H', W', 3].
        masks: bool [H', W', M], the instances still visible (M <= N).
        class_ids: int32 [M], class ids of the kept instances (input order).
        boxes: int32 [M, 4] (y1, x1, y2, x2) pixels, y2/x2 exclusive, tight around `masks`.
        dropped: number of instances removed because fewer than `min_visible_pixels` stayed visible.
        pasted: instances added by copy-paste (counted before the transforms, which may drop some).
    """

    image: np.ndarray
    masks: np.ndarray
    class_ids: np.ndarray
    boxes: np.ndarray
    dropped: int
    pasted: int = 0


class Augmenter:
    """Applies an albumentations pipeline to an image with instance masks.

    Calls are reproducible: the same seed and the same sequence of calls give the same outputs.
    For parallel callers (tf.data workers) pass a per-example `rng`: each call is then seeded from
    it, on a per-thread copy of the pipeline, so results do not depend on thread scheduling.
    Without `rng`, calls share one pipeline behind a lock.

    Args:
        transforms: albumentations transforms, applied in order (may be empty with `copy_paste`).
        seed: seed of the pipeline's random state (None: nondeterministic).
        min_visible_pixels: instances with fewer mask pixels after the transforms are dropped.
        copy_paste: optional `CopyPaster` applied before the transforms; with `rng` it draws from
            it after the transforms' seed, so an example's transforms are the same with or without it.
    """

    def __init__(
        self, transforms: Sequence, *, seed: int | None = None, min_visible_pixels: int = 1, copy_paste=None
    ):
        if min_visible_pixels < 1:
            raise ValueError(f"min_visible_pixels must be >= 1, got {min_visible_pixels}")
        for index, transform in enumerate(transforms):
            _check_transform(transform, f"augmentation item {index}")
        self.transforms = list(transforms)
        self.min_visible_pixels = int(min_visible_pixels)
        self.copy_paste = copy_paste
        self._compose = A.Compose(self.transforms, mask_interpolation=cv2.INTER_NEAREST, seed=seed)
        self._paste_seeds = np.random.default_rng(seed)  # copy-paste randomness of calls without `rng`
        self._lock = threading.Lock()
        self._local = threading.local()

    def __repr__(self) -> str:
        names = ", ".join(type(t).__name__ for t in self.transforms)
        paste = "" if self.copy_paste is None else f", copy_paste={self.copy_paste!r}"
        return f"Augmenter([{names}], min_visible_pixels={self.min_visible_pixels}{paste})"

    def __call__(
        self,
        image: np.ndarray,
        masks: np.ndarray,
        class_ids: np.ndarray,
        *,
        rng: np.random.Generator | None = None,
    ) -> AugmentResult:
        """Augment one image.

        Args:
            image: uint8 [H, W, 3].
            masks: bool [H, W, N] instance masks (N may be 0).
            class_ids: int [N].
            rng: optional generator the call's seed is drawn from (see the class docstring).

        Returns:
            AugmentResult with the kept instances in input order.
        """
        image, masks, class_ids = _check_inputs(image, masks, class_ids)
        transform_seed = None if rng is None else int(rng.integers(2**31 - 1))
        pasted = dropped = 0
        if self.copy_paste is not None:
            if rng is None:
                with self._lock:
                    paste_rng = np.random.default_rng(self._paste_seeds.integers(2**63))
            else:
                paste_rng = rng
            with_boxes = not self.transforms  # else the boxes are recomputed after the transforms
            composite = self.copy_paste(image, masks, class_ids, rng=paste_rng, with_boxes=with_boxes)
            if not self.transforms:
                return composite
            image, masks, class_ids = composite.image, composite.masks, composite.class_ids
            pasted, dropped = composite.pasted, composite.dropped
        stacked = np.ascontiguousarray(np.moveaxis(masks, -1, 0), dtype=np.uint8)
        # albumentations stacks a list of masks; it cannot stack an empty one, so N = 0 goes as [].
        masks_in = stacked if len(stacked) else []
        if rng is None:
            with self._lock:
                out = self._compose(image=image, masks=masks_in)
        else:
            compose = getattr(self._local, "compose", None)
            if compose is None:
                compose = self._local.compose = copy.deepcopy(self._compose)
            compose.set_random_seed(transform_seed)
            out = compose(image=image, masks=masks_in)
        new_image = np.ascontiguousarray(out["image"], dtype=np.uint8)
        height, width = new_image.shape[:2]
        if len(out["masks"]):
            new_masks = np.moveaxis(np.asarray(out["masks"]), 0, -1) > 0
        else:
            new_masks = np.zeros((height, width, 0), bool)
        if new_masks.shape[:2] != (height, width):
            raise RuntimeError(
                f"augmentation changed the image to {height}x{width} but the masks to "
                f"{new_masks.shape[0]}x{new_masks.shape[1]}: a transform does not support masks"
            )
        keep = new_masks.sum(axis=(0, 1)) >= self.min_visible_pixels
        new_masks = np.ascontiguousarray(new_masks[:, :, keep])
        return AugmentResult(
            image=new_image,
            masks=new_masks,
            class_ids=class_ids[keep],
            boxes=boxes_from_masks(new_masks),
            dropped=dropped + int((~keep).sum()),
            pasted=pasted,
        )


def build_augmentation(
    spec: Sequence | Mapping | None, *, seed: int | None = None, min_visible_pixels: int = 1, copy_paste=None
) -> Augmenter | None:
    """Build an `Augmenter` from Hydra-style items; None when `spec` is empty and `copy_paste` None.

    Args:
        spec: list of items, or dict name -> item (insertion order; None items are skipped so a
            config can disable an inherited entry). Each item is a mapping with `_target_` naming
            an albumentations transform (e.g. "albumentations.Rotate") and its keyword arguments,
            instantiated with `hydra.utils.instantiate` (nested composes such as OneOf work), or an
            already built albumentations transform. Plain containers or OmegaConf configs.
        seed: seed of the pipeline.
        min_visible_pixels: see `Augmenter`.
        copy_paste: optional `bookseg.data.copy_paste.CopyPaster`, applied before the transforms.

    Raises:
        ValueError: an item without `_target_`, one that cannot be built, or a transform with a
            non-constant border / non-zero mask fill (the message names the item).
        TypeError: `spec` is not a list or dict, or an item is not an albumentations transform.
    """
    from hydra.utils import instantiate
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(spec, (DictConfig, ListConfig)):
        spec = OmegaConf.to_container(spec, resolve=True)
    if not spec:
        spec = []
    if isinstance(spec, Mapping):
        items = [(f"augmentation item {name!r}", item) for name, item in spec.items() if item is not None]
    elif isinstance(spec, Sequence) and not isinstance(spec, str):
        items = [(f"augmentation item {index}", item) for index, item in enumerate(spec) if item is not None]
    else:
        raise TypeError(
            f"augmentation spec must be a list or a dict of transforms, got {type(spec).__name__}"
        )
    transforms = []
    for label, item in items:
        if isinstance(item, A.BasicTransform | A.BaseCompose):
            transform = item
        elif isinstance(item, Mapping) and "_target_" in item:
            try:
                transform = instantiate(dict(item), _convert_="all")
            except Exception as error:
                raise ValueError(f"{label}: cannot build {item['_target_']!r}: {error}") from error
        else:
            raise ValueError(
                f"{label}: expected a mapping with '_target_' (e.g. albumentations.HorizontalFlip), "
                f"got {item!r}"
            )
        _check_transform(transform, label)
        transforms.append(transform)
    if not transforms and copy_paste is None:
        return None
    return Augmenter(transforms, seed=seed, min_visible_pixels=min_visible_pixels, copy_paste=copy_paste)


def _check_transform(transform, label: str) -> None:
    if isinstance(transform, A.BaseCompose):
        for index, child in enumerate(transform.transforms):
            _check_transform(child, f"{label}, child {index}")
        return
    if not isinstance(transform, A.BasicTransform):
        raise TypeError(f"{label}: {type(transform).__name__} is not an albumentations transform")
    border = getattr(transform, "border_mode", cv2.BORDER_CONSTANT)
    if border != cv2.BORDER_CONSTANT:
        raise ValueError(
            f"{label}: {type(transform).__name__} has border_mode={border}; use 0 (cv2.BORDER_CONSTANT): "
            "reflected or replicated borders copy books into the image without masks"
        )
    fill_mask = getattr(transform, "fill_mask", 0)
    if np.any(np.asarray(fill_mask, dtype=float) != 0):
        raise ValueError(
            f"{label}: {type(transform).__name__} has fill_mask={fill_mask}; masks must be filled with 0"
        )


def _check_inputs(image, masks, class_ids):
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"augment: image must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
    masks = np.asarray(masks)
    if masks.ndim != 3 or masks.shape[:2] != image.shape[:2]:
        raise ValueError(f"augment: masks must be [H, W, N] with H, W = {image.shape[:2]}, got {masks.shape}")
    class_ids = np.asarray(class_ids, np.int32).reshape(-1)
    if len(class_ids) != masks.shape[2]:
        raise ValueError(f"augment: {masks.shape[2]} masks but {len(class_ids)} class ids")
    return image, masks.astype(bool, copy=False), class_ids
