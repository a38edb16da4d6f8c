"""Each model setting is declared once: `ModelConfig` (the Hydra `model` group) takes its fields' names and
defaults from `MrcnnConfig`, and the factory passes them by name. A new field on either side fails here until
it is wired."""

from dataclasses import fields

from omegaconf import OmegaConf

from bookseg.config.factory import mrcnn_config
from bookseg.config.schema import RUNNER_MODEL_FIELDS, ModelConfig
from bookseg.mrcnn.config import MrcnnConfig

# MrcnnConfig fields the `model` group does not set: fixed matterport constants, or set from other groups.
FIXED = {
    "backbone_strides",
    "rpn_bbox_std_dev",
    "image_min_scale",
    "mean_pixel",
    "pool_size",
    "bbox_std_dev",
    "loss_weights",
}
FROM_ELSEWHERE = {
    "num_classes",
    "rpn_anchor_scales",
    "rpn_anchor_ratios",
    "rpn_anchor_stride",
    "mini_mask_shape",
    "mask_shape",
    "weight_decay",
    "weight_decay_mode",
}


def test_every_model_field_is_an_mrcnn_setting_or_a_runner_one():
    model = {f.name for f in fields(ModelConfig)}
    mrcnn = {f.name for f in fields(MrcnnConfig)}
    assert model - mrcnn == set(RUNNER_MODEL_FIELDS)
    assert mrcnn - model == FIXED | FROM_ELSEWHERE


def test_model_defaults_are_the_mrcnn_defaults_and_reach_the_model_by_name():
    cfg = OmegaConf.create(
        {
            "model": OmegaConf.structured(ModelConfig(name="defaults")),
            "anchors": {"scales": [32, 64, 128, 256, 512], "ratios": [0.5, 1.0, 2.0], "stride": 1},
            "optimizer": {"weight_decay": 0.0001, "weight_decay_mode": "matterport"},
        }
    )
    assert mrcnn_config(cfg, num_classes=2) == MrcnnConfig()
    cfg.model.rpn_conv_channels = 96
    cfg.model.tiny_channels = [8, 16, 32, 64]
    built = mrcnn_config(cfg, num_classes=2)
    assert built.rpn_conv_channels == 96 and built.tiny_channels == (8, 16, 32, 64)
