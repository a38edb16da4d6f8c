"""Cascade box refinement: extra box heads, each refining the previous head's boxes.

Cai and Vasconcelos ("Cascade R-CNN", CVPR 2018) train a sequence of box heads, each on the boxes the
previous one refined and with a higher IoU threshold for positives, so each stage learns to correct
boxes that are already close. `MrcnnConfig.cascade_iou_thresholds` holds one threshold per extra
stage: () is matterport's single box head, (0.6,) adds one stage, (0.6, 0.7) two.

Training (see `MaskRCNN.training_outputs`): stage k's ROIs are stage k - 1's ROIs moved by stage k - 1's
deltas, without gradient (`refine_rois`), and relabelled at stage k's threshold (`stage_targets`).
There is no new sampling: the rows, and which of them count (`roi_valid`), stay those the first head
sampled. The mask head trains on the last stage's boxes of the leading `max_positive_rois` rows; a row's
mask counts when its box overlaps its GT box with IoU >= 0.5, the mask head's threshold with one stage.

Inference: each stage refines the previous stage's boxes; a box's class scores are the mean of the
stages' softmax scores, its box the last stage's refinement, and the mask head runs on those boxes.

Boxes are (y1, x1, y2, x2) normalised (`bookseg.mrcnn.boxes`); zero rows are padding throughout.
"""

from __future__ import annotations

import math

import tensorflow as tf

from bookseg.mrcnn.detection_targets import (
    CROWD_IOU,
    POSITIVE_IOU,
    box_iou,
    box_refinement,
    max_overlap,
    max_positive_rois,
    roi_mask_targets,
    split_crowds,
)
from bookseg.mrcnn.proposals import apply_box_deltas, clip_boxes

# Largest log-scale delta applied between stages (a box grows at most 1000 / 16 times), as torchvision
# clamps: an untrained head's deltas must not overflow exp() into infinite boxes.
_MAX_LOG_SCALE = math.log(1000.0 / 16)


def refinement_class_ids(class_logits, target_class_ids=None):
    """The class whose deltas refine each ROI: int32 [B, R].

    Args:
        class_logits: float32 [B, R, C] of the stage that predicted the deltas.
        target_class_ids: int32 [B, R] (training): a positive ROI is refined with its GT class.

    The other ROIs (all of them at inference) take their best foreground class, so background ROIs are
    refined too and may become books at the next stage.
    """
    best = tf.argmax(class_logits[..., 1:], axis=-1, output_type=tf.int32) + 1
    if target_class_ids is None:
        return best
    target_class_ids = tf.cast(target_class_ids, tf.int32)
    return tf.where(target_class_ids > 0, target_class_ids, best)


def refine_rois(rois, bbox_deltas, class_ids, bbox_std_dev):
    """Move each ROI by its class's deltas and clip it to the image; no gradient flows.

    Args:
        rois: float32 [B, R, 4] normalised, zero rows are padding.
        bbox_deltas: float32 [B, R, C, 4] head deltas, divided by `bbox_std_dev`.
        class_ids: int32 [B, R] (see `refinement_class_ids`).
        bbox_std_dev: 4 floats.

    Returns:
        float32 [B, R, 4] refined ROIs, clipped to [0, 1]; padding rows stay zero.
    """
    deltas = tf.gather(bbox_deltas, class_ids, batch_dims=2) * tf.constant(bbox_std_dev, tf.float32)
    deltas = tf.concat([deltas[..., :2], tf.minimum(deltas[..., 2:], _MAX_LOG_SCALE)], axis=-1)
    boxes = clip_boxes(apply_box_deltas(rois, deltas), [0.0, 0.0, 1.0, 1.0])
    valid = tf.reduce_sum(tf.abs(rois), axis=-1, keepdims=True) > 0
    return tf.stop_gradient(tf.where(valid, boxes, tf.zeros_like(boxes)))


