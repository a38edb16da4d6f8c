"""matterport's `Config`: UPPER_CASE class attributes with matterport's defaults, mapped onto `MrcnnConfig`.

Subclass it and override attributes exactly as with `mrcnn.config.Config`. bookseg reads it once, when a
`bookseg.compat.model.MaskRCNN` is built, through `to_mrcnn_config`: every `MrcnnConfig` field whose
upper-case name is an attribute here (`RPN_ANCHOR_SCALES` -> `rpn_anchor_scales`) is passed by name,
`NUM_CLASSES` -> `num_classes`, `BATCH_SIZE` -> `images_per_batch`, `TRAIN_BN` -> `norm`.

Attributes that are not matterport's (bookseg additions, all optional): `NORM` (overrides `TRAIN_BN`:
"frozen_bn" | "batch_norm" | "group_norm"), `TINY_CHANNELS`, `RPN_CONV_CHANNELS`, `MASK_HEAD_CHANNELS`,
`PRECISION`, `WEIGHT_DECAY_MODE` and `BACKBONE = "tiny"` (a small CPU backbone, docs/mrcnn-differences.md).
"""

from __future__ import annotations

from dataclasses import fields
from typing import ClassVar

import numpy as np

from bookseg.mrcnn.config import MrcnnConfig

# Settings bookseg's network cannot honour; each names what to do instead.
_UNSUPPORTED = {
    "IMAGE_RESIZE_MODE": (
        lambda v: v == "crop",
        'IMAGE_RESIZE_MODE="crop" is not supported: use "square" (or "pad64") and iaa.CropAndPad',
    ),
    "IMAGE_CHANNEL_COUNT": (lambda v: v != 3, "IMAGE_CHANNEL_COUNT must be 3: bookseg trains on RGB images"),
    "USE_RPN_ROIS": (lambda v: not v, "USE_RPN_ROIS=False (externally generated ROIs) is not supported"),
    "BACKBONE": (
        lambda v: callable(v),
        'a callable BACKBONE is not supported: use "resnet50", "resnet101" or "tiny"',
    ),
    "COMPUTE_BACKBONE_SHAPE": (
        lambda v: v is not None,
        "COMPUTE_BACKBONE_SHAPE is not supported (bookseg computes feature shapes itself)",
    ),
}


