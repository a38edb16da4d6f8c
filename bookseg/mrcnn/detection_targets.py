"""DetectionTargetLayer (`proposal_targets`): sample ROIs and build the heads' training targets.

matterport semantics, per image:

* zero rows of the proposals (padding) and GT rows with class id 0 (padding) are dropped;
* GT with a negative class id are crowd regions: never targets, and a proposal overlapping any
  crowd box with IoU >= 0.001 is never used as a negative;
* positive: max IoU with a (non-crowd) GT box >= 0.5; negative: max IoU < 0.5;
* at most int(train_rois_per_image * roi_positive_ratio) positives are sampled at random, then
  int(positives / ratio) - positives negatives, so positives stay ~33% of the sampled ROIs;
* deltas = box refinement of each positive ROI to its best GT box, divided by bbox_std_dev;
* mask targets: the GT (mini) mask cropped to the ROI and resized to `mask_shape`, rounded. Unlike
  matterport, the crop samples the mask at the centres of the target's cells (`mask_targets`), the
  convention the mini masks are made with and `detect` pastes masks back with; matterport's
  corner-aligned crop shifts a 56 x 56 mini mask by up to half a mini pixel at the box edges, which
  costs thin, tilted spines about 0.03 of round-trip IoU (bookseg.analysis.mask_targets);
* GT boxes are not added to the proposals.

One deliberate difference: when an image has no positive ROI at all (an image without books,
or early in training) matterport samples no negatives either, so the classifier never sees
that image. Here such an image contributes train_rois_per_image - int(train_rois_per_image *
ratio) negatives (what an image full of positives would get), so book-free photos train the
heads as background too.

All outputs are zero padded to `train_rois_per_image` rows and carry no gradient.
"""

from __future__ import annotations

import keras
import tensorflow as tf

POSITIVE_IOU = 0.5
CROWD_IOU = 0.001
_DETERMINISTIC_SEED = (1234, 5678)


def box_iou(boxes_a, boxes_b):
    """Pairwise IoU of float32 [N, 4] and [M, 4] boxes -> float32 [N, M] (0 where the union is 0)."""
    a = tf.expand_dims(boxes_a, 1)
    b = tf.expand_dims(boxes_b, 0)
    inter_h = tf.maximum(tf.minimum(a[..., 2], b[..., 2]) - tf.maximum(a[..., 0], b[..., 0]), 0.0)
    inter_w = tf.maximum(tf.minimum(a[..., 3], b[..., 3]) - tf.maximum(a[..., 1], b[..., 1]), 0.0)
    inter = inter_h * inter_w
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return tf.math.divide_no_nan(inter, area_a + area_b - inter)


def max_overlap(overlaps):
    """Row maxima of an IoU matrix float32 [N, M] -> float32 [N]; 0 when M is 0 (no GT, no crowd)."""
    return tf.reduce_max(tf.concat([overlaps, tf.zeros([tf.shape(overlaps)[0], 1])], axis=1), axis=1)


def split_crowds(gt_class_ids, gt_boxes, gt_masks):
    """One image's GT rows -> (class_ids int32 [G'], boxes [G', 4], masks [mh, mw, G']) of its objects
    (class > 0), and the crowd boxes (class < 0) float32 [K, 4]; padding rows (class 0) are dropped."""
    object_index = tf.where(gt_class_ids > 0)[:, 0]
    return (
        tf.gather(gt_class_ids, object_index),
        tf.gather(gt_boxes, object_index),
        tf.gather(gt_masks, object_index, axis=2),
        tf.boolean_mask(gt_boxes, gt_class_ids < 0),
    )


def box_refinement(boxes, gt_boxes):
    """Deltas (dy, dx, log dh, log dw) that move float32 [N, 4] `boxes` onto [N, 4] `gt_boxes`."""
    height = boxes[:, 2] - boxes[:, 0]
    width = boxes[:, 3] - boxes[:, 1]
    center_y = boxes[:, 0] + 0.5 * height
    center_x = boxes[:, 1] + 0.5 * width
    gt_height = gt_boxes[:, 2] - gt_boxes[:, 0]
    gt_width = gt_boxes[:, 3] - gt_boxes[:, 1]
    gt_center_y = gt_boxes[:, 0] + 0.5 * gt_height
    gt_center_x = gt_boxes[:, 1] + 0.5 * gt_width
    return tf.stack(
        [
            (gt_center_y - center_y) / height,
            (gt_center_x - center_x) / width,
            tf.math.log(gt_height / height),
            tf.math.log(gt_width / width),
        ],
        axis=1,
    )


