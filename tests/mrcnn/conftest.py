"""Fixtures for the Mask R-CNN tests: a tiny config and a NumPy training-batch builder.

`make_batch` builds the exact dict the model consumes (`TRAINING_INPUTS`) from full-size
instance masks, with bookseg's own image and RPN-target helpers, so the model can be tested
without the tf.data pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from bookseg.mrcnn.anchors import pixel_anchors_for
from bookseg.mrcnn.config import MrcnnConfig
from bookseg.mrcnn.images import compose_image_meta, minimize_masks, mold_image
from bookseg.mrcnn.inputs import INPUT_NAMES
from bookseg.mrcnn.rpn_targets import build_rpn_targets


def tiny_config(**changes) -> MrcnnConfig:
    """A genuinely small model on 64 x 64 images (builds in ~1 s, a step in well under a second)."""
    base = {
        "backbone": "tiny",
        "tiny_channels": (8, 16, 32, 64),
        "num_classes": 2,
        "image_min_dim": 64,
        "image_max_dim": 64,
        "rpn_anchor_scales": (8, 16, 32, 64, 128),
        "top_down_pyramid_size": 32,
        "rpn_conv_channels": 32,
        "fpn_classif_fc_layers_size": 64,
        "mask_head_channels": 16,
        "rpn_train_anchors_per_image": 64,
        "pre_nms_limit": 500,
        "post_nms_rois_training": 100,
        "post_nms_rois_inference": 50,
        "train_rois_per_image": 32,
        "max_gt_instances": 8,
        "mini_mask_shape": (28, 28),
        "images_per_batch": 2,
        "detection_max_instances": 10,
        "detection_min_confidence": 0.5,
    }
    base.update(changes)
    return MrcnnConfig(**base)


@pytest.fixture
def tiny_cfg() -> MrcnnConfig:
    return tiny_config()


def rectangle_masks(shape, boxes) -> np.ndarray:
    """bool [H, W, N] masks filling pixel boxes (y1, x1, y2, x2), y2/x2 exclusive."""
    masks = np.zeros((shape[0], shape[1], len(boxes)), bool)
    for i, (y1, x1, y2, x2) in enumerate(boxes):
        masks[y1:y2, x1:x2, i] = True
    return masks


def boxes_of(masks: np.ndarray) -> np.ndarray:
    """int32 [N, 4] tight pixel boxes (y2/x2 exclusive) of bool [H, W, N] masks."""
    boxes = np.zeros((masks.shape[-1], 4), np.int32)
    for i in range(masks.shape[-1]):
        rows = np.flatnonzero(masks[:, :, i].any(axis=1))
        cols = np.flatnonzero(masks[:, :, i].any(axis=0))
        boxes[i] = rows[0], cols[0], rows[-1] + 1, cols[-1] + 1
    return boxes


def make_batch(config: MrcnnConfig, images, masks_list, class_ids_list=None, seed: int = 0) -> dict:
    """Training batch dict from already molded-size images and full-size masks.

    Args:
        config: the model config (square mode; images must be image_max_dim² already).
        images: list of uint8 [H, W, 3].
        masks_list: list of bool [H, W, N_i] (N_i may be 0).
        class_ids_list: list of int [N_i] (default all 1).
        seed: for the RPN anchor subsampling.
    """
    rng = np.random.default_rng(seed)
    height, width = images[0].shape[:2]
    anchors = pixel_anchors_for(config, (height, width))
    max_gt = config.max_gt_instances
    mask_shape = tuple(config.mini_mask_shape) if config.use_mini_mask else (height, width)
    out = {key: [] for key in INPUT_NAMES}
    for i, (image, masks) in enumerate(zip(images, masks_list)):
        n = masks.shape[-1]
        class_ids = (
            np.ones(n, np.int32) if class_ids_list is None else np.asarray(class_ids_list[i], np.int32)
        )
        boxes = boxes_of(masks)
        rpn_match, rpn_bbox = build_rpn_targets(anchors, class_ids, boxes, config, rng=rng)
        gt_ids = np.zeros(max_gt, np.int32)
        gt_boxes = np.zeros((max_gt, 4), np.float32)
        gt_masks = np.zeros((*mask_shape, max_gt), bool)
        gt_ids[:n], gt_boxes[:n] = class_ids, boxes
        if n:
            gt_masks[..., :n] = minimize_masks(boxes, masks, mask_shape) if config.use_mini_mask else masks
        meta = compose_image_meta(
            i, image.shape, image.shape, (0, 0, height, width), 1.0, np.ones(config.num_classes)
        )
        for key, value in zip(
            out, (mold_image(image, config), meta, rpn_match, rpn_bbox, gt_ids, gt_boxes, gt_masks)
        ):
            out[key].append(value)
    return {key: np.stack(values) for key, values in out.items()}


def shelf_scene(shape=(64, 64), boxes=((8, 6, 56, 18), (10, 24, 58, 34), (6, 40, 54, 58)), seed=0):
    """A toy "shelf": coloured upright rectangles ("books") on a dark background.

    Returns:
        image uint8 [H, W, 3], masks bool [H, W, N].
    """
    rng = np.random.default_rng(seed)
    image = np.full((*shape, 3), 30, np.uint8)
    masks = rectangle_masks(shape, boxes)
    for i in range(masks.shape[-1]):
        image[masks[:, :, i]] = rng.integers(90, 255, size=3)
    return image, masks


# ---------------------------------------------------------------------------------- overfit run
@dataclass
class OverfitRun:
    """A tiny model trained to overfit 4 synthetic shelves (96 x 128 photos) and what it saw."""

    model: object
    images: list  # uint8 [96, 128, 3]
    gt_masks: list  # bool [96, 128, N]
    logs: list  # per-epoch logs of train_stages


def _shelf_records(folder, n_images, image_hw):
    """`n_images` synthetic shelves with a few upright books, written as PNG + in-memory records."""
    import cv2

    from bookseg.data.records import ImageRecord, Instance
    from bookseg.data.synthetic import ShelfStyle, render_shelf

    style = ShelfStyle(
        books_per_image=(3, 6),
        empty_rate=0.0,
        rows=(1,),
        stack_rate=0.0,
        object_rate=0.0,
        front_book_rate=0.0,
        tilt_rate=0.0,
    )
    rng = np.random.default_rng(0)
    records, images, gt_masks = [], [], []
    for i in range(n_images):
        shelf = render_shelf(rng, image_hw, style)
        path = folder / f"shelf_{i}.png"
        cv2.imwrite(str(path), shelf.image[:, :, ::-1])
        records.append(
            ImageRecord(
                image_id=path.name,
                path=path,
                width=image_hw[1],
                height=image_hw[0],
                instances=[Instance("book", mask=m, region=f"book {k}") for k, m in enumerate(shelf.masks)],
                group=path.stem,
                source="test",
            )
        )
        images.append(shelf.image)
        gt_masks.append(np.stack(shelf.masks, axis=-1))
    return records, images, gt_masks


@pytest.fixture(scope="session")
def overfit_run(tmp_path_factory) -> OverfitRun:
    """Train once per session (about a minute on 2 cores); shared by the overfit and precision tests."""
    import keras

    from bookseg.mrcnn.inputs import make_dataset
    from bookseg.mrcnn.model import MaskRCNN
    from bookseg.mrcnn.training import OptimizerSpec, Stage, train_stages

    keras.utils.set_random_seed(0)
    config = tiny_config(
        image_min_dim=96,
        image_max_dim=128,
        tiny_channels=(16, 32, 64, 128),
        top_down_pyramid_size=64,
        rpn_conv_channels=64,
        fpn_classif_fc_layers_size=128,
        mask_head_channels=32,
        rpn_anchor_scales=(16, 32, 64, 128, 256),
        rpn_anchor_ratios=(0.25, 0.5, 1.0),
        train_rois_per_image=64,
        post_nms_rois_training=200,
        post_nms_rois_inference=100,
        max_gt_instances=16,
        detection_min_confidence=0.5,
        detection_max_instances=20,
        images_per_batch=2,
    )
    records, images, gt_masks = _shelf_records(tmp_path_factory.mktemp("overfit"), 4, (96, 128))
    data = make_dataset(records, config, ["book"], seed=0)
    model = MaskRCNN(config)
    logs = train_stages(
        model,
        data,
        None,
        [Stage("all", 6, 2e-3)],
        OptimizerSpec(name="adamw", adamw_weight_decay=0.0),
        steps_per_epoch=25,
        validation_steps=None,
        verbose=0,
    )
    return OverfitRun(model, images, gt_masks, logs)


def mask_aps(results, gt_masks, iou_threshold=0.5) -> list[float]:
    """matterport mask AP per image of `detect` results against bool [H, W, N] GT masks (class 1)."""
    from bookseg.evaluation.matterport_ap import compute_ap

    aps = []
    for result, masks in zip(results, gt_masks):
        ap, *_ = compute_ap(
            boxes_of(masks),
            np.ones(masks.shape[-1], int),
            masks,
            result["rois"],
            result["class_ids"],
            result["scores"],
            result["masks"],
            iou_threshold=iou_threshold,
        )
        aps.append(ap)
    return aps
