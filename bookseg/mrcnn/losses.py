"""The five Mask R-CNN losses and the weight-decay term, as TensorFlow functions.

Definitions as matterport's; docs/mrcnn-differences.md lists where bookseg departs.

Each returns a float32 scalar and is 0 (never NaN) when there is nothing to learn from, e.g. an
image without books has no positive anchor or ROI, so its box and mask losses are 0. A mean "over the
batch" divides by the count over the global batch when training on several replicas
(`distribute.global_count`), so it does not depend on how the batch is split.

Differences from matterport, all deliberate (docs/mrcnn-differences.md):

* `mrcnn_class_loss` averages over the sampled ROIs only. matterport also averages over the
  zero-padded rows up to TRAIN_ROIS_PER_IMAGE (as background), which dilutes the loss whenever
  fewer ROIs were sampled; it also took `active_class_ids` from the first image of the batch
  only, here each image uses its own.
* `mrcnn_mask_loss` takes the mask logits and uses the from-logits binary cross-entropy
  (matterport: BCE on sigmoid probabilities clipped to [1e-7, 1 - 1e-7]).
"""

from __future__ import annotations

import tensorflow as tf

from bookseg.mrcnn.distribute import global_count


def smooth_l1(diff):
    """Elementwise smooth-L1 (Huber, beta 1): 0.5 d^2 where |d| < 1, |d| - 0.5 elsewhere."""
    abs_diff = tf.abs(diff)
    return tf.where(abs_diff < 1.0, 0.5 * tf.square(diff), abs_diff - 0.5)


def rpn_class_loss(rpn_match, rpn_class_logits):
    """Cross-entropy of the RPN's 2-way anchor classification.

    Args:
        rpn_match: int32 [B, A] (or [B, A, 1]): 1 positive, -1 negative, 0 neutral (ignored).
        rpn_class_logits: float32 [B, A, 2] (background, foreground) logits.

    Returns:
        Mean cross-entropy over all non-neutral anchors of the batch; 0 if there are none.
    """
    rpn_match = tf.reshape(tf.cast(rpn_match, tf.int32), tf.shape(rpn_class_logits)[:2])
    selected = tf.where(tf.not_equal(rpn_match, 0))
    labels = tf.cast(tf.equal(tf.gather_nd(rpn_match, selected), 1), tf.int32)
    logits = tf.gather_nd(rpn_class_logits, selected)
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    return tf.math.divide_no_nan(tf.reduce_sum(losses), global_count(tf.size(losses)))


def rpn_bbox_loss(target_bbox, rpn_match, rpn_bbox):
    """Smooth-L1 of the RPN deltas of the positive anchors.

    The k-th positive anchor of an image (in anchor order) is paired with row k of that image's
    `target_bbox`, which is how the input pipeline packs them (matterport `batch_pack_graph`).

    Args:
        target_bbox: float32 [B, T, 4] target deltas (divided by rpn_bbox_std_dev), zero padded.
        rpn_match: int32 [B, A] (or [B, A, 1]).
        rpn_bbox: float32 [B, A, 4] predicted deltas.

    Returns:
        Mean smooth-L1 over (positive anchors x 4); 0 if there are none.
    """
    rpn_match = tf.reshape(tf.cast(rpn_match, tf.int32), tf.shape(rpn_bbox)[:2])
    positive = tf.equal(rpn_match, 1)
    rank = tf.cumsum(tf.cast(positive, tf.int32), axis=1) - 1  # index among the image's positives
    selected = tf.where(positive & (rank < tf.shape(target_bbox)[1]))  # [P, 2] (image, anchor)
    predicted = tf.gather_nd(rpn_bbox, selected)
    target_index = tf.stack([selected[:, 0], tf.cast(tf.gather_nd(rank, selected), tf.int64)], axis=1)
    target = tf.gather_nd(tf.cast(target_bbox, tf.float32), target_index)
    losses = smooth_l1(target - predicted)
    return tf.math.divide_no_nan(tf.reduce_sum(losses), global_count(tf.size(losses)))


