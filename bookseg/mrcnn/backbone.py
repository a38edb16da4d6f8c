"""Backbones producing the C2..C5 feature maps: ResNet-50/101 with matterport's names, and `tiny`.

ResNet follows matterport's `resnet_graph`: ZeroPadding(3), `conv1` 7x7/2,
`bn_conv1`, ReLU, 3x3/2 max pool, then bottleneck stages 2-5 with the stride on the first 1x1
conv (Caffe/MSRA style), every conv with a bias, a norm layer after each conv (`config.norm`:
matterport's frozen BatchNorm, epsilon 1e-3, by default; see normalization.py). Layer names are the
legacy Keras ResNet names (`res2a_branch2a`, `bn2a_branch2a`, ..., `res4w_branch2c` for R101), so
matterport's COCO weights and the old ImageNet h5 load by name.

The `tiny` backbone is a small stack of 3x3 convs for CPU tests and toy data: stage k (k = 1..5)
halves the resolution, so C2..C5 come out at strides 4, 8, 16, 32 exactly like ResNet's, with
`config.tiny_channels` channels. Its layers are named `tiny_c{k}_conv{i}` / `tiny_c{k}_bn{i}`;
the training stages "3+", "4+", "5+" select `tiny_c3*` ... like `res3*` (see training.py).

Inputs are molded images: float32 [B, H, W, 3], RGB minus the mean pixel, H and W multiples of 64.
"""

from __future__ import annotations

from keras import layers

from bookseg.mrcnn.normalization import normalize

RESNET_STAGE4_BLOCKS = {"resnet50": 5, "resnet101": 22}  # identity blocks after res4a


def _bottleneck(x, filters, stage: int, block: str, norm, *, strides: int = 1, shortcut_conv: bool):
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
    y = normalize(y, norm, bn + "2a")
    y = layers.Activation("relu")(y)
    y = layers.Conv2D(f2, 3, padding="same", use_bias=True, name=conv + "2b")(y)
    y = normalize(y, norm, bn + "2b")
    y = layers.Activation("relu")(y)
    y = layers.Conv2D(f3, 1, use_bias=True, name=conv + "2c")(y)
    y = normalize(y, norm, bn + "2c")
    if shortcut_conv:
        shortcut = layers.Conv2D(f3, 1, strides=strides, use_bias=True, name=conv + "1")(x)
        shortcut = normalize(shortcut, norm, bn + "1")
    else:
        shortcut = x
    y = layers.Add(name=f"res{stage}{block}_add")([y, shortcut])
    return layers.Activation("relu", name=f"res{stage}{block}_out")(y)


def _resnet_stage(x, filters, stage: int, n_blocks: int, norm, *, strides: int):
    x = _bottleneck(x, filters, stage, "a", norm, strides=strides, shortcut_conv=True)
    for i in range(1, n_blocks):
        x = _bottleneck(x, filters, stage, chr(97 + i), norm, shortcut_conv=False)
    return x


def resnet_graph(input_image, architecture: str, norm):
    """ResNet-50/101 feature maps (matterport `resnet_graph`, stage 5 always built).

    Args:
        input_image: KerasTensor [B, H, W, 3] molded image.
        architecture: "resnet50" or "resnet101".
        norm: "frozen_bn" | "batch_norm" | "group_norm" (see normalization.py).

    Returns:
        [C2, C3, C4, C5]: [B, H/4, W/4, 256], [B, H/8, W/8, 512], [B, H/16, W/16, 1024],
        [B, H/32, W/32, 2048].
    """
    if architecture not in RESNET_STAGE4_BLOCKS:
        raise ValueError(f"unknown ResNet {architecture!r}: use resnet50 or resnet101")
    x = layers.ZeroPadding2D(3, name="conv1_pad")(input_image)
    x = layers.Conv2D(64, 7, strides=2, use_bias=True, name="conv1")(x)
    x = normalize(x, norm, "bn_conv1")
    x = layers.Activation("relu")(x)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)
    c2 = _resnet_stage(x, (64, 64, 256), 2, 3, norm, strides=1)
    c3 = _resnet_stage(c2, (128, 128, 512), 3, 4, norm, strides=2)
    c4 = _resnet_stage(c3, (256, 256, 1024), 4, 1 + RESNET_STAGE4_BLOCKS[architecture], norm, strides=2)
    c5 = _resnet_stage(c4, (512, 512, 2048), 5, 3, norm, strides=2)
    return [c2, c3, c4, c5]


def tiny_graph(input_image, channels, norm):
    """Small CPU backbone: five stages of (3x3/2 conv, norm, ReLU, 3x3 conv, norm, ReLU).

    Stage 1 (stem) has channels[0] // 2 filters (at least 8); stages 2..5 have `channels[0..3]`.

    Args:
        input_image: KerasTensor [B, H, W, 3] molded image.
        channels: 4 widths for C2..C5 (`config.tiny_channels`).
        norm: "frozen_bn" | "batch_norm" | "group_norm" (see normalization.py).

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
        x = normalize(x, norm, f"{name}_bn1")
        x = layers.Activation("relu")(x)
        x = layers.Conv2D(width, 3, padding="same", name=f"{name}_conv2")(x)
        x = normalize(x, norm, f"{name}_bn2")
        x = layers.Activation("relu", name=f"{name}_out")(x)
        if stage >= 2:
            features.append(x)
    return features


def backbone_graph(input_image, config):
    """C2..C5 for `config.backbone` ("resnet50" | "resnet101" | "tiny")."""
    if config.backbone == "tiny":
        return tiny_graph(input_image, config.tiny_channels, config.norm)
    return resnet_graph(input_image, config.backbone, config.norm)
