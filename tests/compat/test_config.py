"""Config: matterport's documented defaults, computed attributes, display, and the mapping onto MrcnnConfig."""

from __future__ import annotations

import numpy as np
import pytest

from bookseg.compat.config import Config, to_mrcnn_config
from bookseg.mrcnn.config import MrcnnConfig
from tests.compat.conftest import TinyConfig

# matterport/Mask_RCNN mrcnn/config.py, v2.1 (the defaults its README and samples document).
MATTERPORT_DEFAULTS = {
    "NAME": None,
    "GPU_COUNT": 1,
    "IMAGES_PER_GPU": 2,
    "STEPS_PER_EPOCH": 1000,
    "VALIDATION_STEPS": 50,
    "BACKBONE": "resnet101",
    "COMPUTE_BACKBONE_SHAPE": None,
    "BACKBONE_STRIDES": [4, 8, 16, 32, 64],
    "FPN_CLASSIF_FC_LAYERS_SIZE": 1024,
    "TOP_DOWN_PYRAMID_SIZE": 256,
    "NUM_CLASSES": 1,
    "RPN_ANCHOR_SCALES": (32, 64, 128, 256, 512),
    "RPN_ANCHOR_RATIOS": [0.5, 1, 2],
    "RPN_ANCHOR_STRIDE": 1,
    "RPN_NMS_THRESHOLD": 0.7,
    "RPN_TRAIN_ANCHORS_PER_IMAGE": 256,
    "PRE_NMS_LIMIT": 6000,
    "POST_NMS_ROIS_TRAINING": 2000,
    "POST_NMS_ROIS_INFERENCE": 1000,
    "USE_MINI_MASK": True,
    "MINI_MASK_SHAPE": (56, 56),
    "IMAGE_RESIZE_MODE": "square",
    "IMAGE_MIN_DIM": 800,
    "IMAGE_MAX_DIM": 1024,
    "IMAGE_MIN_SCALE": 0,
    "IMAGE_CHANNEL_COUNT": 3,
    "TRAIN_ROIS_PER_IMAGE": 200,
    "ROI_POSITIVE_RATIO": 0.33,
    "POOL_SIZE": 7,
    "MASK_POOL_SIZE": 14,
    "MASK_SHAPE": [28, 28],
    "MAX_GT_INSTANCES": 100,
    "DETECTION_MAX_INSTANCES": 100,
    "DETECTION_MIN_CONFIDENCE": 0.7,
    "DETECTION_NMS_THRESHOLD": 0.3,
    "LEARNING_RATE": 0.001,
    "LEARNING_MOMENTUM": 0.9,
    "WEIGHT_DECAY": 0.0001,
    "LOSS_WEIGHTS": {
        "rpn_class_loss": 1.0,
        "rpn_bbox_loss": 1.0,
        "mrcnn_class_loss": 1.0,
        "mrcnn_bbox_loss": 1.0,
        "mrcnn_mask_loss": 1.0,
    },
    "USE_RPN_ROIS": True,
    "TRAIN_BN": False,
    "GRADIENT_CLIP_NORM": 5.0,
}


def test_defaults_are_matterports():
    config = Config()
    for name, value in MATTERPORT_DEFAULTS.items():
        assert getattr(config, name) == value, name
    np.testing.assert_array_equal(config.MEAN_PIXEL, [123.7, 116.8, 103.9])
    np.testing.assert_array_equal(config.RPN_BBOX_STD_DEV, [0.1, 0.1, 0.2, 0.2])
    np.testing.assert_array_equal(config.BBOX_STD_DEV, [0.1, 0.1, 0.2, 0.2])


def test_computed_attributes_follow_the_subclass():
    class Mine(Config):
        NAME = "mine"
        GPU_COUNT = 2
        IMAGES_PER_GPU = 3
        NUM_CLASSES = 4
        IMAGE_MAX_DIM = 512

    config = Mine()
    assert config.BATCH_SIZE == 6
    np.testing.assert_array_equal(config.IMAGE_SHAPE, [512, 512, 3])
    assert config.IMAGE_META_SIZE == 1 + 3 + 3 + 4 + 1 + 4


def test_display_prints_every_setting(capsys):
    TinyConfig().display()
    lines = capsys.readouterr().out.splitlines()
    assert "Configurations:" in lines
    by_name = {
        line.split()[0]: line.split(None, 1)[1]
        for line in lines
        if line and line[0].isupper() and " " in line
    }
    assert by_name["NAME"] == "tiny"
    assert by_name["BATCH_SIZE"] == "2"
    assert by_name["IMAGE_META_SIZE"] == str(12 + 3)


def test_mapping_onto_mrcnn_config():
    mrcnn = to_mrcnn_config(TinyConfig())
    assert isinstance(mrcnn, MrcnnConfig)
    assert mrcnn.num_classes == 3
    assert mrcnn.images_per_batch == 2
    assert mrcnn.backbone == "tiny" and mrcnn.norm == "batch_norm"
    assert mrcnn.rpn_anchor_ratios == (0.5, 1, 2)
    assert mrcnn.mean_pixel == (123.7, 116.8, 103.9)
    assert mrcnn.mini_mask_shape == (28, 28) and mrcnn.mask_shape == (28, 28)
    assert mrcnn.image_meta_size == TinyConfig().IMAGE_META_SIZE


@pytest.mark.parametrize(
    ("train_bn", "norm"), [(False, "frozen_bn"), (None, "batch_norm"), (True, "batch_norm")]
)
def test_train_bn_chooses_the_norm_layers(train_bn, norm):
    class Mine(Config):
        NAME = "x"
        NUM_CLASSES = 2
        TRAIN_BN = train_bn

    assert to_mrcnn_config(Mine()).norm == norm


def test_matterport_defaults_map_onto_mrcnn_defaults():
    class Two(Config):
        NAME = "two"
        NUM_CLASSES = 2

    mapped = to_mrcnn_config(Two())
    assert mapped == MrcnnConfig(num_classes=2, image_min_scale=0.0)


@pytest.mark.parametrize(
    ("attribute", "value", "message"),
    [
        ("IMAGE_RESIZE_MODE", "crop", "crop"),
        ("IMAGE_CHANNEL_COUNT", 4, "IMAGE_CHANNEL_COUNT"),
        ("NUM_CLASSES", 1, "num_classes"),
        ("IMAGE_MAX_DIM", 100, "divisible by 64"),
    ],
)
def test_unsupported_settings_raise_with_the_reason(attribute, value, message):
    config = type("Bad", (Config,), {"NAME": "bad", "NUM_CLASSES": 2, attribute: value})()
    with pytest.raises(ValueError, match=message):
        to_mrcnn_config(config)
