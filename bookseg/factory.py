"""The one place that turns a Hydra config into model, optimizer and stage objects.

Layers and the training loop never read Hydra configs; everything they need passes through here.
"""

from __future__ import annotations

from dataclasses import fields

from omegaconf import DictConfig, ListConfig

from bookseg.mrcnn.config import MrcnnConfig


def mrcnn_config(cfg: DictConfig, num_classes: int) -> MrcnnConfig:
    """MrcnnConfig for `cfg.model` + `cfg.anchors` + the optimizer's weight decay; `num_classes` includes
    the background. Every `model` field named like an MrcnnConfig field is passed by name."""
    m, a = cfg.model, cfg.anchors
    by_name = {
        f.name: tuple(value) if isinstance(value, ListConfig) else value
        for f in fields(MrcnnConfig)
        if (value := m.get(f.name)) is not None
    }
    config = MrcnnConfig(
        **by_name,
        num_classes=num_classes,
        rpn_anchor_scales=tuple(float(s) for s in a.scales),
        rpn_anchor_ratios=tuple(float(r) for r in a.ratios),
        rpn_anchor_stride=a.stride,
        mini_mask_shape=(m.mini_mask_size, m.mini_mask_size),
        mask_shape=(2 * m.mask_pool_size, 2 * m.mask_pool_size),
        weight_decay=cfg.optimizer.weight_decay,
        weight_decay_mode=cfg.optimizer.weight_decay_mode,
    )
    config.validate()
    return config


def stages(cfg: DictConfig):
    """List of training.Stage from `cfg.stages.schedule`, learning rates scaled by `cfg.lr_scale`."""
    from bookseg.mrcnn.training import Stage

    return [
        Stage(layers=s.layers, epochs=int(s.epochs), learning_rate=float(s.learning_rate) * cfg.lr_scale)
        for s in cfg.stages.schedule
    ]


def lr_schedule(cfg: DictConfig):
    """LrSchedule (warm-up and decay within each stage) from `cfg.stages`."""
    from bookseg.mrcnn.lr_schedule import LrSchedule

    s = cfg.stages
    return LrSchedule(
        warmup_steps=s.warmup_steps,
        warmup_factor=s.warmup_factor,
        decay=s.decay,
        step_at=tuple(s.step_at),
        step_gamma=s.step_gamma,
        min_lr_ratio=s.min_lr_ratio,
    )


def optimizer_spec(cfg: DictConfig):
    """training.OptimizerSpec from `cfg.optimizer`."""
    from bookseg.mrcnn.training import OptimizerSpec

    o = cfg.optimizer
    return OptimizerSpec(
        name=o.name,
        momentum=o.momentum,
        clipnorm=o.clipnorm,
        adamw_weight_decay=o.adamw_weight_decay,
        beta_1=o.beta_1,
        beta_2=o.beta_2,
    )