class Config:
    """Base configuration: subclass it and override what differs (matterport's defaults below)."""

    NAME = None  # override in subclasses: names the log directory and the checkpoints
    GPU_COUNT = 1
    IMAGES_PER_GPU = 2
    STEPS_PER_EPOCH = 1000
    VALIDATION_STEPS = 50
    BACKBONE = "resnet101"
    COMPUTE_BACKBONE_SHAPE = None
    BACKBONE_STRIDES: ClassVar[list] = [4, 8, 16, 32, 64]
    FPN_CLASSIF_FC_LAYERS_SIZE = 1024
    TOP_DOWN_PYRAMID_SIZE = 256
    NUM_CLASSES = 1  # override in subclasses: background + your classes
    RPN_ANCHOR_SCALES = (32, 64, 128, 256, 512)
    RPN_ANCHOR_RATIOS: ClassVar[list] = [0.5, 1, 2]
    RPN_ANCHOR_STRIDE = 1
    RPN_NMS_THRESHOLD = 0.7
    RPN_TRAIN_ANCHORS_PER_IMAGE = 256
    PRE_NMS_LIMIT = 6000
    POST_NMS_ROIS_TRAINING = 2000
    POST_NMS_ROIS_INFERENCE = 1000
    USE_MINI_MASK = True
    MINI_MASK_SHAPE = (56, 56)
    IMAGE_RESIZE_MODE = "square"
    IMAGE_MIN_DIM = 800
    IMAGE_MAX_DIM = 1024
    IMAGE_MIN_SCALE = 0
    IMAGE_CHANNEL_COUNT = 3
    MEAN_PIXEL = np.array([123.7, 116.8, 103.9])
    TRAIN_ROIS_PER_IMAGE = 200
    ROI_POSITIVE_RATIO = 0.33
    POOL_SIZE = 7
    MASK_POOL_SIZE = 14
    MASK_SHAPE: ClassVar[list] = [28, 28]
    MAX_GT_INSTANCES = 100
    RPN_BBOX_STD_DEV = np.array([0.1, 0.1, 0.2, 0.2])
    BBOX_STD_DEV = np.array([0.1, 0.1, 0.2, 0.2])
    DETECTION_MAX_INSTANCES = 100
    DETECTION_MIN_CONFIDENCE = 0.7
    DETECTION_NMS_THRESHOLD = 0.3
    LEARNING_RATE = 0.001
    LEARNING_MOMENTUM = 0.9
    WEIGHT_DECAY = 0.0001
    LOSS_WEIGHTS: ClassVar[dict] = {
        "rpn_class_loss": 1.0,
        "rpn_bbox_loss": 1.0,
        "mrcnn_class_loss": 1.0,
        "mrcnn_bbox_loss": 1.0,
        "mrcnn_mask_loss": 1.0,
    }
    USE_RPN_ROIS = True
    TRAIN_BN = False  # False: frozen BN (matterport); None / True: batch statistics in training
    GRADIENT_CLIP_NORM = 5.0  # clips the global gradient norm, as matterport's Keras 2.0.8 did

    def __init__(self):
        """Set the computed attributes, as matterport does."""
        self.BATCH_SIZE = self.IMAGES_PER_GPU * self.GPU_COUNT
        self.IMAGE_SHAPE = np.array([self.IMAGE_MAX_DIM, self.IMAGE_MAX_DIM, self.IMAGE_CHANNEL_COUNT])
        self.IMAGE_META_SIZE = 1 + 3 + 3 + 4 + 1 + self.NUM_CLASSES

    def to_dict(self) -> dict:
        """Every UPPER_CASE setting (class and computed ones) by name."""
        return {
            name: getattr(self, name)
            for name in sorted(dir(self))
            if name.isupper() and not callable(getattr(self, name))
        }

    def display(self) -> None:
        """Print every setting, one per line (matterport's format)."""
        print("\nConfigurations:")
        for name, value in self.to_dict().items():
            print(f"{name:30} {value}")
        print("\n")


def _plain(value):
    """numpy arrays and lists -> tuples of Python numbers (MrcnnConfig is frozen and hashable-minded)."""
    if isinstance(value, np.ndarray):
        return tuple(value.tolist())
    if isinstance(value, list):
        return tuple(value)
    return value


def to_mrcnn_config(config: Config | MrcnnConfig) -> MrcnnConfig:
    """The `MrcnnConfig` bookseg's model, input pipeline and weight loader read, from a `Config`.

    Raises:
        ValueError: a matterport setting bookseg does not support (the message says what to use), or
            a value `MrcnnConfig.validate` rejects (e.g. NUM_CLASSES < 2).
    """
    if isinstance(config, MrcnnConfig):
        return config
    for name, (is_unsupported, message) in _UNSUPPORTED.items():
        if hasattr(config, name) and is_unsupported(getattr(config, name)):
            raise ValueError(f"{type(config).__name__}: {message}")
    by_name = {
        f.name: _plain(getattr(config, f.name.upper()))
        for f in fields(MrcnnConfig)
        if hasattr(config, f.name.upper())
    }
    by_name["num_classes"] = int(config.NUM_CLASSES)
    by_name["images_per_batch"] = int(getattr(config, "BATCH_SIZE", config.IMAGES_PER_GPU * config.GPU_COUNT))
    by_name["image_min_scale"] = float(config.IMAGE_MIN_SCALE or 0)
    by_name["loss_weights"] = dict(config.LOSS_WEIGHTS)
    if not getattr(config, "NORM", None):
        by_name["norm"] = "frozen_bn" if config.TRAIN_BN is False else "batch_norm"
    try:
        mrcnn = MrcnnConfig(**by_name)
        mrcnn.validate()
    except (TypeError, ValueError) as error:
        raise ValueError(f"{type(config).__name__}: {error}") from error
    return mrcnn