def _shuffle(indices, deterministic: bool):
    """Random permutation of a 1-D tensor; a fixed one when `deterministic` (validation)."""
    if deterministic:
        keys = tf.random.stateless_uniform(tf.shape(indices), seed=_DETERMINISTIC_SEED)
        return tf.gather(indices, tf.argsort(keys))
    return tf.random.shuffle(indices)


def mask_targets(masks, crop_boxes, mask_shape):
    """Crop each mask to its ROI and resize to `mask_shape`, sampling at the target cells' centres.

    Args:
        masks: float32 [N, mh, mw, 1] 0/1 masks (mini masks of the GT boxes, or full-image masks).
        crop_boxes: float32 [N, 4] ROIs (y1, x1, y2, x2) in the masks' frame, as fractions of its
            height / width (0 = top / left edge, 1 = bottom / right edge); may reach outside [0, 1].
        mask_shape: (th, tw).

    Returns:
        float32 [N, th, tw] of 0 / 1. Cell (i, j) is the mask's bilinear value at the centre of the
        ROI's cell, in pixel-centre coordinates (pixel k spans [k, k + 1)), rounded; outside the mask 0.
    """
    th, tw = (int(s) for s in mask_shape)
    mh, mw = tf.cast(tf.shape(masks)[1], tf.float32), tf.cast(tf.shape(masks)[2], tf.float32)
    y1, x1, y2, x2 = tf.unstack(crop_boxes, axis=1)

    def centres(start, end, size, cells):
        # crop_and_resize samples pixel start' * (size - 1) + k * (end' - start') * (size - 1) / (cells - 1);
        # the centre of cell k lies at pixel (start + (k + 0.5) * (end - start) / cells) * size - 0.5.
        first = (start * size + 0.5 * (end - start) * size / cells - 0.5) / (size - 1)
        span = (end - start) * size * (cells - 1) / (cells * (size - 1))
        return first, first + span

    cy1, cy2 = centres(y1, y2, mh, th)
    cx1, cx2 = centres(x1, x2, mw, tw)
    boxes = tf.stack([cy1, cx1, cy2, cx2], axis=1)
    crops = tf.image.crop_and_resize(
        masks, boxes, tf.range(tf.shape(masks)[0]), (th, tw), extrapolation_value=0.0
    )
    return tf.round(tf.squeeze(crops, axis=3))


def roi_mask_targets(rois, roi_gt_boxes, roi_masks, config, image_hw=None):
    """Mask targets of ROIs from the (mini) masks of the GT boxes they are assigned to.

    Args:
        rois: float32 [N, 4] normalised ROIs.
        roi_gt_boxes: float32 [N, 4] normalised GT box of each ROI (the mini mask's frame).
        roi_masks: float32 [N, mh, mw, 1] that GT's mini mask (or its full-image mask if not
            `config.use_mini_mask`).
        config: `MrcnnConfig` (use_mini_mask, mask_shape, image_shape).
        image_hw: (H, W) of the molded image, see `detection_targets_one_image`.

    Returns:
        float32 [N, mask_h, mask_w] of 0 / 1.
    """
    # Normalised boxes put pixel y at y / (size - 1) with y2 inclusive; `mask_targets` wants the ROI's
    # pixel edges as fractions of the mask's frame: the GT box for mini masks, the image otherwise.
    if config.use_mini_mask:
        if image_hw is None and config.image_shape[0] is None:
            raise ValueError("detection targets with mini masks need image_hw for a non-square resize mode")
        h, w = (float(s) for s in (image_hw or config.image_shape[:2]))
        frame = tf.unstack(roi_gt_boxes, axis=1)
    else:
        h, w = (tf.cast(tf.shape(roi_masks)[i], tf.float32) for i in (1, 2))
        frame = [0.0, 0.0, 1.0, 1.0]  # the whole image as a normalised box
    y1, x1, y2, x2 = tf.unstack(rois, axis=1)
    fy1, fx1, fy2, fx2 = frame
    frame_h, frame_w = (fy2 - fy1) * (h - 1) + 1, (fx2 - fx1) * (w - 1) + 1  # pixels
    crop_boxes = tf.stack(
        [
            (y1 - fy1) * (h - 1) / frame_h,
            (x1 - fx1) * (w - 1) / frame_w,
            ((y2 - fy1) * (h - 1) + 1) / frame_h,
            ((x2 - fx1) * (w - 1) + 1) / frame_w,
        ],
        axis=1,
    )
    return mask_targets(roi_masks, crop_boxes, config.mask_shape)