def stage_targets_one_image(
    rois, roi_valid, gt_class_ids, gt_boxes, gt_masks, config, positive_iou, with_masks, image_hw=None
):
    """Targets of one image's refined ROIs at one stage's IoU threshold (no sampling).

    Args:
        rois: float32 [T, 4] refined ROIs (zero rows are padding).
        roi_valid: float32 [T], 1 for the rows the first head sampled.
        gt_class_ids: int32 [G] (0 = padding, < 0 = crowd); gt_boxes float32 [G, 4] normalised;
        gt_masks: float32 [mh, mw, G] mini masks (full masks without mini masks).
        config: `MrcnnConfig`.
        positive_iou: a row is a positive of its GT's class when its IoU with that GT box >= this.
        with_masks: also return the mask targets of the first M = `max_positive_rois(config)` rows.
        image_hw: (H, W) of the molded image (see `detection_targets_one_image`).

    Returns:
        class_ids int32 [T], deltas float32 [T, 4] (0 for non-positives), valid float32 [T] (roi_valid,
        minus non-positive rows that overlap a crowd region); with masks also mask_class_ids int32 [M]
        (class where IoU >= 0.5, else 0) and masks float32 [M, mask_h, mask_w].
    """
    gt_class_ids, gt_boxes, gt_masks, crowd_boxes = split_crowds(gt_class_ids, gt_boxes, gt_masks)
    # A zero box and an empty mask at the end give every row an assignment, also without GT.
    gt_boxes = tf.concat([gt_boxes, tf.zeros([1, 4])], axis=0)
    gt_class_ids = tf.concat([gt_class_ids, [0]], axis=0)

    overlaps = box_iou(rois, gt_boxes[:-1])  # [T, G']
    overlaps = tf.concat([overlaps, tf.fill([tf.shape(rois)[0], 1], -1.0)], axis=1)
    assignment = tf.argmax(overlaps, axis=1, output_type=tf.int32)
    best_iou = tf.reduce_max(overlaps, axis=1)

    valid_row = roi_valid > 0
    positive = valid_row & (best_iou >= positive_iou)
    roi_gt_boxes = tf.gather(gt_boxes, assignment)
    class_ids = tf.where(positive, tf.gather(gt_class_ids, assignment), 0)
    deltas = box_refinement(rois, roi_gt_boxes) / tf.constant(config.bbox_std_dev, tf.float32)
    deltas = tf.where(positive[:, None], deltas, tf.zeros_like(deltas))
    not_crowd = max_overlap(box_iou(rois, crowd_boxes)) < CROWD_IOU
    valid = tf.cast(valid_row & (positive | not_crowd), tf.float32)
    if not with_masks:
        return class_ids, deltas, valid

    rows = max_positive_rois(config)
    mask_positive = valid_row[:rows] & (best_iou[:rows] >= POSITIVE_IOU)
    mask_class_ids = tf.where(mask_positive, tf.gather(gt_class_ids, assignment[:rows]), 0)
    instance_masks = tf.expand_dims(tf.transpose(gt_masks, [2, 0, 1]), -1)  # [G', mh, mw, 1]
    empty_mask = tf.zeros(tf.concat([[1], tf.shape(instance_masks)[1:]], axis=0))
    instance_masks = tf.concat([instance_masks, empty_mask], axis=0)
    masks = roi_mask_targets(
        rois[:rows], roi_gt_boxes[:rows], tf.gather(instance_masks, assignment[:rows]), config, image_hw
    )
    return class_ids, deltas, valid, mask_class_ids, masks


def stage_targets(
    rois, roi_valid, gt_class_ids, gt_boxes, gt_masks, config, positive_iou, with_masks, image_hw=None
):
    """Batched `stage_targets_one_image` (tf.map_fn over the images); all outputs without gradient.

    Args:
        rois: float32 [B, T, 4]; roi_valid float32 [B, T]; gt_class_ids int32 [B, G];
        gt_boxes float32 [B, G, 4]; gt_masks float32 [B, mh, mw, G]; the rest as the one-image form.

    Returns:
        class_ids [B, T], deltas [B, T, 4], valid [B, T]; with masks also mask_class_ids [B, M] and
        masks [B, M, mask_h, mask_w].
    """
    total = rois.shape[1]
    signature = [
        tf.TensorSpec([total], tf.int32),
        tf.TensorSpec([total, 4], tf.float32),
        tf.TensorSpec([total], tf.float32),
    ]
    if with_masks:
        rows = max_positive_rois(config)
        signature += [
            tf.TensorSpec([rows], tf.int32),
            tf.TensorSpec([rows, *(int(s) for s in config.mask_shape)], tf.float32),
        ]
    outputs = tf.map_fn(
        lambda args: stage_targets_one_image(
            *args,
            config=config,
            positive_iou=positive_iou,
            with_masks=with_masks,
            image_hw=image_hw,
        ),
        (
            tf.cast(rois, tf.float32),
            tf.cast(roi_valid, tf.float32),
            tf.cast(gt_class_ids, tf.int32),
            tf.cast(gt_boxes, tf.float32),
            tf.cast(gt_masks, tf.float32),
        ),
        fn_output_signature=tuple(signature),
    )
    return tuple(tf.stop_gradient(t) for t in outputs)
