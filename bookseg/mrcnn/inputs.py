"""Training input pipeline: records -> per-image targets -> batched `tf.data.Dataset` of model inputs.

Per image (`load_training_example`, NumPy, matterport `load_image_gt` + `build_rpn_targets`):
load RGB -> rasterise masks -> augmentation (optional, at the photo's own resolution, before the
resize, so the window stays exact) -> resize and pad -> drop instances whose mask became empty ->
subsample to `max_gt_instances` -> boxes from masks -> mini masks -> RPN targets -> image meta.

Batches (`make_dataset`) are dicts keyed by the model's input names (`INPUT_NAMES`, which `MaskRCNN` takes):
`input_image`, `input_image_meta`, `input_rpn_match`, `input_rpn_bbox`, `input_gt_class_ids`,
`input_gt_boxes`, `input_gt_masks`. Examples are built by `tf.data` worker threads
(`map(numpy_function, num_parallel_calls=AUTOTUNE)`) and prefetched, so loading, augmentation
and target building overlap the training step.
"""

from __future__ import annotations

import inspect
import logging
import threading
from dataclasses import dataclass, field

import numpy as np

from bookseg.data.images import load_image_rgb
from bookseg.data.records import boxes_from_masks
from bookseg.mrcnn import images as im
from bookseg.mrcnn.anchors import pixel_anchors_for
from bookseg.mrcnn.rpn_targets import build_rpn_targets

log = logging.getLogger(__name__)

INPUT_NAMES = (  # the keys of a training batch (`MaskRCNN`: TRAINING_INPUTS)
    "input_image",
    "input_image_meta",
    "input_rpn_match",
    "input_rpn_bbox",
    "input_gt_class_ids",
    "input_gt_boxes",
    "input_gt_masks",
)


@dataclass
class PipelineStats:
    """Thread-safe counters of what the pipeline dropped or found, for logs and reports.

    Attributes:
        images: examples built.
        images_without_instances: examples with no (non-crowd) instance left (trained as negatives).
        empty_in_annotation: instances whose annotated mask is empty in the image (e.g. a polygon
            entirely outside it); each also logged as a warning naming image and region.
        dropped_by_augmentation: instances the augmentation removed (its `dropped` count).
        emptied_by_resize: instances whose mask vanished when resizing.
        dropped_over_max: instances removed by subsampling to `max_gt_instances`.
    """

    images: int = 0
    images_without_instances: int = 0
    empty_in_annotation: int = 0
    dropped_by_augmentation: int = 0
    emptied_by_resize: int = 0
    dropped_over_max: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + int(value))

    def as_dict(self) -> dict[str, int]:
        with self._lock:
            return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    def summary(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.as_dict().items())


_WARNED: set = set()
_WARNED_LOCK = threading.Lock()


def _warn_once(key, message: str, *args) -> None:
    """Log a warning once per key (examples are rebuilt every epoch)."""
    with _WARNED_LOCK:
        if key in _WARNED:
            return
        _WARNED.add(key)
    log.warning(message, *args)


_ANCHORS: dict = {}
_ANCHORS_LOCK = threading.Lock()


def _pixel_anchors(config, image_shape) -> np.ndarray:
    key = (
        tuple(config.rpn_anchor_scales),
        tuple(config.rpn_anchor_ratios),
        tuple(config.backbone_strides),
        int(config.rpn_anchor_stride),
        int(image_shape[0]),
        int(image_shape[1]),
    )
    with _ANCHORS_LOCK:
        if key not in _ANCHORS:
            anchors = pixel_anchors_for(config, image_shape[:2])
            anchors.setflags(write=False)
            _ANCHORS[key] = anchors
        return _ANCHORS[key]


def _call_augment(augment, image, masks, class_ids, rng):
    """Call the augmentation hook, passing our per-example `rng` (or a seed) when it accepts one."""
    try:
        params = inspect.signature(augment).parameters
    except (TypeError, ValueError):
        params = {}
    if "rng" in params:
        return augment(image, masks, class_ids, rng=rng)
    if "seed" in params:
        return augment(image, masks, class_ids, seed=int(rng.integers(2**31 - 1)))
    return augment(image, masks, class_ids)


