"""Feature Pyramid Network on top of C2..C5 (matterport names `fpn_c5p5` ... `fpn_p6`)."""

from __future__ import annotations

from keras import layers

from bookseg.mrcnn.normalization import normalize


def fpn_graph(c2, c3, c4, c5, channels: int, norm: str = "frozen_bn"):
    """Top-down pathway with lateral 1x1 convs, then a 3x3 conv per level (matterport's FPN).

    Args:
        c2..c5: backbone maps at strides 4, 8, 16, 32 ([B, H/s, W/s, C_s]).
        channels: FPN width (`config.top_down_pyramid_size`).
        norm: `config.norm`. "frozen_bn" keeps matterport's FPN (no norm layers); "batch_norm" and
            "group_norm" add one after every conv (`<conv name>_norm`), as Detectron's GN recipe.

    Returns:
        [P2, P3, P4, P5, P6], each [B, H/s, W/s, channels] for s = 4, 8, 16, 32, 64. The RPN uses
        all five, the ROI heads P2..P5. P6 is a stride-2 subsampling of P5 (max pool of size 1).
    """

    def conv(x, kernel: int, name: str):
        x = layers.Conv2D(channels, kernel, padding="same", name=name)(x)
        return x if norm == "frozen_bn" else normalize(x, norm, f"{name}_norm")

    p5 = conv(c5, 1, "fpn_c5p5")
    p4 = layers.Add(name="fpn_p4add")(
        [layers.UpSampling2D(2, name="fpn_p5upsampled")(p5), conv(c4, 1, "fpn_c4p4")]
    )
    p3 = layers.Add(name="fpn_p3add")(
        [layers.UpSampling2D(2, name="fpn_p4upsampled")(p4), conv(c3, 1, "fpn_c3p3")]
    )
    p2 = layers.Add(name="fpn_p2add")(
        [layers.UpSampling2D(2, name="fpn_p3upsampled")(p3), conv(c2, 1, "fpn_c2p2")]
    )
    p2, p3, p4, p5 = (conv(p, 3, f"fpn_p{level}") for level, p in zip((2, 3, 4, 5), (p2, p3, p4, p5)))
    p6 = layers.MaxPooling2D(pool_size=1, strides=2, name="fpn_p6")(p5)
    return [p2, p3, p4, p5, p6]
