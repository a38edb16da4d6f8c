"""Ground truth and training batches from a matterport `Dataset`, on bookseg's input pipeline.

matterport's data generator does, per image: `load_image_gt` (load, augment, resize, boxes, mini
masks, image meta) -> `build_rpn_targets` -> `mold_image`. Here `Dataset.load_image` / `load_mask`
feed bookseg's `bookseg.mrcnn.inputs.build_example` (augmentation with `bookseg.data.augment.Augmenter`)
and `dataset_from_examples`, so a model fed from a `Dataset` sees exactly the inputs
`bookseg.mrcnn.inputs.make_dataset` builds from records, in the same dict layout (`INPUT_NAMES`) and
with the same per-example seeding (`example_rng`).

Pixel boxes are (y1, x1, y2, x2) with y2/x2 exclusive, in the frame of the image they come with.
"""

from __future__ import annotations

import numpy as np

from bookseg.compat.augmentation import as_augmenter
from bookseg.compat.config import to_mrcnn_config
from bookseg.mrcnn import images as im
from bookseg.mrcnn.inputs import build_example, dataset_from_examples, resize_ground_truth


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
    image, meta, class_ids, boxes, masks = resize_ground_truth(
        *load_instances(dataset, image_id),
        mrcnn,
        augment=as_augmenter(augmentation),
        rng=np.random.default_rng(),
        image_index=image_id,
        active_class_ids=dataset.active_class_ids(image_id, mrcnn.num_classes),
    )
    if use_mini_mask:
        masks = im.minimize_masks(boxes, masks, mrcnn.mini_mask_shape)
    return image, meta, class_ids, boxes, masks


def make_dataset(dataset, config, *, augmenter=None, no_augmentation_sources=(), shuffle=True, seed=0):
    """An endless `tf.data.Dataset` of training batches (dicts keyed by `INPUT_NAMES`) from a `Dataset`.

    Every epoch visits each image once, in an order seeded by (seed, epoch); each example draws its
    randomness from (seed, epoch, position), so batches do not depend on thread scheduling.
    Batches hold `config.images_per_batch` examples and run across epoch boundaries.

    Args:
        dataset: a prepared `Dataset`.
        config: `MrcnnConfig` (square resize mode for training).
        augmenter: optional `Augmenter`.
        no_augmentation_sources: sources whose images are never augmented.
        shuffle, seed: as `bookseg.mrcnn.inputs.dataset_from_examples`.
    """
    image_ids = [int(i) for i in dataset.image_ids]
    if not image_ids:
        raise ValueError("the dataset has no images: call add_image() and prepare() first")
    no_augmentation_sources = set(no_augmentation_sources or ())

    def example(index: int, rng: np.random.Generator) -> dict:
        image_id = image_ids[index]
        source = dataset.image_info[image_id]["source"]
        return build_example(
            *load_instances(dataset, image_id),
            config,
            augment=None if source in no_augmentation_sources else augmenter,
            rng=rng,
            image_index=image_id,
            active_class_ids=dataset.active_class_ids(image_id, config.num_classes),
            name=f"image {image_id}",
        )

    return dataset_from_examples(example, len(image_ids), config, shuffle=shuffle, seed=seed)
