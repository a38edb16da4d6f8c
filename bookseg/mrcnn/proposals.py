"""Proposal layer (`ROI`): RPN scores and deltas -> NMS-filtered region proposals, batched.

Also holds the TensorFlow box ops shared by the graph layers. Boxes are (y1, x1, y2, x2) in
matterport's normalised coordinates (see `bookseg.mrcnn.boxes`) unless a docstring says otherwise.
"""

from __future__ import annotations

import keras
import tensorflow as tf


def apply_box_deltas(boxes, deltas):
    """Move boxes by (dy, dx, log dh, log dw) deltas (already multiplied by the std dev).

    Args:
        boxes: float32 [..., 4] (y1, x1, y2, x2).
        deltas: float32 [..., 4], broadcastable against `boxes`.

    Returns:
        float32 [..., 4] refined boxes (y1, x1, y2, x2).
    """
    height = boxes[..., 2] - boxes[..., 0]
    width = boxes[..., 3] - boxes[..., 1]
    center_y = boxes[..., 0] + 0.5 * height + deltas[..., 0] * height
    center_x = boxes[..., 1] + 0.5 * width + deltas[..., 1] * width
    height = height * tf.exp(deltas[..., 2])
    width = width * tf.exp(deltas[..., 3])
    return tf.stack(
        [center_y - 0.5 * height, center_x - 0.5 * width, center_y + 0.5 * height, center_x + 0.5 * width],
        axis=-1,
    )


def clip_boxes(boxes, window):
    """Clip boxes to a window.

    Args:
        boxes: float32 [..., 4] (y1, x1, y2, x2).
        window: float32 [4] or a tensor broadcastable to boxes' leading axes plus [4]
            (e.g. [B, 1, 4] for per-image windows of [B, N, 4] boxes), (y1, x1, y2, x2).

    Returns:
        float32 [..., 4] clipped boxes.
    """
    wy1, wx1, wy2, wx2 = tf.unstack(tf.convert_to_tensor(window, tf.float32), axis=-1)
    y1, x1, y2, x2 = tf.unstack(boxes, axis=-1)
    y1 = tf.minimum(tf.maximum(y1, wy1), wy2)
    x1 = tf.minimum(tf.maximum(x1, wx1), wx2)
    y2 = tf.minimum(tf.maximum(y2, wy1), wy2)
    x2 = tf.minimum(tf.maximum(x2, wx1), wx2)
    return tf.stack([y1, x1, y2, x2], axis=-1)


def norm_boxes_graph(boxes, image_hw):
    """Pixel boxes -> normalised (matterport `norm_boxes_graph`).

    Args:
        boxes: float32 [..., 4] (y1, x1, y2, x2) pixels, y2/x2 exclusive.
        image_hw: (height, width) of the molded image, ints or a float/int tensor [2].

    Returns:
        float32 [..., 4]: (boxes - [0, 0, 1, 1]) / [h - 1, w - 1, h - 1, w - 1].
    """
    hw = tf.cast(tf.convert_to_tensor(image_hw), tf.float32)
    scale = tf.concat([hw, hw], axis=0) - 1.0
    shift = tf.constant([0.0, 0.0, 1.0, 1.0])
    return (tf.cast(boxes, tf.float32) - shift) / scale


def propose(
    rpn_probs,
    rpn_bbox,
    anchors,
    *,
    proposal_count: int,
    nms_threshold: float,
    pre_nms_limit: int,
    rpn_bbox_std_dev,
):
    """Select proposals from the RPN outputs of a batch (matterport `ProposalLayer.call`).

    Per image: take the `pre_nms_limit` anchors with the highest foreground score over all
    levels jointly, apply their deltas, clip to [0, 1], run NMS at `nms_threshold` and keep at
    most `proposal_count` boxes, highest score first, zero padded.

    Args:
        rpn_probs: float32 [B, A, 2] (background, foreground) probabilities.
        rpn_bbox: float32 [B, A, 4] deltas divided by `rpn_bbox_std_dev`.
        anchors: float32 [A, 4] (shared by the batch) or [B, A, 4], normalised.
        proposal_count: output rows per image.
        nms_threshold: IoU above which the lower-scored box is suppressed.
        pre_nms_limit: top-k before NMS.
        rpn_bbox_std_dev: 4 floats the deltas are multiplied by.

    Returns:
        float32 [B, proposal_count, 4] proposals (y1, x1, y2, x2), normalised, zero padded.
    """
    scores = rpn_probs[:, :, 1]
    deltas = rpn_bbox * tf.reshape(tf.constant(rpn_bbox_std_dev, tf.float32), [1, 1, 4])
    k = tf.minimum(pre_nms_limit, tf.shape(scores)[1])
    scores, indices = tf.math.top_k(scores, k=k, sorted=True)
    deltas = tf.gather(deltas, indices, batch_dims=1)
    if anchors.shape.rank == 2:
        top_anchors = tf.gather(anchors, indices)
    else:
        top_anchors = tf.gather(anchors, indices, batch_dims=1)
    boxes = apply_box_deltas(top_anchors, deltas)
    boxes = tf.clip_by_value(boxes, 0.0, 1.0)

    def nms_one_image(args):
        image_boxes, image_scores = args
        keep = tf.image.non_max_suppression(image_boxes, image_scores, proposal_count, nms_threshold)
        kept = tf.gather(image_boxes, keep)
        return tf.pad(kept, [[0, proposal_count - tf.shape(kept)[0]], [0, 0]])

    return tf.map_fn(
        nms_one_image, (boxes, scores), fn_output_signature=tf.TensorSpec([proposal_count, 4], tf.float32)
    )


class ProposalLayer(keras.layers.Layer):
    """matterport's `ProposalLayer` (name "ROI"); no weights. See `propose`.

    Called as `layer(rpn_probs, rpn_bbox, anchors, proposal_count=N)`: the training graph asks for
    `config.post_nms_rois_training` proposals, inference for `config.post_nms_rois_inference`.
    """

    def __init__(self, config, name: str = "ROI", **kwargs):
        super().__init__(name=name, **kwargs)
        self.nms_threshold = float(config.rpn_nms_threshold)
        self.pre_nms_limit = int(config.pre_nms_limit)
        self.rpn_bbox_std_dev = tuple(float(v) for v in config.rpn_bbox_std_dev)
        self.supports_jit = False  # NMS has a data-dependent output size
        self.built = True

    def call(self, rpn_probs, rpn_bbox, anchors, proposal_count: int):
        return propose(
            rpn_probs,
            rpn_bbox,
            anchors,
            proposal_count=proposal_count,
            nms_threshold=self.nms_threshold,
            pre_nms_limit=self.pre_nms_limit,
            rpn_bbox_std_dev=self.rpn_bbox_std_dev,
        )