def max_positive_rois(config) -> int:
    """Most positive ROIs sampled per image, int(train_rois_per_image * roi_positive_ratio); they
    fill the leading slots, so the mask head needs only these (see `MaskRCNN.training_outputs`)."""
    return int(config.train_rois_per_image * config.roi_positive_ratio)


def detection_targets_one_image(
    proposals, gt_class_ids, gt_boxes, gt_masks, config, deterministic=False, image_hw=None
):
    """Targets of one image; see the module docstring for the rules.

    Args:
        proposals: float32 [P, 4] normalised proposals, zero padded.
        gt_class_ids: int32 [G] (0 = padding, < 0 = crowd).
        gt_boxes: float32 [G, 4] normalised GT boxes.
        gt_masks: float32 [mh, mw, G] mini masks (or [H, W, G] full masks if not use_mini_mask).
        config: `MrcnnConfig`.
        deterministic: fixed sampling instead of random (validation losses comparable across runs).
        image_hw: (H, W) of the molded image the boxes are normalised to (default: the square
            `config.image_shape`); it converts the normalised boxes to pixel edges for the mini masks.

    Returns:
        rois float32 [T, 4], class_ids int32 [T], deltas float32 [T, 4], masks float32
        [T, mask_h, mask_w], valid float32 [T] (1 for sampled ROIs, 0 for padding), with
        T = config.train_rois_per_image; positives first, then negatives, then padding.
    """
    total = int(config.train_rois_per_image)
    ratio = float(config.roi_positive_ratio)
    max_positives = max_positive_rois(config)

    proposals = tf.boolean_mask(proposals, tf.reduce_sum(tf.abs(proposals), axis=1) > 0)
    gt_class_ids, gt_boxes, gt_masks, crowd_boxes = split_crowds(gt_class_ids, gt_boxes, gt_masks)
    overlaps = box_iou(proposals, gt_boxes)  # [P, G']
    roi_iou_max = max_overlap(overlaps)
    crowd_iou_max = max_overlap(box_iou(proposals, crowd_boxes))

    positive_index = tf.where(roi_iou_max >= POSITIVE_IOU)[:, 0]
    negative_index = tf.where((roi_iou_max < POSITIVE_IOU) & (crowd_iou_max < CROWD_IOU))[:, 0]

    positive_index = _shuffle(positive_index, deterministic)[:max_positives]
    n_positive = tf.shape(positive_index)[0]
    # matterport's arithmetic (float32 (1 / ratio) * positives) so 66 positives give 134 negatives.
    negatives_for_ratio = tf.cast((1.0 / ratio) * tf.cast(n_positive, tf.float32), tf.int32) - n_positive
    negatives_wanted = tf.where(n_positive > 0, negatives_for_ratio, total - max_positives)
    negatives_wanted = tf.minimum(negatives_wanted, total - n_positive)
    negative_index = _shuffle(negative_index, deterministic)[:negatives_wanted]
    n_negative = tf.shape(negative_index)[0]

    positive_rois = tf.gather(proposals, positive_index)
    negative_rois = tf.gather(proposals, negative_index)
    positive_overlaps = tf.gather(overlaps, positive_index)
    # argmax over an empty axis is an error; with no GT there are no positives, so pad a column.
    assignment = tf.argmax(
        tf.concat([positive_overlaps, tf.fill([n_positive, 1], -1.0)], axis=1), axis=1, output_type=tf.int32
    )
    roi_gt_boxes = tf.gather(gt_boxes, assignment)
    roi_gt_class_ids = tf.gather(gt_class_ids, assignment)
    deltas = box_refinement(positive_rois, roi_gt_boxes) / tf.constant(config.bbox_std_dev, tf.float32)

    instance_masks = tf.expand_dims(tf.transpose(gt_masks, [2, 0, 1]), -1)  # [G', mh, mw, 1]
    masks = roi_mask_targets(
        positive_rois, roi_gt_boxes, tf.gather(instance_masks, assignment), config, image_hw
    )

    n_rois = n_positive + n_negative
    padding = total - n_rois
    rois = tf.pad(tf.concat([positive_rois, negative_rois], axis=0), [[0, padding], [0, 0]])
    class_ids = tf.pad(roi_gt_class_ids, [[0, n_negative + padding]])
    deltas = tf.pad(deltas, [[0, n_negative + padding], [0, 0]])
    masks = tf.pad(masks, [[0, n_negative + padding], [0, 0], [0, 0]])
    valid = tf.pad(tf.ones([n_rois], tf.float32), [[0, padding]])
    mask_h, mask_w = (int(s) for s in config.mask_shape)
    return (
        tf.ensure_shape(rois, [total, 4]),
        tf.ensure_shape(class_ids, [total]),
        tf.ensure_shape(deltas, [total, 4]),
        tf.ensure_shape(masks, [total, mask_h, mask_w]),
        tf.ensure_shape(valid, [total]),
    )


