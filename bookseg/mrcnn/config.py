"""MrcnnConfig: every model, target and inference setting, with matterport's defaults.

Field names are matterport's `Config` attributes in lower case (`RPN_ANCHOR_SCALES` ->
`rpn_anchor_scales`), so users find what they know. Layers never read Hydra configs: the runner
turns its config into one `MrcnnConfig` (see `bookseg.config.factory`), and the model, the input
pipeline and the weight loader read only this object.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace


@dataclass(frozen=True)
class MrcnnConfig:
    # --- backbone and pyramid -------------------------------------------------------------------
    backbone: str = "resnet101"  # resnet50 | resnet101 | tiny (small conv net for CPU tests)
    backbone_strides: tuple[int, ...] = (4, 8, 16, 32, 64)  # P2..P6
    top_down_pyramid_size: int = 256  # FPN channels
    fpn_classif_fc_layers_size: int = 1024  # box head "fc" width
    rpn_conv_channels: int = 512  # matterport's rpn_conv_shared width
    mask_head_channels: int = 256
    tiny_channels: tuple[int, ...] = (16, 32, 64, 128)  # stage widths of the tiny backbone (C2..C5)
    # Norm layers of backbone, FPN and heads: "frozen_bn" (matterport's TRAIN_BN = False: right for
    # pretrained weights) | "batch_norm" | "group_norm" (from scratch). See normalization.py.
    norm: str = "frozen_bn"
    num_classes: int = 2  # including background
    # Keras dtype policy of the layers: "float32", or "mixed_bfloat16" (bfloat16 compute, float32
    # variables; the output layers, ROI pooling and all box maths stay float32). See docs/performance.md.
    precision: str = "float32"

    # --- anchors and RPN ------------------------------------------------------------------------
    rpn_anchor_scales: tuple[float, ...] = (32, 64, 128, 256, 512)  # one square side (px) per level
    rpn_anchor_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)  # width / height
    rpn_anchor_stride: int = 1  # anchors every N feature cells
    rpn_nms_threshold: float = 0.7
    rpn_train_anchors_per_image: int = 256
    pre_nms_limit: int = 6000  # top-k over all levels jointly, before NMS
    post_nms_rois_training: int = 2000
    post_nms_rois_inference: int = 1000
    rpn_bbox_std_dev: tuple[float, ...] = (0.1, 0.1, 0.2, 0.2)

    # --- images -----------------------------------------------------------------------------------
    image_resize_mode: str = "square"  # square | pad64 | none
    image_min_dim: int = 800
    image_max_dim: int = 1024
    image_min_scale: float = 0.0
    mean_pixel: tuple[float, ...] = (123.7, 116.8, 103.9)  # RGB, subtracted (no std division)

    # --- ROI heads ----------------------------------------------------------------------------------
    train_rois_per_image: int = 200
    roi_positive_ratio: float = 0.33
    pool_size: int = 7
    roi_canonical_size: float = (
        224.0  # ROI side (molded px) pooled from P4; halving it moves every ROI one level up
    )
    # One IoU threshold per extra box head after the first (Cascade R-CNN, see cascade.py): () is
    # matterport's single head; (0.6,) adds a head trained on the first head's boxes, positives at IoU 0.6.
    cascade_iou_thresholds: tuple[float, ...] = ()
    mask_pool_size: int = 14
    # Two more inputs to the mask head: each cell's y and x in the ROI (CoordConv). Without them its 3x3 convs
    # cannot tell the ROI's centre from its other cells, so in a box that holds several parallel leaning books
    # it cannot pick the one the box is centred on (see heads.RoiCoordinates).
    mask_head_coordinates: bool = False
    mask_shape: tuple[int, int] = (28, 28)
    use_mini_mask: bool = True
    mini_mask_shape: tuple[int, int] = (56, 56)
    max_gt_instances: int = 100
    bbox_std_dev: tuple[float, ...] = (0.1, 0.1, 0.2, 0.2)

    # --- inference ----------------------------------------------------------------------------------
    detection_max_instances: int = 100
    detection_min_confidence: float = 0.7
    detection_nms_threshold: float = 0.3  # per-class NMS

    # --- training -----------------------------------------------------------------------------------
    images_per_batch: int = 2  # matterport IMAGES_PER_GPU * GPU_COUNT
    loss_weights: dict = field(
        default_factory=lambda: {
            "rpn_class_loss": 1.0,
            "rpn_bbox_loss": 1.0,
            "mrcnn_class_loss": 1.0,
            "mrcnn_bbox_loss": 1.0,
            "mrcnn_mask_loss": 1.0,
        }
    )
    weight_decay: float = 0.0001
    weight_decay_mode: str = "matterport"  # matterport: wd * mean(w^2) per tensor | l2: wd * sum(w^2)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """Static molded-image shape for resize mode "square"; (None, None, 3) otherwise."""
        if self.image_resize_mode == "square":
            return (self.image_max_dim, self.image_max_dim, 3)
        return (None, None, 3)

    @property
    def image_meta_size(self) -> int:
        """matterport layout: id(1) + original shape(3) + image shape(3) + window(4) + scale(1) + classes."""
        return 1 + 3 + 3 + 4 + 1 + self.num_classes

    def replace(self, **changes) -> MrcnnConfig:
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> None:
        """Raise `MrcnnConfigError` (a ValueError) listing every setting the network cannot be built or
        trained with. Each problem names its field first, so a caller that set the field from another
        key (the runner's Hydra config) can name that key instead (see `MrcnnConfigError`)."""
        problems: list[tuple[str, str]] = []

        def bad(name: str, message: str) -> None:
            problems.append((name, message))

        strides = list(self.backbone_strides)
        if len(self.rpn_anchor_scales) != len(strides):
            levels = f"P2..P{len(strides) + 1}"
            bad(
                "rpn_anchor_scales",
                f"rpn_anchor_scales has {len(self.rpn_anchor_scales)} values but the pyramid has "
                f"{len(strides)} levels ({levels}, strides {strides}): give one scale per level, "
                f"e.g. {[8 * s for s in strides]}",
            )
        if not all(s > 0 for s in self.rpn_anchor_scales):
            bad("rpn_anchor_scales", f"rpn_anchor_scales={list(self.rpn_anchor_scales)} must all be positive")
        if not self.rpn_anchor_ratios or not all(r > 0 for r in self.rpn_anchor_ratios):
            bad(
                "rpn_anchor_ratios",
                f"rpn_anchor_ratios={list(self.rpn_anchor_ratios)} must be positive (at least one)",
            )
        if self.rpn_anchor_stride < 1:
            bad("rpn_anchor_stride", f"rpn_anchor_stride={self.rpn_anchor_stride} must be >= 1")
        if self.image_resize_mode not in ("square", "pad64", "none"):
            bad(
                "image_resize_mode",
                f"unknown image_resize_mode {self.image_resize_mode!r}: use square, pad64 or none",
            )
        # The FPN halves the image 6 times (P6 = 1/64), so molded sides must be multiples of 64.
        if self.image_resize_mode == "square" and self.image_max_dim % 64:
            bad(
                "image_max_dim",
                f"image_max_dim={self.image_max_dim} is not divisible by 64: the FPN downsamples 6 times",
            )
        if self.image_resize_mode == "pad64" and self.image_min_dim % 64:
            bad("image_min_dim", f"image_min_dim={self.image_min_dim} must be divisible by 64 for pad64")
        if self.backbone not in ("resnet50", "resnet101", "tiny"):
            bad("backbone", f"unknown backbone {self.backbone!r}: use resnet50, resnet101 or tiny")
        if self.backbone == "tiny" and len(self.tiny_channels) != 4:
            bad("tiny_channels", f"tiny_channels needs 4 widths (C2..C5), got {list(self.tiny_channels)}")
        if self.num_classes < 2:
            bad("num_classes", "num_classes counts the background too, so it must be >= 2")
        if tuple(self.mask_shape) != (2 * self.mask_pool_size, 2 * self.mask_pool_size):
            bad(
                "mask_shape",
                f"mask_shape={tuple(self.mask_shape)} must be twice mask_pool_size={self.mask_pool_size} "
                "(the mask head upsamples once by 2)",
            )
        for name in ("pool_size", "mask_pool_size"):
            if getattr(self, name) < 1:
                bad(name, f"{name}={getattr(self, name)} must be >= 1")
        if self.roi_canonical_size <= 0:
            bad(
                "roi_canonical_size",
                f"roi_canonical_size={self.roi_canonical_size} must be positive (224: FPN's)",
            )
        if not all(0 < t < 1 for t in self.cascade_iou_thresholds):
            bad(
                "cascade_iou_thresholds",
                f"cascade_iou_thresholds={list(self.cascade_iou_thresholds)} must lie in (0, 1), "
                "one per extra box head (e.g. [0.6] or [0.6, 0.7])",
            )
        if not 0 < self.roi_positive_ratio <= 1:
            bad("roi_positive_ratio", f"roi_positive_ratio={self.roi_positive_ratio} must be in (0, 1]")
        if self.images_per_batch < 1:
            bad("images_per_batch", "images_per_batch must be >= 1")
        if self.norm not in NORMS:
            bad("norm", f"unknown norm {self.norm!r}: use {', '.join(NORMS)}")
        if self.precision not in PRECISIONS:
            bad("precision", f"unknown precision {self.precision!r}: use {' or '.join(PRECISIONS)}")
        if self.weight_decay_mode not in ("matterport", "l2"):
            bad(
                "weight_decay_mode",
                f"unknown weight_decay_mode {self.weight_decay_mode!r}: use matterport or l2",
            )
        missing = set(LOSS_NAMES) - set(self.loss_weights)
        if missing:
            bad("loss_weights", f"loss_weights lacks {sorted(missing)}")
        if problems:
            raise MrcnnConfigError(problems)


class MrcnnConfigError(ValueError):
    """What `MrcnnConfig.validate` found: the message joins every problem with "; ".

    Attributes:
        problems: (field, message) pairs; each message starts with the field's name, as
            "<field>=<value> ...", "<field> ..." or "unknown <field> <value>: ...".
    """

    def __init__(self, problems: list[tuple[str, str]]):
        super().__init__("; ".join(message for _, message in problems))
        self.problems = tuple(problems)


PRECISIONS = ("float32", "mixed_bfloat16")
NORMS = ("frozen_bn", "batch_norm", "group_norm")
STRATEGIES = ("default", "mirrored")  # tf.distribute strategies of training (distribute.py)
LOSS_NAMES = ("rpn_class_loss", "rpn_bbox_loss", "mrcnn_class_loss", "mrcnn_bbox_loss", "mrcnn_mask_loss")
