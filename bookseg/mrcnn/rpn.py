"""Region Proposal Network head: one nested model `rpn_model` shared by all pyramid levels."""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers


def build_rpn_model(
    anchor_stride: int, anchors_per_location: int, depth: int, conv_channels: int
) -> keras.Model:
    """matterport's `build_rpn_model`: a Functional model named "rpn_model".

    Its `.weights` enumerate [rpn_conv_shared kernel, bias, rpn_class_raw kernel, bias,
    rpn_bbox_pred kernel, bias], the order of matterport's h5 group.

    Args:
        anchor_stride: stride of the shared conv (`config.rpn_anchor_stride`).
        anchors_per_location: A = len(config.rpn_anchor_ratios).
        depth: channels of the feature maps (`config.top_down_pyramid_size`).
        conv_channels: width of `rpn_conv_shared` (512 in matterport).

    Returns:
        Model mapping a feature map [B, h, w, depth] to
        rpn_class_logits float32 [B, h*w*A, 2] (background, foreground logits),
        rpn_probs float32 [B, h*w*A, 2] (softmax of the logits),
        rpn_bbox float32 [B, h*w*A, 4] (dy, dx, log dh, log dw) deltas, still divided by
        `config.rpn_bbox_std_dev`.
        Rows are ordered (row, col, anchor), the order of `bookseg.mrcnn.anchors`.
    """
    # The 1x1 output convs, reshapes and softmax are float32 under any dtype policy (scores feed
    # top-k and NMS, deltas feed box maths); only the shared 3x3 conv follows the policy.
    feature_map = keras.Input(shape=(None, None, depth), name="input_rpn_feature_map")
    shared = layers.Conv2D(
        conv_channels, 3, padding="same", activation="relu", strides=anchor_stride, name="rpn_conv_shared"
    )(feature_map)
    x = layers.Conv2D(2 * anchors_per_location, 1, name="rpn_class_raw", dtype="float32")(shared)
    rpn_class_logits = layers.Reshape((-1, 2), name="rpn_class_logits_reshape", dtype="float32")(x)
    rpn_probs = layers.Activation("softmax", name="rpn_class_xxx", dtype="float32")(rpn_class_logits)
    x = layers.Conv2D(4 * anchors_per_location, 1, name="rpn_bbox_pred", dtype="float32")(shared)
    rpn_bbox = layers.Reshape((-1, 4), name="rpn_bbox_reshape", dtype="float32")(x)
    return keras.Model(feature_map, [rpn_class_logits, rpn_probs, rpn_bbox], name="rpn_model")


def run_rpn(rpn_model: keras.Model, feature_maps, training=None):
    """Apply the shared RPN to every level and concatenate (levels in order, P2 first).

    Args:
        rpn_model: from `build_rpn_model`.
        feature_maps: [P2, ..., P6] tensors [B, h_l, w_l, depth].

    Returns:
        rpn_class_logits [B, A_total, 2], rpn_probs [B, A_total, 2], rpn_bbox [B, A_total, 4],
        rows in the order of `anchors_for(config, image_shape)`.
    """
    outputs = [rpn_model(p, training=training) for p in feature_maps]
    return [tf.concat(list(level_outputs), axis=1) for level_outputs in zip(*outputs)]
