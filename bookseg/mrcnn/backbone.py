"""Backbones producing the C2..C5 feature maps: ResNet-50/101 with matterport's names, and `tiny`.

ResNet follows matterport's `resnet_graph` (contract §1.2): ZeroPadding(3), `conv1` 7x7/2,
`bn_conv1`, ReLU, 3x3/2 max pool, then bottleneck stages 2-5 with the stride on the first 1x1
conv (Caffe/MSRA style), every conv with a bias, BatchNorm epsilon 1e-3. Layer names are the
legacy Keras ResNet names (`res2a_branch2a`, `bn2a_branch2a`, ..., `res4w_branch2c` for R101), so
matterport's COCO weights and the old ImageNet h5 load by name.

The `tiny` backbone is a small stack of 3x3 convs for CPU tests and toy data: stage k (k = 1..5)
halves the resolution, so C2..C5 come out at strides 4, 8, 16, 32 exactly like ResNet's, with
`config.tiny_channels` channels. Its layers are named `tiny_c{k}_conv{i}` / `tiny_c{k}_bn{i}`;
the training stages "3+", "4+", "5+" select `tiny_c3*` ... like `res3*` (see training.py).

Inputs are molded images: float32 [B, H, W, 3], RGB minus the mean pixel, H and W multiples of 64.
"""

from __future__ import annotations

from keras import layers, ops

BN_EPSILON = 1e-3  # Keras' default, what matterport's weights were trained with