def load_training_example(
    record,
    config,
    class_ids_by_name,
    *,
    augment=None,
    rng=None,
    image_index: int = 0,
    stats: PipelineStats | None = None,
) -> dict:
    """Build the model inputs of one image (the batch entries without the batch axis).

    Args:
        record: `bookseg.data.records.ImageRecord`.
        config: `MrcnnConfig`.
        class_ids_by_name: class name -> id (index in class_names + 1; 0 is background).
        augment: optional callable `augment(image, masks, class_ids)` returning an object with
            `.image` uint8 [h, w, 3], `.masks` bool [h, w, n], `.class_ids` [n], `.dropped` (int).
            Called with `rng=` (or `seed=`) too if its signature accepts it.
        rng: `np.random.Generator` for subsampling and RPN negatives (and the augmentation).
        image_index: integer id written into the image meta.
        stats: optional counters updated with what was dropped.

    Returns:
        dict of NumPy arrays: input_image float32 [H, W, 3] molded; input_image_meta float32
        [image_meta_size]; input_rpn_match int32 [A]; input_rpn_bbox float32
        [rpn_train_anchors_per_image, 4]; input_gt_class_ids int32 [max_gt] (negative = crowd,
        0 = padding); input_gt_boxes float32 [max_gt, 4] molded-image pixels (y1, x1, y2, x2),
        y2/x2 exclusive; input_gt_masks bool [mh, mw, max_gt] mini masks (or [H, W, max_gt]
        full masks when `config.use_mini_mask` is False).
    """
    rng = np.random.default_rng() if rng is None else rng
    stats = PipelineStats() if stats is None else stats
    image = load_image_rgb(record.path)
    if image.shape[:2] != (record.height, record.width):
        raise ValueError(
            f"{record.where()}: file {record.path} is {image.shape[1]}x{image.shape[0]} (w x h) but the "
            f"annotation says {record.width}x{record.height}"
        )
    masks = record.masks()
    class_ids = record.class_ids(class_ids_by_name)
    class_ids[
        np.array([inst.iscrowd for inst in record.instances], bool)
    ] *= -1  # crowd regions: negative ids

    empty = ~masks.any(axis=0).any(axis=0)
    for k in np.flatnonzero(empty):
        where = record.where(record.instances[k].region or f"instance {k}")
        _warn_once(
            (record.source, record.image_id, int(k)),
            "%s: mask is empty inside the image, instance skipped",
            where,
        )
    if empty.any():
        masks, class_ids = masks[:, :, ~empty], class_ids[~empty]
    counts = {"empty_in_annotation": int(empty.sum())}

    if augment is not None:
        result = _call_augment(augment, image, masks, class_ids, rng)
        image = np.asarray(result.image)
        masks = np.asarray(result.masks, bool).reshape(image.shape[0], image.shape[1], -1)
        class_ids = np.asarray(result.class_ids, np.int32).reshape(-1)
        counts["dropped_by_augmentation"] = int(getattr(result, "dropped", 0) or 0)
        if masks.shape[-1] != len(class_ids):
            raise ValueError(
                f"{record.where()}: augmentation returned {masks.shape[-1]} masks but "
                f"{len(class_ids)} class ids"
            )

    original_shape = image.shape
    image, window, scale, padding = im.resize_image(image, config, training=True)
    masks = im.resize_masks(masks, scale, padding)

    boxes = boxes_from_masks(masks)
    kept = boxes[:, 2] > boxes[:, 0]
    counts["emptied_by_resize"] = int((~kept).sum())
    if not kept.all():
        masks, class_ids, boxes = masks[:, :, kept], class_ids[kept], boxes[kept]

    max_gt = int(config.max_gt_instances)
    if len(class_ids) > max_gt:
        keep = np.sort(rng.choice(len(class_ids), max_gt, replace=False))
        counts["dropped_over_max"] = len(class_ids) - max_gt
        masks, class_ids, boxes = masks[:, :, keep], class_ids[keep], boxes[keep]

    n = len(class_ids)
    counts["images_without_instances"] = int(not (class_ids > 0).any())
    stats.add(images=1, **counts)

    gt_class_ids = np.zeros(max_gt, np.int32)
    gt_class_ids[:n] = class_ids
    gt_boxes = np.zeros((max_gt, 4), np.float32)
    gt_boxes[:n] = boxes
    if config.use_mini_mask:
        gt_masks = np.zeros(tuple(config.mini_mask_shape) + (max_gt,), bool)
        gt_masks[:, :, :n] = im.minimize_masks(boxes, masks, config.mini_mask_shape)
    else:
        gt_masks = np.zeros(image.shape[:2] + (max_gt,), bool)
        gt_masks[:, :, :n] = masks

    rpn_match, rpn_bbox = build_rpn_targets(
        _pixel_anchors(config, image.shape), class_ids, boxes, config, rng
    )
    meta = im.compose_image_meta(
        image_index, original_shape, image.shape, window, scale, np.ones(config.num_classes)
    )
    return {
        "input_image": im.mold_image(image, config),
        "input_image_meta": meta,
        "input_rpn_match": rpn_match,
        "input_rpn_bbox": rpn_bbox,
        "input_gt_class_ids": gt_class_ids,
        "input_gt_boxes": gt_boxes,
        "input_gt_masks": gt_masks,
    }


