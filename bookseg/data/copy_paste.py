"""Copy-paste augmentation (Ghiasi et al., CVPR 2021): books cut out of other training photos are
pasted onto the photo being augmented.

Example::

    paster = CopyPaster(train_records, ["book"], p=0.5, max_instances=10, scale=(0.8, 1.25))
    result = paster(image, masks, class_ids, rng=rng)   # AugmentResult; result.pasted books added
    augment = build_augmentation(flips, seed=0, copy_paste=paster)   # paste, then the transforms

What one call does, with probability `p` (otherwise the example is returned unchanged): draw one
source record from the pool, then 1..`max_instances` of its non-crowd instances. Each is cut out of
the source photo by its mask, resized by (target's longer side / source's longer side) times a
factor drawn uniformly from `scale` (so a book keeps its size relative to the photo, as both photos
end up resized to the same network input), mirrored left-right with probability `hflip`, and
pasted at a uniformly random position: fully inside the target whenever it fits, otherwise covering
it along that axis and cut by the border. Later pastes land on top of earlier ones.

Mask-exact: the pixels that change are exactly those under the pasted masks, and they take the
pasted object's pixels (the image crop is resized with area/bilinear interpolation, the mask with
centre-aligned nearest neighbour, as `bookseg.mrcnn.images` does; at factor 1 nothing is resampled
and the pixels are the source's). Every instance underneath, earlier pastes included, loses the
covered pixels. Input instances that lose pixels and are left with fewer than `min_visible_pixels`
are dropped and counted in `dropped` (instances no paste touches are returned as given); pasted
ones that end up that small are discarded without counting (they were never part of the example).
Either way their few visible pixels stay in the image, as with instances the other augmentations
drop at the border. Boxes are recomputed from the masks.

Choices:
    - Resolution: pasting happens on the target photo at its own resolution, before the resize to
      the network input, like the other augmentations; the composite is then resized once.
    - Order: `Augmenter(copy_paste=...)` pastes *before* its albumentations pipeline, so flips,
      rotations and colour changes apply to the composite (pasted books are not the only ones
      left upright or unshaded).
    - Pool: exactly the records given (the fold's training records); records without a non-crowd
      instance are skipped. The target may itself be drawn as the source (probability
      1 / pool size): its books are then pasted again elsewhere, still a valid composite.
    - Memory: source photos are decoded lazily, one per pasting call, and kept in an LRU cache
      bounded in bytes (`cache_bytes`); only the chosen instances are rasterised, inside their boxes.
    - Threads: the pool is read-only and the cache sits behind a lock; all randomness comes from the
      per-call `rng`, so the same rng gives the same output whatever the thread scheduling.

Coordinates: arrays are indexed [row, column] = [y, x] from the top-left pixel; boxes are int32
(y1, x1, y2, x2) in pixels with y2/x2 exclusive (`boxes_from_masks`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from bookseg.data.augment import AugmentResult, _check_inputs
from bookseg.data.images import load_image_rgb
from bookseg.data.records import ImageRecord, Instance, boxes_from_masks, rasterize_polygon

DEFAULT_CACHE_BYTES = 128 * 2**20  # three decoded 12 MP photos, or a whole small data set


def settings_problems(*, p, max_instances, scale, hflip, min_visible_pixels) -> list[str]:
    """Messages for invalid copy-paste settings, each starting with the setting's name; [] if valid."""
    problems = []
    if not 0 <= p <= 1:
        problems.append(f"p={p} must be in [0, 1]")
    if max_instances < 1:
        problems.append(f"max_instances={max_instances} must be >= 1")
    try:
        lo, hi = (float(v) for v in scale)
        valid_scale = 0 < lo <= hi
    except (TypeError, ValueError):
        valid_scale = False
    if not valid_scale:
        problems.append(f"scale={scale!r} must be [lo, hi] with 0 < lo <= hi")
    if not 0 <= hflip <= 1:
        problems.append(f"hflip={hflip} must be in [0, 1]")
    if min_visible_pixels < 1:
        problems.append(f"min_visible_pixels={min_visible_pixels} must be >= 1")
    return problems