class BatchNorm(layers.BatchNormalization):
    """BatchNormalization whose train/inference mode is fixed by `config.train_bn`.

    matterport calls its BN layers with `training=config.TRAIN_BN`; a Keras 3 functional model
    would override that with the `training` flag of the outer call, so the choice is stored on
    the layer instead:

    * train_bn=False (default): always inference mode, i.e. moving statistics are used and never
      updated, even in `fit` (gamma/beta may still be trainable). Right for small batches.
    * train_bn=True: always batch statistics (updating the moving averages).
    * train_bn=None: follow the `training` flag of the call (standard Keras behaviour).
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


RESNET_STAGE4_BLOCKS = {"resnet50": 5, "resnet101": 22}  # identity blocks after res4a


def _bottleneck(x, filters, stage: int, block: str, train_bn, *, strides: int = 1, shortcut_conv: bool):
    """One ResNet bottleneck block (matterport `conv_block` / `identity_block`, kernel 3).

    Args:
        x: [B, H, W, C] input.
        filters: (f1, f2, f3) widths of the 1x1, 3x3 and 1x1 convs.
        stage, block: naming, e.g. stage 3 block "b" -> res3b_branch2a ...
        strides: stride of the first 1x1 conv and of the shortcut conv.
        shortcut_conv: True for block "a" (conv + BN on the shortcut, `branch1`).
    """
    f1, f2, f3 = filters
    conv = f"res{stage}{block}_branch"
    bn = f"bn{stage}{block}_branch"
    y = layers.Conv2D(f1, 1, strides=strides, use_bias=True, name=conv + "2a")(x)
    y = BatchNorm(train_bn=train_bn, name=bn + "2a")(y)
    y = layers.Activation("relu")(y)
    y = layers.Conv2D(f2, 3, padding="same", use_bias=True, name=conv + "2b")(y)
    y = BatchNorm(train_bn=train_bn, name=bn + "2b")(y)
    y = layers.Activation("relu")(y)
    y = layers.Conv2D(f3, 1, use_bias=True, name=conv + "2c")(y)
    y = BatchNorm(train_bn=train_bn, name=bn + "2c")(y)
    if shortcut_conv:
        shortcut = layers.Conv2D(f3, 1, strides=strides, use_bias=True, name=conv + "1")(x)
        shortcut = BatchNorm(train_bn=train_bn, name=bn + "1")(shortcut)
    else:
        shortcut = x
    y = layers.Add(name=f"res{stage}{block}_add")([y, shortcut])
    return layers.Activation("relu", name=f"res{stage}{block}_out")(y)


def _resnet_stage(x, filters, stage: int, n_blocks: int, train_bn, *, strides: int):
    x = _bottleneck(x, filters, stage, "a", train_bn, strides=strides, shortcut_conv=True)
    for i in range(1, n_blocks):
        x = _bottleneck(x, filters, stage, chr(97 + i), train_bn, shortcut_conv=False)
    return x


def resnet_graph(input_image, architecture: str, train_bn):
    """ResNet-50/101 feature maps (matterport `resnet_graph`, stage 5 always built).

    Args:
        input_image: KerasTensor [B, H, W, 3] molded image.
        architecture: "resnet50" or "resnet101".
        train_bn: BatchNorm mode, see `BatchNorm`.

    Returns:
        [C2, C3, C4, C5]: [B, H/4, W/4, 256], [B, H/8, W/8, 512], [B, H/16, W/16, 1024],
        [B, H/32, W/32, 2048].
    """
    if architecture not in RESNET_STAGE4_BLOCKS:
        raise ValueError(f"unknown ResNet {architecture!r}: use resnet50 or resnet101")
    x = layers.ZeroPadding2D(3, name="conv1_pad")(input_image)
    x = layers.Conv2D(64, 7, strides=2, use_bias=True, name="conv1")(x)
    x = BatchNorm(train_bn=train_bn, name="bn_conv1")(x)
    x = layers.Activation("relu")(x)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)
    c2 = _resnet_stage(x, (64, 64, 256), 2, 3, train_bn, strides=1)
    c3 = _resnet_stage(c2, (128, 128, 512), 3, 4, train_bn, strides=2)
    c4 = _resnet_stage(c3, (256, 256, 1024), 4, 1 + RESNET_STAGE4_BLOCKS[architecture], train_bn, strides=2)
    c5 = _resnet_stage(c4, (512, 512, 2048), 5, 3, train_bn, strides=2)
    return [c2, c3, c4, c5]


def tiny_graph(input_image, channels, train_bn):
    """Small CPU backbone: five stages of (3x3/2 conv, BN, ReLU, 3x3 conv, BN, ReLU).

    Stage 1 (stem) has channels[0] // 2 filters (at least 8); stages 2..5 have `channels[0..3]`.

    Args:
        input_image: KerasTensor [B, H, W, 3] molded image.
        channels: 4 widths for C2..C5 (`config.tiny_channels`).
        train_bn: BatchNorm mode, see `BatchNorm`.

    Returns:
        [C2, C3, C4, C5] at strides 4, 8, 16, 32 with `channels` channels.
    """
    if len(channels) != 4:
        raise ValueError(f"tiny_channels needs 4 widths (C2..C5), got {list(channels)}")
    # Molded pixels span about +-128; a fixed rescale keeps the from-scratch activations O(1)
    # (ResNet needs none: its ImageNet weights expect the matterport molding as is).
    x = layers.Rescaling(1.0 / 64.0, name="tiny_input_scale")(input_image)
    widths = [max(8, channels[0] // 2), *channels]
    features = []
    for stage, width in enumerate(widths, start=1):
        name = f"tiny_c{stage}"
        x = layers.Conv2D(width, 3, strides=2, padding="same", name=f"{name}_conv1")(x)
        x = BatchNorm(train_bn=train_bn, name=f"{name}_bn1")(x)
        x = layers.Activation("relu")(x)
        x = layers.Conv2D(width, 3, padding="same", name=f"{name}_conv2")(x)
        x = BatchNorm(train_bn=train_bn, name=f"{name}_bn2")(x)
        x = layers.Activation("relu", name=f"{name}_out")(x)
        if stage >= 2:
            features.append(x)
    return features


def backbone_graph(input_image, config):
    """C2..C5 for `config.backbone` ("resnet50" | "resnet101" | "tiny")."""
    if config.backbone == "tiny":
        return tiny_graph(input_image, config.tiny_channels, config.train_bn)
    return resnet_graph(input_image, config.backbone, config.train_bn)

