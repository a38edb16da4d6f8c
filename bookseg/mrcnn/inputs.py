"""Training input pipeline: records -> per-image targets -> batched `tf.data.Dataset` of model inputs.

Per image (`load_training_example`, NumPy, matterport `load_image_gt` + `build_rpn_targets`):
load RGB -> rasterise masks -> `build_example`: augmentation (optional, at the photo's own
resolution, before the resize, so the window stays exact) -> resize and pad -> drop instances whose
mask became empty (`resize_ground_truth` up to here) -> subsample to `max_gt_instances` -> boxes from
masks -> mini masks -> RPN targets -> image meta. Another image source (e.g. `bookseg.compat`'s
matterport `Dataset`) loads its own image and masks and calls `build_example`.

Batches (`make_dataset` for records, `dataset_from_examples` for any per-index example function) are
dicts keyed by the model's input names (`INPUT_NAMES`, which `MaskRCNN` takes):
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


def resize_ground_truth(
    image,
    masks,
    class_ids,
    config,
    *,
    augment=None,
    rng=None,
    image_index: int = 0,
    active_class_ids=None,
    stats: PipelineStats | None = None,
    name: str = "image",
):
    """Augment (optionally) and resize one image with its instance masks, and drop emptied instances.

    What matterport's `load_image_gt` returns (with full masks), and the first half of `build_example`.

    Args:
        image: uint8 [h, w, 3] RGB photo at its own resolution.
        masks: bool [h, w, n] instance masks of `image`.
        class_ids: int [n] class ids (negative = crowd).
        config: `MrcnnConfig`.
        augment: optional callable `augment(image, masks, class_ids)` returning an object with
            `.image` uint8 [h', w', 3], `.masks` bool [h', w', n'], `.class_ids` [n'], `.dropped`
            (int). Called with `rng=` (or `seed=`) too if its signature accepts it. Applied before
            the resize, so the window stays exact.
        rng: `np.random.Generator` the augmentation draws from (default: a fresh one).
        image_index: integer id written into the image meta.
        active_class_ids: [num_classes] 1/0 flags for the image meta (default: all ones).
        stats: optional counters updated with what was dropped (`dropped_by_augmentation`,
            `emptied_by_resize`).
        name: where the image comes from, for error messages.

    Returns:
        (image, image_meta, class_ids, boxes, masks): image uint8 [H, W, 3] resized and padded to the
        network's input size (not molded); image_meta float32 [image_meta_size] (the original shape
        is the augmented image's); class_ids int [N]; boxes int32 [N, 4] (y1, x1, y2, x2) pixels of
        `image`, y2/x2 exclusive, tight around the masks; masks bool [H, W, N], none empty.
    """
    counts = {}
    if augment is not None:
        rng = np.random.default_rng() if rng is None else rng
        result = _call_augment(augment, image, masks, class_ids, rng)
        image = np.asarray(result.image)
        masks = np.asarray(result.masks, bool).reshape(image.shape[0], image.shape[1], -1)
        class_ids = np.asarray(result.class_ids, np.int32).reshape(-1)
        counts["dropped_by_augmentation"] = int(getattr(result, "dropped", 0) or 0)
        if masks.shape[-1] != len(class_ids):
            raise ValueError(
                f"{name}: augmentation returned {masks.shape[-1]} masks but {len(class_ids)} class ids"
            )

    original_shape = image.shape
    image, window, scale, padding = im.resize_image(image, config, training=True)
    masks = im.resize_masks(masks, scale, padding)

    boxes = boxes_from_masks(masks)
    kept = boxes[:, 2] > boxes[:, 0]
    counts["emptied_by_resize"] = int((~kept).sum())
    if not kept.all():
        masks, class_ids, boxes = masks[:, :, kept], class_ids[kept], boxes[kept]

    if active_class_ids is None:
        active_class_ids = np.ones(config.num_classes)
    meta = im.compose_image_meta(image_index, original_shape, image.shape, window, scale, active_class_ids)
    if stats is not None:
        stats.add(**counts)
    return image, meta, class_ids, boxes, masks


def build_example(
    image,
    masks,
    class_ids,
    config,
    *,
    augment=None,
    rng=None,
    image_index: int = 0,
    active_class_ids=None,
    stats: PipelineStats | None = None,
    name: str = "image",
) -> dict:
    """The model inputs of one loaded image (the batch entries without the batch axis).

    `resize_ground_truth` (augmentation, resize, emptied instances dropped), then subsampling to
    `config.max_gt_instances`, padding, mini masks, RPN targets and molding. `rng` is drawn from in
    this order: augmentation, subsampling, RPN negatives; so a per-example generator makes the
    example reproducible.

    Args:
        image: uint8 [h, w, 3] RGB photo at its own resolution.
        masks: bool [h, w, n] instance masks of `image` (n may be 0).
        class_ids: int [n] class ids (negative = crowd).
        config: `MrcnnConfig`.
        augment, image_index, active_class_ids, name: as `resize_ground_truth`.
        rng: `np.random.Generator` for the augmentation, subsampling and RPN negatives.
        stats: optional counters updated with what was built and dropped.

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
    image, meta, class_ids, boxes, masks = resize_ground_truth(
        image,
        masks,
        class_ids,
        config,
        augment=augment,
        rng=rng,
        image_index=image_index,
        active_class_ids=active_class_ids,
        stats=stats,
        name=name,
    )

    max_gt = int(config.max_gt_instances)
    dropped_over_max = 0
    if len(class_ids) > max_gt:
        keep = np.sort(rng.choice(len(class_ids), max_gt, replace=False))
        dropped_over_max = len(class_ids) - max_gt
        masks, class_ids, boxes = masks[:, :, keep], class_ids[keep], boxes[keep]

    n = len(class_ids)
    stats.add(images=1, images_without_instances=not (class_ids > 0).any(), dropped_over_max=dropped_over_max)

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
    return {
        "input_image": im.mold_image(image, config),
        "input_image_meta": meta,
        "input_rpn_match": rpn_match,
        "input_rpn_bbox": rpn_bbox,
        "input_gt_class_ids": gt_class_ids,
        "input_gt_boxes": gt_boxes,
        "input_gt_masks": gt_masks,
    }


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
    """Build the model inputs of one record: load and check its image and masks, then `build_example`.

    Args:
        record: `bookseg.data.records.ImageRecord`.
        config: `MrcnnConfig`.
        class_ids_by_name: class name -> id (index in class_names + 1; 0 is background).
        augment: optional augmentation hook (see `resize_ground_truth`).
        rng: `np.random.Generator` for the augmentation, subsampling and RPN negatives.
        image_index: integer id written into the image meta.
        stats: optional counters updated with what was dropped.

    Returns:
        dict of NumPy arrays keyed by `INPUT_NAMES` (dtypes and shapes as `build_example`). Crowd
        instances get negative class ids; masks empty inside the image are left out (counted as
        `empty_in_annotation` and warned about once).
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

    example = build_example(
        image,
        masks,
        class_ids,
        config,
        augment=augment,
        rng=rng,
        image_index=image_index,
        stats=stats,
        name=record.where(),
    )
    stats.add(empty_in_annotation=int(empty.sum()))
    return example


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


def dataset_from_examples(
    example_fn, n_examples: int, config, *, shuffle=True, seed=0, repeat=True, deterministic=True
):
    """A `tf.data.Dataset` of training batches (dicts keyed by `INPUT_NAMES`) built by `example_fn`.

    Batches hold `config.images_per_batch` examples, with static shapes in "square" mode. Each epoch
    visits every index once, in an order seeded by (seed, epoch); every example draws its
    randomness from `example_rng(seed, epoch, position)`, so the same seed gives the same batches,
    whatever the thread scheduling, when `deterministic` is True (with False, batches may be
    assembled out of order for speed).

    Args:
        example_fn: `example_fn(index, rng)` -> dict of NumPy arrays keyed by `INPUT_NAMES`, with
            the dtypes and per-example shapes of `input_specs(config)` (e.g. `build_example`'s);
            `index` is an int in [0, n_examples), `rng` an `np.random.Generator`. Called from
            `tf.data` worker threads, concurrently.
        n_examples: number of indices (examples per epoch).
        config: `MrcnnConfig`.
        shuffle: reshuffle the indices every epoch.
        seed: seed of the order and of every example's randomness.
        repeat: loop over epochs forever (for `fit` with steps_per_epoch); False = one epoch.
        deterministic: keep the output order of the parallel map.

    Returns:
        `tf.data.Dataset`. The last incomplete batch of an epoch is dropped when `repeat` is False
        (a warning says how many images that leaves out); with `repeat`, batches run across
        epoch boundaries.
    """
    import tensorflow as tf

    specs = input_specs(config)
    batch = int(config.images_per_batch)
    n = int(n_examples)
    if not repeat and n % batch:
        log.warning(
            "make_dataset: %d images do not fill batches of %d; the last %d are left out", n, batch, n % batch
        )

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
        example = example_fn(int(index), example_rng(seed, int(epoch), int(position)))
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
    """A `tf.data.Dataset` of training batches from records (`dataset_from_examples` over
    `load_training_example`; the record index is the image id in the image meta).

    Args:
        records: list of `ImageRecord`.
        config: `MrcnnConfig`.
        class_names: foreground class names; class id = index + 1.
        augment: optional augmentation hook (see `resize_ground_truth`).
        shuffle, seed, repeat, deterministic: as `dataset_from_examples`.
        stats: optional `PipelineStats` to collect drop counts into.

    Returns:
        `tf.data.Dataset` of dicts keyed by `INPUT_NAMES` (see `dataset_from_examples`).
    """
    records = list(records)
    if not records:
        raise ValueError("make_dataset: no records")
    class_ids_by_name = {name: i + 1 for i, name in enumerate(class_names)}
    stats = PipelineStats() if stats is None else stats

    def example(index: int, rng: np.random.Generator) -> dict:
        return load_training_example(
            records[index],
            config,
            class_ids_by_name,
            augment=augment,
            rng=rng,
            image_index=index,
            stats=stats,
        )

    return dataset_from_examples(
        example, len(records), config, shuffle=shuffle, seed=seed, repeat=repeat, deterministic=deterministic
    )
