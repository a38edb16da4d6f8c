"""Normalisation layers of the backbone, FPN and ROI heads, chosen by `config.norm`.

* "frozen_bn": matterport's BatchNorm in inference mode (moving statistics, never updated). Right
  for pretrained weights: the statistics come from ImageNet / COCO. From random initialisation the
  moving statistics are 0 and 1, so the network trains with no normalisation at all.
* "batch_norm": ordinary BatchNorm: batch statistics in `fit`, moving statistics in `detect` and
  validation. Needs a few images per batch; the heads' statistics mix positive, negative and
  padding ROIs.
* "group_norm": GroupNorm (Wu & He, 2018), per image and per ROI, so it behaves the same in
  training and inference at any batch size; what He et al. (2019) use to train Mask R-CNN
  from scratch.

Norm layers keep matterport's BatchNorm names (`bn2a_branch2a`, `mrcnn_mask_bn1`, ...) whatever
their kind, so stage regexes select them as before. With "batch_norm" and "group_norm" the FPN
convs get norm layers too (`fpn_c5p5_norm`, `fpn_p2_norm`, ...); with "frozen_bn" the FPN stays
matterport's, so `mask_rcnn_coco.h5` loads.
"""

from __future__ import annotations

import math

from keras import layers, ops

from bookseg.mrcnn.config import NORMS

BN_EPSILON = 1e-3  # Keras' default, what matterport's weights were trained with
GN_EPSILON = 1e-5
MAX_GROUPS = 32  # Wu & He's default
MIN_CHANNELS_PER_GROUP = 4  # keeps narrow CPU models from degenerating into per-channel (instance) norm


class BatchNorm(layers.BatchNormalization):
    """BatchNormalization whose train/inference mode is fixed on the layer by `train_bn`.

    matterport calls its BN layers with `training=config.TRAIN_BN`; a Keras 3 functional model
    would override that with the `training` flag of the outer call, so the choice is stored on
    the layer instead:

    * train_bn=False ("frozen_bn"): always inference mode, i.e. moving statistics are used and
      never updated, even in `fit` (gamma/beta may still be trainable).
    * train_bn=True: always batch statistics (updating the moving averages), matterport's
      `TRAIN_BN = True`, also at inference.
    * train_bn=None ("batch_norm"): follow the `training` flag of the call (standard Keras).
    """

    def __init__(self, *args, train_bn: bool | None = False, **kwargs):
        kwargs.setdefault("epsilon", BN_EPSILON)
        super().__init__(*args, **kwargs)
        self.train_bn = train_bn

    def call(self, inputs, training=None, mask=None):
        if self.train_bn is not None:
            training = self.train_bn
        if (training and self.trainable) or mask is not None or self.axis not in (-1, len(inputs.shape) - 1):
            return super().call(inputs, training=training, mask=mask)
        # Moving statistics: one multiply-add with per-channel factors computed in float32 and
        # applied in the compute dtype. (Keras casts the whole activation to float32 and back,
        # which under mixed bfloat16 costs more than the convolutions gain.)
        scale = self.gamma * ops.rsqrt(self.moving_variance + self.epsilon)
        shift = self.beta - self.moving_mean * scale
        return inputs * ops.cast(scale, inputs.dtype) + ops.cast(shift, inputs.dtype)

    def get_config(self):
        return {**super().get_config(), "train_bn": self.train_bn}


def group_count(channels: int) -> int:
    """GroupNorm groups for `channels`: at most 32, at least 4 channels per group, a divisor."""
    return math.gcd(channels, max(1, min(MAX_GROUPS, channels // MIN_CHANNELS_PER_GROUP)))


def normalize(x, norm: str, name: str):
    """Apply the norm layer `name` of kind `norm` (one of NORMS) to x [..., C]."""
    if norm == "frozen_bn":
        return BatchNorm(train_bn=False, name=name)(x)
    if norm == "batch_norm":
        return BatchNorm(train_bn=None, name=name)(x)
    if norm == "group_norm":
        return layers.GroupNormalization(groups=group_count(x.shape[-1]), epsilon=GN_EPSILON, name=name)(x)
    raise ValueError(f"unknown norm {norm!r}: use {', '.join(NORMS)}")


def is_norm_layer(layer) -> bool:
    """True for the layers `normalize` builds (their gamma/beta take no weight decay)."""
    return isinstance(layer, (layers.BatchNormalization, layers.GroupNormalization))