@dataclass(frozen=True)
class _Source:
    record: ImageRecord
    candidates: np.ndarray  # int [K] indices of the record's non-crowd instances
    class_ids: np.ndarray  # int32 [N] class id of every instance of the record


class CopyPaster:
    """Pastes instances of a pool of records onto images (see the module docstring).

    Args:
        records: the source pool, e.g. the fold's training records (`ImageRecord`s). Nothing is
            loaded here; photos are decoded when first drawn.
        class_names: foreground class names; class id = index + 1 (as `make_dataset`).
        p: probability that a call pastes anything.
        max_instances: at most this many instances pasted per call (the number is uniform in 1..max).
        scale: (lo, hi) range of the random size factor of a pasted instance, relative to its size
            in its own photo once both photos are brought to the same longer side.
        hflip: probability that a pasted instance is mirrored left-right.
        min_visible_pixels: instances that pasting covers down to fewer visible pixels are removed.
        cache_bytes: budget of the cache of decoded source photos (0: no cache).

    Raises:
        ValueError: an invalid setting (the message names it), or a record whose class is not in
            `class_names` (the message names the file, image and region).
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        class_names: Sequence[str],
        *,
        p: float = 0.5,
        max_instances: int = 10,
        scale: Sequence[float] = (0.8, 1.25),
        hflip: float = 0.5,
        min_visible_pixels: int = 1,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ):
        problems = settings_problems(
            p=p, max_instances=max_instances, scale=scale, hflip=hflip, min_visible_pixels=min_visible_pixels
        )
        if problems:
            raise ValueError("copy-paste: " + "; ".join(problems))
        self.p = float(p)
        self.max_instances = int(max_instances)
        self.scale = (float(scale[0]), float(scale[1]))
        self.hflip = float(hflip)
        self.min_visible_pixels = int(min_visible_pixels)
        ids_by_name = {name: i + 1 for i, name in enumerate(class_names)}
        self._sources = []
        for record in records:
            class_ids = record.class_ids(ids_by_name)
            candidates = [k for k, inst in enumerate(record.instances) if not inst.iscrowd]
            if len(candidates):
                self._sources.append(_Source(record, np.array(candidates, np.int64), class_ids))
        self._images = _ImageCache(cache_bytes)

    @property
    def records(self) -> list[ImageRecord]:
        """The pool's records that can give an instance (in the order given)."""
        return [source.record for source in self._sources]

    def __repr__(self) -> str:
        return (
            f"CopyPaster({len(self._sources)} source images, p={self.p}, max_instances={self.max_instances}, "
            f"scale={list(self.scale)}, hflip={self.hflip}, min_visible_pixels={self.min_visible_pixels})"
        )

    def __call__(
        self,
        image: np.ndarray,
        masks: np.ndarray,
        class_ids: np.ndarray,
        *,
        rng: np.random.Generator | None = None,
        with_boxes: bool = True,
    ) -> AugmentResult:
        """Paste instances from one source record onto `image` (or return the example unchanged).

        Args:
            image: uint8 [H, W, 3] target photo.
            masks: bool [H, W, N] its instance masks (N may be 0).
            class_ids: int [N] (negative = crowd, kept as given).
            rng: the call's randomness (None: a fresh nondeterministic generator).
            with_boxes: False leaves `boxes` None, for callers that recompute them anyway (`Augmenter`
                after its transforms): a pass over all masks saved.

        Returns:
            AugmentResult of size [H, W]: the kept input instances first (input order), then the
            pasted ones in pasting order; `dropped` counts removed input instances, `pasted` the
            pasted instances kept.
        """
        image, masks, class_ids = _check_inputs(image, masks, class_ids)
        rng = np.random.default_rng() if rng is None else rng
        if not self._sources or self.p == 0 or rng.random() >= self.p:
            boxes = boxes_from_masks(masks) if with_boxes else None
            return AugmentResult(image, masks, class_ids, boxes, dropped=0)

        source = self._sources[int(rng.integers(len(self._sources)))]
        count = min(int(rng.integers(1, self.max_instances + 1)), len(source.candidates))
        chosen = rng.choice(source.candidates, size=count, replace=False)
        source_image = self._images.get(source.record)
        height, width = image.shape[:2]
        size_ratio = max(height, width) / max(source_image.shape[:2])
        pastes, pasted_ids = [], []
        for k in chosen:
            factor = size_ratio * rng.uniform(*self.scale)
            mirror = rng.random() < self.hflip
            cut = _cut_out(source_image, source.record.instances[k], factor, mirror)
            if cut is None:
                continue
            pixels, mask = cut
            top = int(rng.integers(min(0, height - mask.shape[0]), max(0, height - mask.shape[0]) + 1))
            left = int(rng.integers(min(0, width - mask.shape[1]), max(0, width - mask.shape[1]) + 1))
            pastes.append((top, left, pixels, mask))
            pasted_ids.append(source.class_ids[k])
        result = self._composite(image, masks, class_ids, pastes, np.asarray(pasted_ids, np.int32))
        if with_boxes:
            result.boxes = boxes_from_masks(result.masks)
        return result

    def _composite(self, image, masks, class_ids, pastes, pasted_ids) -> AugmentResult:
        """Paste `pastes` [(top, left, uint8 [h, w, 3], bool [h, w])] in order; occlude and drop.

        Only instances that lost pixels are checked against `min_visible_pixels`, and their pixels
        are counted only once: full-stack reductions dominate the cost on large photos.
        """
        height, width, n_in = masks.shape
        n_out = n_in + len(pastes)
        out_image = image.copy()
        out_masks = np.zeros((height, width, n_out), bool)
        out_masks[:, :, :n_in] = masks
        removed = np.zeros(n_out, np.int64)  # pixels each instance lost to later pastes
        visible_pixels = np.zeros(n_out, np.int64)  # of the pasted instances, before later pastes
        for j, (top, left, pixels, mask) in enumerate(pastes):
            y0, x0 = max(top, 0), max(left, 0)
            y1, x1 = min(top + mask.shape[0], height), min(left + mask.shape[1], width)
            visible = mask[y0 - top : y1 - top, x0 - left : x1 - left]
            target = out_image[y0:y1, x0:x1]
            target[visible] = pixels[y0 - top : y1 - top, x0 - left : x1 - left][visible]
            below = out_masks[y0:y1, x0:x1, : n_in + j]
            removed[: n_in + j] += np.count_nonzero(below[visible], axis=0)
            below[visible] = False
            out_masks[y0:y1, x0:x1, n_in + j] = visible
            visible_pixels[n_in + j] = np.count_nonzero(visible)
        for k in np.flatnonzero(removed[:n_in]):  # one channel at a time: no copy of the touched masks
            visible_pixels[k] = np.count_nonzero(masks[:, :, k])
        keep = visible_pixels - removed >= self.min_visible_pixels
        keep[:n_in][removed[:n_in] == 0] = True  # untouched input instances stay as given
        if not keep.all():
            out_masks = np.ascontiguousarray(out_masks[:, :, keep])
        return AugmentResult(
            image=out_image,
            masks=out_masks,
            class_ids=np.concatenate([class_ids, pasted_ids])[keep],
            boxes=None,
            dropped=int((~keep[:n_in]).sum()),
            pasted=int(keep[n_in:].sum()),
        )


