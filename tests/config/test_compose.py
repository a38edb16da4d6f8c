"""Every experiment and sweep preset composes, passes validation and builds model settings."""

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from bookseg.config import factory
from bookseg.config.compose import CONF_DIR, compose_config
from bookseg.config.validate import ConfigError, config_warnings, validate

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
REQUIRED = {
    "anchors_small",
    "anchors_tiny",
    "anchors_spines",
    "aug_flips",
    "aug_flips_rotate",
    "optimizer_sgd_clip",
    "optimizer_adamw",
    "weight_decay_high",
    "stages_heads_only",
    "stages_heads_4plus_all",
    "smoke",
    "anchors_auto",
    "aug_copy_paste",
    "pretrain_synthetic",
    "real_photos_cpu",
}

_compose = compose_config


def test_required_experiments_exist():
    assert REQUIRED <= set(EXPERIMENTS)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_and_validates(name):
    cfg = _compose([f"+experiment={name}"])
    validate(cfg)
    config = factory.mrcnn_config(cfg, num_classes=2)
    assert len(config.rpn_anchor_scales) == 5
    stages = factory.stages(cfg)
    assert stages and all(s.epochs >= 1 for s in stages)
    header = (CONF_DIR / "experiment" / f"{name}.yaml").read_text().splitlines()
    assert header[0] == "# @package _global_"
    assert any(line.startswith("# Question:") for line in header[:4])
    assert any(f"+experiment={name}" in line for line in header[:6])


def test_experiments_change_what_they_say():
    base = _compose()
    assert list(_compose(["+experiment=anchors_small"]).anchors.scales) == [16, 32, 64, 128, 256]
    assert list(base.anchors.scales) == [32, 64, 128, 256, 512]
    assert list(_compose(["+experiment=anchors_tiny"]).anchors.scales) == [8, 16, 32, 64, 128]
    spines = _compose(["+experiment=anchors_spines"]).anchors.ratios
    assert min(spines) <= 0.25
    assert [s.layers for s in _compose(["+experiment=stages_heads_4plus_all"]).stages.schedule] == [
        "heads",
        "4+",
        "all",
    ]
    assert _compose(["+experiment=optimizer_adamw"]).optimizer.name == "adamw"
    assert base.model.precision == "float32"
    bf16 = _compose(["+experiment=precision_bf16"])
    assert factory.mrcnn_config(bf16, num_classes=2).precision == "mixed_bfloat16"
    wd = _compose(["+experiment=weight_decay_high"]).optimizer
    assert wd.weight_decay > base.optimizer.weight_decay and wd.weight_decay_mode == "l2"


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF_DIR / "sweep").glob("*.yaml")))
def test_sweep_presets_compose(name):
    cfg = compose_config([f"+sweep={name}"], return_hydra_config=True)
    validate(cfg)


@pytest.mark.parametrize(
    "override, message",
    [
        (["model.image_max_dim=300"], "divisible by 64"),
        (["anchors.scales=[32,64,128]"], "one scale per level"),
        (["cv.k=1"], "k >= 2"),
        (["+stages.schedule=[{layers: head, epochs: 1, learning_rate: 0.01}]"], "not a known stage"),
        (["optimizer.name=adam"], "sgd or adamw"),
        (["data=via"], "data.path is required"),
        (["optimized_metric=mask_ap50"], "optimized_metric='mask_ap50': use one of"),
        (["model.image_resize_mode=pad64"], "pad64 gives images of different sizes"),
        (["model.weights=/nonexistent/mask_rcnn_coco.h5"], "no such file"),
        (["augmentation.transforms=[{_target_: albumentations.NoSuchFlip}]"], "augmentation.transforms"),
        (["model.roi_positive_ratio=0"], "roi_positive_ratio"),
        (["model.precision=float16"], "model.precision='float16': use float32 or mixed_bfloat16"),
        (["model.norm=layer_norm"], "model.norm='layer_norm': use frozen_bn, batch_norm, group_norm"),
        (["stages.decay=linear"], "unknown learning-rate decay 'linear'"),
        (["stages.warmup_factor=0"], "warmup_factor in"),
        (["stages.step_at=[1.5]"], "step_at must be fractions"),
    ],
)
def test_bad_values_are_rejected_with_the_key(override, message):
    # `+stages.schedule=` would append; use a plain override for that case.
    override = [o.lstrip("+") for o in override]
    cfg = _compose(override)
    with pytest.raises(ConfigError, match=message):
        validate(cfg)


def test_from_scratch_presets_normalise_and_frozen_bn_from_scratch_is_warned():
    """Every preset that trains from random initialisation uses real normalisation; frozen BN (right for
    pretrained weights) without weights gets a warning that says what to do."""
    for model in ("cpu", "cpu512", "tiny"):
        cfg = _compose([f"model={model}"])
        assert cfg.model.norm == "batch_norm" and config_warnings(cfg) == []
    (warning,) = config_warnings(_compose(["model.norm=frozen_bn"]))
    assert "no normalisation at all" in warning and "model.norm=batch_norm" in warning
    assert config_warnings(_compose(["model=resnet50"])) != []  # no weights: from scratch, frozen BN
    assert _compose(["model=resnet50"]).model.norm == "frozen_bn"  # for mask_rcnn_coco.h5 / ImageNet weights


def test_mask_head_resolution_is_one_setting():
    config = factory.mrcnn_config(_compose(["model.mask_pool_size=21"]), num_classes=2)
    assert (config.mask_pool_size, config.mask_shape) == (21, (42, 42))


def test_scratch_long_schedule_warms_up_and_decays():
    cfg = _compose(["stages=scratch_long"])
    schedule, (stage,) = factory.lr_schedule(cfg), factory.stages(cfg)
    steps = stage.epochs * cfg.stages.steps_per_epoch
    rates = [float(schedule.rate(stage.learning_rate, step, steps, 0)) for step in (0, 100, steps - 1)]
    assert rates[0] < 0.01 * stage.learning_rate  # warm-up starts low
    assert rates[1] == pytest.approx(
        stage.learning_rate, rel=0.03
    )  # full rate (cosine just begun) after 100 steps
    assert rates[2] == pytest.approx(0.01 * stage.learning_rate, rel=0.05)  # cosine down to 1%


def test_typos_are_rejected_by_the_schema():
    with pytest.raises(ConfigCompositionException):
        _compose(["optimizer.momentun=0.8"])
    with pytest.raises(ConfigCompositionException):
        _compose(["cv.k=two"])


def test_augmentation_presets_are_albumentations_targets():
    for preset in ("none", "hflip", "flips", "flips_rotate", "heavy"):
        cfg = _compose([f"augmentation={preset}"])
        for item in OmegaConf.to_container(cfg.augmentation.transforms):
            assert item["_target_"].startswith("albumentations.")