def mrcnn_class_loss(target_class_ids, class_logits, active_class_ids, roi_valid):
    """Softmax cross-entropy of the ROI classifier.

    Args:
        target_class_ids: int32 [B, R] (0 = background).
        class_logits: float32 [B, R, num_classes].
        active_class_ids: float32/int [B, num_classes], 1 for classes of the image's dataset;
            ROIs predicted as an inactive class are not penalised (matterport multi-dataset rule).
        roi_valid: float32 [B, R], 1 for sampled ROIs, 0 for padding rows.

    Returns:
        Weighted mean over the counted ROIs; 0 if none.
    """
    target_class_ids = tf.cast(target_class_ids, tf.int32)
    predicted = tf.argmax(class_logits, axis=-1, output_type=tf.int32)
    predicted_active = tf.gather(tf.cast(active_class_ids, tf.float32), predicted, batch_dims=1)
    weights = predicted_active * tf.cast(roi_valid, tf.float32)
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=target_class_ids, logits=class_logits)
    return tf.math.divide_no_nan(tf.reduce_sum(losses * weights), global_count(tf.reduce_sum(weights)))


def mrcnn_bbox_loss(target_bbox, target_class_ids, pred_bbox):
    """Smooth-L1 of the class-specific box deltas of positive ROIs (their GT class only).

    Args:
        target_bbox: float32 [B, R, 4] target deltas (divided by bbox_std_dev).
        target_class_ids: int32 [B, R].
        pred_bbox: float32 [B, R, num_classes, 4].

    Returns:
        Mean smooth-L1 over (positive ROIs x 4); 0 if there are none.
    """
    target_class_ids = tf.cast(target_class_ids, tf.int32)
    positive = tf.where(target_class_ids > 0)  # [P, 2]
    positive_classes = tf.cast(tf.gather_nd(target_class_ids, positive), tf.int64)
    predicted = tf.gather_nd(pred_bbox, tf.concat([positive, positive_classes[:, None]], axis=1))
    target = tf.gather_nd(target_bbox, positive)
    losses = smooth_l1(target - predicted)
    return tf.math.divide_no_nan(tf.reduce_sum(losses), global_count(tf.size(losses)))


def mrcnn_mask_loss(target_masks, target_class_ids, pred_mask_logits):
    """Binary cross-entropy of the mask of the GT class, for positive ROIs.

    Args:
        target_masks: float32 [B, R, h, w] in {0, 1}.
        target_class_ids: int32 [B, R].
        pred_mask_logits: float32 [B, R, h, w, num_classes] logits (sigmoid -> probability).

    Returns:
        Mean BCE over (positive ROIs x h x w); 0 if there are none.
    """
    target_class_ids = tf.cast(target_class_ids, tf.int32)
    positive = tf.where(target_class_ids > 0)
    positive_classes = tf.gather_nd(target_class_ids, positive)
    logits = tf.gather_nd(tf.transpose(pred_mask_logits, [0, 1, 4, 2, 3]), positive)  # [P, C, h, w]
    logits = tf.gather(logits, positive_classes, batch_dims=1)  # [P, h, w]
    target = tf.gather_nd(tf.cast(target_masks, tf.float32), positive)
    losses = tf.nn.sigmoid_cross_entropy_with_logits(labels=target, logits=logits)
    return tf.math.divide_no_nan(tf.reduce_sum(losses), global_count(tf.size(losses)))


def weight_decay_loss(variables, weight_decay: float, mode: str):
    """L2 penalty over `variables` (callers pass the trainable weights minus BN gamma/beta).

    * mode "matterport": weight_decay * sum over tensors of mean(w^2). matterport divides Keras'
      l2 (sum of squares) by the tensor size, so this is orders of magnitude weaker than the
      textbook penalty (issue #1727); kept as the default for comparability.
    * mode "l2": weight_decay * sum over tensors of sum(w^2) (standard L2; its gradient is
      2 * weight_decay * w).

    Returns:
        float32 scalar (0 if there are no variables or weight_decay is 0).
    """
    if mode not in ("matterport", "l2"):
        raise ValueError(f"unknown weight_decay_mode {mode!r}: use matterport or l2")
    if not variables or weight_decay == 0:
        return tf.constant(0.0, tf.float32)
    reduce = tf.reduce_mean if mode == "matterport" else tf.reduce_sum
    return weight_decay * tf.add_n([reduce(tf.square(v)) for v in variables])