def build_copy_paste(
    settings: Mapping | None, records: Sequence[ImageRecord], class_names: Sequence[str], **kwargs
) -> CopyPaster | None:
    """A `CopyPaster` from the `augmentation.copy_paste` config (plain dict or OmegaConf); None when off.

    Args:
        settings: {p, max_instances, scale, hflip, min_visible_pixels}; None, {} or p = 0: off.
        records: the source pool, the training records the dataset is built from (never validation).
        class_names: foreground class names, as given to `make_dataset`.
        **kwargs: other `CopyPaster` arguments (e.g. cache_bytes).
    """
    from omegaconf import DictConfig, OmegaConf

    if isinstance(settings, DictConfig):
        settings = OmegaConf.to_container(settings, resolve=True)
    if not settings or not settings.get("p", 0):
        return None
    return CopyPaster(records, class_names, **settings, **kwargs)


def _cut_out(image: np.ndarray, instance: Instance, factor: float, mirror: bool):
    """One instance of `image`, resized by `factor` and optionally mirrored left-right.

    Returns:
        (uint8 [h, w, 3] pixels of its box, bool [h, w] mask), or None when the mask is empty.
    """
    crop = instance_crop(instance, image.shape[0], image.shape[1])
    if crop is None:
        return None
    top, left, mask = crop
    pixels = image[top : top + mask.shape[0], left : left + mask.shape[1]]
    if factor != 1:
        size = (max(1, round(mask.shape[1] * factor)), max(1, round(mask.shape[0] * factor)))  # (w, h)
        pixels = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)
        mask = cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST_EXACT) > 0
        if not mask.any():
            return None
    if mirror:
        pixels, mask = pixels[:, ::-1], mask[:, ::-1]
    return pixels, mask