def detection_targets(
    proposals, gt_class_ids, gt_boxes, gt_masks, config, deterministic=False, image_hw=None
):
    """Batched `detection_targets_one_image` (tf.map_fn over the images).

    Args:
        proposals: float32 [B, P, 4]; gt_class_ids int32 [B, G]; gt_boxes float32 [B, G, 4]
            (normalised); gt_masks float32 [B, mh, mw, G]; image_hw: see `detection_targets_one_image`.

    Returns:
        rois [B, T, 4], class_ids int32 [B, T], deltas [B, T, 4], masks [B, T, mask_h, mask_w],
        valid [B, T]; all without gradient.
    """
    total = int(config.train_rois_per_image)
    mask_h, mask_w = (int(s) for s in config.mask_shape)
    signature = (
        tf.TensorSpec([total, 4], tf.float32),
        tf.TensorSpec([total], tf.int32),
        tf.TensorSpec([total, 4], tf.float32),
        tf.TensorSpec([total, mask_h, mask_w], tf.float32),
        tf.TensorSpec([total], tf.float32),
    )
    outputs = tf.map_fn(
        lambda args: detection_targets_one_image(
            *args, config=config, deterministic=deterministic, image_hw=image_hw
        ),
        (
            tf.cast(proposals, tf.float32),
            tf.cast(gt_class_ids, tf.int32),
            tf.cast(gt_boxes, tf.float32),
            tf.cast(gt_masks, tf.float32),
        ),
        fn_output_signature=signature,
    )
    return tuple(tf.stop_gradient(t) for t in outputs)


class DetectionTargetLayer(keras.layers.Layer):
    """matterport's `DetectionTargetLayer` (name "proposal_targets"); no weights.

    Called as `layer(proposals, gt_class_ids, gt_boxes, gt_masks, deterministic=False, image_hw=None)`,
    see `detection_targets`.
    """

    def __init__(self, config, name: str = "proposal_targets", **kwargs):
        super().__init__(name=name, **kwargs)
        self.mrcnn_config = config
        self.supports_jit = False  # boolean masks and data-dependent sampling
        self.built = True

    def call(self, proposals, gt_class_ids, gt_boxes, gt_masks, deterministic: bool = False, image_hw=None):
        return detection_targets(
            proposals,
            gt_class_ids,
            gt_boxes,
            gt_masks,
            self.mrcnn_config,
            deterministic=deterministic,
            image_hw=image_hw,
        )
