"""ROI heads: the box classifier/regressor and the mask head, as Functional models on pooled ROIs.

matterport wraps every head layer in TimeDistributed over the ROI axis. Keras 3's TimeDistributed
unrolls a Python loop when that axis is static (one op copy per ROI), so here the heads take the
ROIs flattened into the batch axis, [B * R, pool, pool, C], and use plain layers with matterport's
names and weight shapes (`mrcnn_class_conv1` is a 7x7 "valid" Conv2D, the "fc" layers are Dense).
`apply_head` does the [B, R, ...] <-> [B * R, ...] reshapes.

Both heads return logits; the sigmoid / softmax is applied by the caller, so the losses can use
the numerically stable from-logits cross-entropies (matterport computes the mask BCE on clipped
sigmoid probabilities; the value is the same away from saturation).

The output layers are float32 under any dtype policy (`config.precision`), so logits and deltas
always are; the hidden layers follow the policy.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

from bookseg.mrcnn.normalization import normalize


def build_classifier_head(config, stage: int = 1) -> keras.Model:
    """matterport `fpn_classifier_graph` on flattened ROIs.

    `stage` > 1 builds a cascade stage's head (cascade.py): the same layers with "_stage<k>" appended
    to every name ("fpn_classifier_stage2", "mrcnn_class_conv1_stage2", ...).

    Model input: float32 [N, pool, pool, depth] pooled ROI features (N = B * R).
    Model outputs:
        mrcnn_class_logits float32 [N, num_classes],
        mrcnn_bbox float32 [N, num_classes, 4] class-specific (dy, dx, log dh, log dw) deltas,
        still divided by `config.bbox_std_dev`.
    """
    pool, depth, width = config.pool_size, config.top_down_pyramid_size, config.fpn_classif_fc_layers_size
    num_classes = config.num_classes
    suffix = "" if stage == 1 else f"_stage{stage}"
    pooled = keras.Input(shape=(pool, pool, depth), name="input_pooled_rois")
    x = layers.Conv2D(width, pool, padding="valid", name=f"mrcnn_class_conv1{suffix}")(pooled)
    x = normalize(x, config.norm, f"mrcnn_class_bn1{suffix}")
    x = layers.Activation("relu")(x)
    x = layers.Conv2D(width, 1, name=f"mrcnn_class_conv2{suffix}")(x)
    x = normalize(x, config.norm, f"mrcnn_class_bn2{suffix}")
    x = layers.Activation("relu")(x)
    shared = layers.Reshape((width,), name="pool_squeeze")(x)
    class_logits = layers.Dense(num_classes, name=f"mrcnn_class_logits{suffix}", dtype="float32")(shared)
    bbox = layers.Dense(num_classes * 4, name=f"mrcnn_bbox_fc{suffix}", dtype="float32")(shared)
    bbox = layers.Reshape((num_classes, 4), name="mrcnn_bbox", dtype="float32")(bbox)
    return keras.Model(pooled, [class_logits, bbox], name=f"fpn_classifier{suffix}")


class RoiCoordinates(layers.Layer):
    """Append each cell's position in its ROI: [N, h, w, C] -> [N, h, w, C + 2].

    Channel C is the cell centre's y, channel C + 1 its x, both in (-1, 1) with 0 at the ROI's centre; the
    same for every ROI (CoordConv, Liu et al. 2018). No weights.
    """

    def call(self, pooled):
        height, width = pooled.shape[1], pooled.shape[2]
        ys = (tf.range(height, dtype=tf.float32) + 0.5) / height * 2.0 - 1.0
        xs = (tf.range(width, dtype=tf.float32) + 0.5) / width * 2.0 - 1.0
        grid = tf.stack(tf.meshgrid(ys, xs, indexing="ij"), axis=-1)  # [h, w, 2]
        grid = tf.tile(grid[None], [tf.shape(pooled)[0], 1, 1, 1])
        return tf.concat([pooled, tf.cast(grid, pooled.dtype)], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] + 2)


def build_mask_head(config) -> keras.Model:
    """matterport `build_fpn_mask_graph` on flattened ROIs.

    With `config.mask_head_coordinates` the pooled features get two position channels first
    (`RoiCoordinates`), so `mrcnn_mask_conv1`'s kernel has depth + 2 input channels.

    Model input: float32 [N, mask_pool, mask_pool, depth] pooled ROI features.
    Model output: mrcnn_mask logits float32 [N, 2 * mask_pool, 2 * mask_pool, num_classes]
    (28 x 28 by default); the sigmoid of these is matterport's `mrcnn_mask`.
    """
    pool, depth, width = config.mask_pool_size, config.top_down_pyramid_size, config.mask_head_channels
    pooled = keras.Input(shape=(pool, pool, depth), name="input_pooled_mask_rois")
    x = RoiCoordinates(name="mrcnn_mask_coordinates")(pooled) if config.mask_head_coordinates else pooled
    for i in range(1, 5):
        x = layers.Conv2D(width, 3, padding="same", name=f"mrcnn_mask_conv{i}")(x)
        x = normalize(x, config.norm, f"mrcnn_mask_bn{i}")
        x = layers.Activation("relu")(x)
    x = layers.Conv2DTranspose(width, 2, strides=2, activation="relu", name="mrcnn_mask_deconv")(x)
    mask_logits = layers.Conv2D(config.num_classes, 1, name="mrcnn_mask", dtype="float32")(x)
    return keras.Model(pooled, mask_logits, name="fpn_mask")


def apply_head(head: keras.Model, pooled, training=None):
    """Run a head on [B, R, ...] pooled features by folding the ROIs into the batch axis.

    Args:
        head: a Functional head taking [N, ...].
        pooled: float32 [B, R, ph, pw, C].

    Returns:
        The head's output(s) reshaped to [B, R, ...].
    """
    batch, rois = tf.shape(pooled)[0], tf.shape(pooled)[1]
    flat = tf.reshape(pooled, tf.concat([[batch * rois], tf.shape(pooled)[2:]], axis=0))
    outputs = head(flat, training=training)

    def unfold(t):
        static = [pooled.shape[0], pooled.shape[1], *t.shape[1:]]
        out = tf.reshape(t, tf.concat([[batch, rois], tf.shape(t)[1:]], axis=0))
        return tf.ensure_shape(out, static)

    if isinstance(outputs, (list, tuple)):
        return [unfold(t) for t in outputs]
    return unfold(outputs)
