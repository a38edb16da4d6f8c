"""DetectionLayer (`mrcnn_detection`): classified, refined ROIs -> final detections, batched.

matterport semantics: each ROI takes its argmax class and that class's box
deltas; boxes are clipped to the image window; background ROIs and ROIs scoring below the
confidence threshold are dropped; NMS runs per class; the best `max_instances` survive, sorted
by score. Implemented with `tf.image.combined_non_max_suppression` over the whole batch (per-class
NMS then a top-k over classes), so there is no Python loop over images, classes or ROIs.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from bookseg.mrcnn.proposals import apply_box_deltas, clip_boxes

# combined_non_max_suppression drops scores <= its threshold; masked-out entries are exactly 0.
_MASKED_SCORE_THRESHOLD = 1e-12


def refine_detections(
    rois,
    class_probs,
    bbox_deltas,
    windows,
    *,
    min_confidence,
    max_instances: int,
    nms_threshold: float,
    bbox_std_dev,
):
    """Final detections of a batch.

    Args:
        rois: float32 [B, R, 4] normalised proposals (zero rows are padding and never detected).
        class_probs: float32 [B, R, num_classes] softmax scores.
        bbox_deltas: float32 [B, R, num_classes, 4] deltas divided by `bbox_std_dev`.
        windows: float32 [B, 4] normalised window of the real image inside the molded one.
        min_confidence: float (or scalar tensor) minimum class score kept (inclusive).
        max_instances: rows per image in the output.
        nms_threshold: per-class NMS IoU threshold.
        bbox_std_dev: 4 floats.

    Returns:
        float32 [B, max_instances, 6] rows (y1, x1, y2, x2, class_id, score), boxes normalised,
        sorted by score, zero padded (padding rows have class_id 0).
    """
    num_classes = class_probs.shape[-1]
    class_ids = tf.argmax(class_probs, axis=-1, output_type=tf.int32)  # [B, R]
    scores = tf.reduce_max(class_probs, axis=-1)
    std = tf.reshape(tf.constant(bbox_std_dev, tf.float32), [1, 1, 1, 4])
    # Refine every ROI with every foreground class's deltas: [B, R, C - 1, 4]; only the argmax
    # class gets a non-zero score below, which reproduces matterport's per-ROI class choice.
    boxes = apply_box_deltas(tf.expand_dims(rois, 2), bbox_deltas[:, :, 1:, :] * std)
    boxes = clip_boxes(boxes, tf.reshape(windows, [-1, 1, 1, 4]))

    roi_valid = tf.reduce_sum(tf.abs(rois), axis=-1) > 0
    keep = roi_valid & (class_ids > 0) & (scores >= tf.cast(min_confidence, tf.float32))
    class_scores = tf.one_hot(class_ids - 1, num_classes - 1) * tf.expand_dims(
        tf.where(keep, scores, tf.zeros_like(scores)), -1
    )
    nms_boxes, nms_scores, nms_classes, n_valid = tf.image.combined_non_max_suppression(
        boxes,
        class_scores,
        max_output_size_per_class=max_instances,
        max_total_size=max_instances,
        iou_threshold=nms_threshold,
        score_threshold=_MASKED_SCORE_THRESHOLD,
        pad_per_class=False,
        clip_boxes=False,
    )
    detections = tf.concat(
        [nms_boxes, tf.expand_dims(nms_classes + 1.0, -1), tf.expand_dims(nms_scores, -1)], axis=-1
    )
    row_valid = tf.range(max_instances)[tf.newaxis, :] < n_valid[:, tf.newaxis]
    detections = tf.where(row_valid[..., tf.newaxis], detections, tf.zeros_like(detections))
    return tf.ensure_shape(detections, [rois.shape[0], max_instances, 6])


class DetectionLayer(keras.layers.Layer):
    """matterport's `DetectionLayer` (name "mrcnn_detection"); no weights.

    Called as `layer(rois, class_probs, bbox_deltas, windows, min_confidence=..., max_instances=...)`,
    see `refine_detections`.
    """

    def __init__(self, config, name: str = "mrcnn_detection", **kwargs):
        super().__init__(name=name, **kwargs)
        self.nms_threshold = float(config.detection_nms_threshold)
        self.bbox_std_dev = tuple(float(v) for v in config.bbox_std_dev)
        self.supports_jit = False  # NMS has a data-dependent output size
        self.built = True

    def call(self, rois, class_probs, bbox_deltas, windows, min_confidence, max_instances: int):
        return refine_detections(
            rois,
            class_probs,
            bbox_deltas,
            windows,
            min_confidence=min_confidence,
            max_instances=max_instances,
            nms_threshold=self.nms_threshold,
            bbox_std_dev=self.bbox_std_dev,
        )
