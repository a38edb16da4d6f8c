"""Ground truth and training batches from a matterport `Dataset`, on bookseg's image and target code.

matterport's data generator does, per image: `load_image_gt` (load, augment, resize, boxes, mini
masks, image meta) -> `build_rpn_targets` -> `mold_image`. This module does the same with bookseg's
functions (`bookseg.mrcnn.images`, `rpn_targets`, `bookseg.data.augment.Augmenter`), so a model fed
from a `Dataset` sees exactly the inputs `bookseg.mrcnn.inputs.make_dataset` builds from records, in
the same dict layout (`INPUT_NAMES`) and with the same per-example seeding (`example_rng`).

Pixel boxes are (y1, x1, y2, x2) with y2/x2 exclusive, in the frame of the image they come with.
"""

from __future__ import annotations

import threading

import numpy as np

from bookseg.compat.augmentation import as_augmenter
from bookseg.compat.config import to_mrcnn_config
from bookseg.data.records import boxes_from_masks
from bookseg.mrcnn import images as im
from bookseg.mrcnn.anchors import pixel_anchors_for
from bookseg.mrcnn.inputs import INPUT_NAMES, epoch_order, example_rng, input_specs
from bookseg.mrcnn.rpn_targets import build_rpn_targets


def load_instances(dataset, image_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`dataset.load_image` + `load_mask`, checked: uint8 [H, W, 3], bool [H, W, N], int32 [N]."""
    image = np.asarray(dataset.load_image(image_id))
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"image {image_id} ({dataset.image_reference(image_id)!r}): load_image returned "
            f"{image.dtype} {image.shape}, expected uint8 [H, W, 3]"
        )
    masks, class_ids = dataset.load_mask(image_id)
    masks = np.asarray(masks)
    class_ids = np.asarray(class_ids, np.int32).reshape(-1)
    if masks.size == 0 and len(class_ids) == 0:
        masks = np.zeros(image.shape[:2] + (0,), bool)
    if masks.ndim != 3 or masks.shape[:2] != image.shape[:2] or masks.shape[2] != len(class_ids):
        raise ValueError(
            f"image {image_id} ({dataset.image_reference(image_id)!r}): load_mask returned masks "
            f"{masks.shape} and {len(class_ids)} class ids for a {image.shape[:2]} image; expected "
            "[H, W, N] masks and N class ids"
        )
    return image, masks.astype(bool, copy=False), class_ids


def ground_truth(dataset, config, image_id: int, augmenter=None, rng=None):
    """One image resized for the network, with its instances (matterport `load_image_gt` on full masks).

    Args:
        dataset: a prepared `Dataset`.
        config: `MrcnnConfig`.
        image_id: internal image id.
        augmenter: optional `bookseg.data.augment.Augmenter`, applied at the photo's resolution.
        rng: `np.random.Generator` the augmentation draws from.

    Returns:
        image uint8 [H, W, 3] resized and padded; image_meta float32 [image_meta_size]; class_ids
        int32 [N]; boxes int32 [N, 4] molded pixels; masks bool [H, W, N]. Instances whose mask is
        empty after augmentation and resizing are left out.
    """
    image, masks, class_ids = load_instances(dataset, image_id)
    if augmenter is not None:
        result = augmenter(image, masks, class_ids, rng=rng)
        image, masks, class_ids = result.image, result.masks, result.class_ids
    original_shape = image.shape
    image, window, scale, padding = im.resize_image(image, config)
    masks = im.resize_masks(masks, scale, padding)
    kept = masks.any(axis=(0, 1))
    masks, class_ids = masks[:, :, kept], class_ids[kept]
    active = dataset.active_class_ids(image_id, config.num_classes)
    meta = im.compose_image_meta(image_id, original_shape, image.shape, window, scale, active)
    return image, meta, class_ids, boxes_from_masks(masks), masks


def load_image_gt(dataset, config, image_id, augment=False, augmentation=None, use_mini_mask=False):
    """matterport's `modellib.load_image_gt`: the resized image and its ground truth.

    Args:
        dataset: a prepared `Dataset`.
        config: `Config` (or `MrcnnConfig`).
        image_id: internal image id.
        augment: matterport's old flag (random horizontal flip); an augmenter given here is used as
            `augmentation` (the TF2 ports moved `augmentation` into this position).
        augmentation: `iaa` augmenter, albumentations transform or list of them; None = none.
        use_mini_mask: return masks cropped to their boxes and resized to MINI_MASK_SHAPE.

    Returns:
        image uint8 [H, W, 3]; image_meta float32 [IMAGE_META_SIZE]; class_ids int32 [N]; bbox int32
        [N, 4] (y1, x1, y2, x2), y2/x2 exclusive; mask bool [H, W, N] (or [mh, mw, N] mini masks).
    """
    if augment is not False and augment is not True and augmentation is None:
        augment, augmentation = False, augment
    if augment is True and augmentation is None:
        from bookseg.compat import iaa

        augmentation = iaa.Fliplr(0.5)
    mrcnn = to_mrcnn_config(config)
    image, meta, class_ids, boxes, masks = ground_truth(
        dataset, mrcnn, image_id, as_augmenter(augmentation), np.random.default_rng()
    )
    if use_mini_mask:
        masks = im.minimize_masks(boxes, masks, mrcnn.mini_mask_shape)
    return image, meta, class_ids, boxes, masks


class ExampleBuilder:
    """Builds the model inputs of one image (the batch entries without the batch axis).

    Args:
        dataset: a prepared `Dataset`.
        config: `MrcnnConfig` (square resize mode for training).
        augmenter: optional `Augmenter`.
        no_augmentation_sources: sources whose images are never augmented.
    """

    def __init__(self, dataset, config, augmenter=None, no_augmentation_sources=()):
        self.dataset, self.config, self.augmenter = dataset, config, augmenter
        self.no_augmentation_sources = set(no_augmentation_sources or ())
        self._anchors: dict = {}
        self._lock = threading.Lock()

    def anchors(self, shape) -> np.ndarray:
        key = (int(shape[0]), int(shape[1]))
        with self._lock:
            if key not in self._anchors:
                self._anchors[key] = pixel_anchors_for(self.config, key)
            return self._anchors[key]

    def __call__(self, image_id: int, rng: np.random.Generator) -> dict:
        """Model inputs of `image_id`, keyed by `INPUT_NAMES` (shapes as `inputs.input_specs`)."""
        config = self.config
        source = self.dataset.image_info[image_id]["source"]
        augmenter = None if source in self.no_augmentation_sources else self.augmenter
        image, meta, class_ids, boxes, masks = ground_truth(self.dataset, config, image_id, augmenter, rng)
        max_gt = int(config.max_gt_instances)
        if len(class_ids) > max_gt:
            keep = np.sort(rng.choice(len(class_ids), max_gt, replace=False))
            class_ids, boxes, masks = class_ids[keep], boxes[keep], masks[:, :, keep]
        n = len(class_ids)
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
        rpn_match, rpn_bbox = build_rpn_targets(self.anchors(image.shape), class_ids, boxes, config, rng)
        return {
            "input_image": im.mold_image(image, config),
            "input_image_meta": meta,
            "input_rpn_match": rpn_match,
            "input_rpn_bbox": rpn_bbox,
            "input_gt_class_ids": gt_class_ids,
            "input_gt_boxes": gt_boxes,
            "input_gt_masks": gt_masks,
        }


def make_dataset(dataset, config, *, augmenter=None, no_augmentation_sources=(), shuffle=True, seed=0):
    """An endless `tf.data.Dataset` of training batches (dicts keyed by `INPUT_NAMES`) from a `Dataset`.

    Every epoch visits each image once, in an order seeded by (seed, epoch); each example draws its
    randomness from (seed, epoch, position), so batches do not depend on thread scheduling.
    Batches hold `config.images_per_batch` examples and run across epoch boundaries.
    """
    import tensorflow as tf

    image_ids = [int(i) for i in dataset.image_ids]
    if not image_ids:
        raise ValueError("the dataset has no images: call add_image() and prepare() first")
    build_example = ExampleBuilder(dataset, config, augmenter, no_augmentation_sources)
    specs = input_specs(config)

    def positions():
        epoch = 0
        while True:
            for position, index in enumerate(epoch_order(len(image_ids), epoch, shuffle=shuffle, seed=seed)):
                yield np.int64(index), np.int64(epoch), np.int64(position)
            epoch += 1

    def build(index, epoch, position):
        example = build_example(image_ids[int(index)], example_rng(seed, int(epoch), int(position)))
        return tuple(example[name] for name in INPUT_NAMES)

    def to_inputs(index, epoch, position):
        tout = [tf.as_dtype(specs[name][0]) for name in INPUT_NAMES]
        arrays = tf.numpy_function(build, [index, epoch, position], tout, stateful=False)
        out = {}
        for name, array in zip(INPUT_NAMES, arrays):
            array.set_shape(specs[name][1])
            out[name] = array
        return out

    scalar = tf.TensorSpec((), tf.int64)
    data = tf.data.Dataset.from_generator(positions, output_signature=(scalar, scalar, scalar))
    data = data.map(to_inputs, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return data.batch(int(config.images_per_batch), drop_remainder=True).prefetch(tf.data.AUTOTUNE)