def instance_crop(instance: Instance, height: int, width: int):
    """An instance's mask cut to its tight box, without rasterising the whole image.

    Polygons are rasterised inside their (integer-shifted) bounding box only, by the same pixel-centre
    rule as `Instance.to_mask`, so the crop equals the full mask's box region.

    Returns:
        (top, left, bool [h, w] mask) with (top, left) the box's first row and column in the image,
        or None when the mask is empty inside the image.
    """
    if instance.mask is not None:
        full = np.asarray(instance.mask, bool)
        y1, x1, y2, x2 = boxes_from_masks(full[:, :, None])[0]
        return (int(y1), int(x1), full[y1:y2, x1:x2].copy()) if y2 > y1 else None
    polygon = np.asarray(instance.polygon, np.float64).reshape(-1, 2)
    if len(polygon) < 3 or not np.isfinite(polygon).all():
        return None
    # Pixel j is inside only if its centre j + 0.5 is within [min, max], so floor(min)..ceil(max) covers it.
    left, top = max(0, int(np.floor(polygon[:, 0].min()))), max(0, int(np.floor(polygon[:, 1].min())))
    right = min(width, int(np.ceil(polygon[:, 0].max())))
    bottom = min(height, int(np.ceil(polygon[:, 1].max())))
    if left >= right or top >= bottom:
        return None
    window = rasterize_polygon(polygon - (left, top), bottom - top, right - left)
    y1, x1, y2, x2 = boxes_from_masks(window[:, :, None])[0]
    if y2 <= y1:
        return None
    return top + int(y1), left + int(x1), window[y1:y2, x1:x2]


class _ImageCache:
    """Decoded photos by path, least recently used evicted beyond `max_bytes`; thread-safe.

    Decoding happens outside the lock, so workers decode different photos in parallel (two workers
    asking for the same uncached photo may both decode it; one copy is kept).
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self._images: OrderedDict[str, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, record: ImageRecord) -> np.ndarray:
        """uint8 [H, W, 3] read-only RGB photo of `record` (checked against the annotated size)."""
        key = str(record.path)
        with self._lock:
            image = self._images.get(key)
            if image is not None:
                self._images.move_to_end(key)
                return image
        image = load_image_rgb(record.path)
        if image.shape[:2] != (record.height, record.width):
            raise ValueError(
                f"{record.where()}: file {record.path} is {image.shape[1]}x{image.shape[0]} (w x h) but the "
                f"annotation says {record.width}x{record.height}"
            )
        image.setflags(write=False)  # shared between worker threads
        with self._lock:
            if key not in self._images and image.nbytes <= self.max_bytes:
                self._images[key] = image
                self._bytes += image.nbytes
                while self._bytes > self.max_bytes:
                    _, evicted = self._images.popitem(last=False)
                    self._bytes -= evicted.nbytes
        return image