def epoch_order(n_records: int, epoch: int, *, shuffle: bool, seed: int) -> np.ndarray:
    """Record indices of one epoch: a permutation seeded by (seed, epoch), or 0..n-1 unshuffled."""
    if not shuffle:
        return np.arange(n_records)
    return np.random.default_rng([seed, epoch]).permutation(n_records)


def example_rng(seed: int, epoch: int, position: int) -> np.random.Generator:
    """The random generator of one example: depends only on (seed, epoch, position in the epoch)."""
    return np.random.default_rng([seed, epoch, position, 0x5EED])


def input_specs(config):
    """Per-example (dtype, shape) of every input; None for sizes unknown in pad64 / none modes."""
    height, width, _ = config.image_shape
    max_gt = int(config.max_gt_instances)
    if height is not None:
        n_anchors = len(_pixel_anchors(config, (height, width)))
    else:
        n_anchors = None
    mask_hw = tuple(config.mini_mask_shape) if config.use_mini_mask else (height, width)
    return {
        "input_image": ("float32", (height, width, 3)),
        "input_image_meta": ("float32", (config.image_meta_size,)),
        "input_rpn_match": ("int32", (n_anchors,)),
        "input_rpn_bbox": ("float32", (int(config.rpn_train_anchors_per_image), 4)),
        "input_gt_class_ids": ("int32", (max_gt,)),
        "input_gt_boxes": ("float32", (max_gt, 4)),
        "input_gt_masks": ("bool", mask_hw + (max_gt,)),
    }


def make_dataset(
    records,
    config,
    class_names,
    *,
    augment=None,
    shuffle=True,
    seed=0,
    repeat=True,
    deterministic=True,
    stats: PipelineStats | None = None,
):
    """A `tf.data.Dataset` of training batches (dicts keyed by `INPUT_NAMES`).

    Batches hold `config.images_per_batch` examples, with static shapes in "square" mode. Each epoch
    visits every record once, in an order seeded by (seed, epoch); every example draws its
    randomness from (seed, epoch, position), so the same seed gives the same batches, whatever the
    thread scheduling, when `deterministic` is True (with False, batches may be assembled out of
    order for speed).

    Args:
        records: list of `ImageRecord`.
        config: `MrcnnConfig`.
        class_names: foreground class names; class id = index + 1.
        augment: optional augmentation hook (see `load_training_example`).
        shuffle: reshuffle the records every epoch.
        seed: seed of the order and of every example's randomness.
        repeat: loop over epochs forever (for `fit` with steps_per_epoch); False = one epoch.
        deterministic: keep the output order of the parallel map.
        stats: optional `PipelineStats` to collect drop counts into.

    Returns:
        `tf.data.Dataset`. The last incomplete batch of an epoch is dropped when `repeat` is False
        (a warning says how many images that leaves out); with `repeat`, batches run across
        epoch boundaries.
    """
    import tensorflow as tf

    records = list(records)
    if not records:
        raise ValueError("make_dataset: no records")
    class_ids_by_name = {name: i + 1 for i, name in enumerate(class_names)}
    specs = input_specs(config)
    batch = int(config.images_per_batch)
    n = len(records)
    if not repeat and n % batch:
        log.warning(
            "make_dataset: %d images do not fill batches of %d; the last %d are left out", n, batch, n % batch
        )
    stats = PipelineStats() if stats is None else stats

    def positions():
        epoch = 0
        while True:
            order = epoch_order(n, epoch, shuffle=shuffle, seed=seed)
            for position, index in enumerate(order):
                yield np.int64(index), np.int64(epoch), np.int64(position)
            epoch += 1
            if not repeat:
                return

    def build(index, epoch, position):
        example = load_training_example(
            records[int(index)],
            config,
            class_ids_by_name,
            augment=augment,
            rng=example_rng(seed, int(epoch), int(position)),
            image_index=int(index),
            stats=stats,
        )
        return tuple(example[name] for name in INPUT_NAMES)

    scalar = tf.TensorSpec((), tf.int64)
    dataset = tf.data.Dataset.from_generator(positions, output_signature=(scalar, scalar, scalar))
    tout = [tf.as_dtype(specs[name][0]) for name in INPUT_NAMES]

    def to_inputs(index, epoch, position):
        arrays = tf.numpy_function(build, [index, epoch, position], tout, stateful=False)
        out = {}
        for name, array in zip(INPUT_NAMES, arrays):
            array.set_shape(specs[name][1])
            out[name] = array
        return out

    dataset = dataset.map(to_inputs, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    dataset = dataset.batch(batch, drop_remainder=True)
    if not repeat:  # a known length lets Keras iterate one pass per epoch without "ran out of data" warnings
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(n // batch))
    return dataset.prefetch(tf.data.AUTOTUNE)
