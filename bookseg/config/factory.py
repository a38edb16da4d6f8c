"""The one place that turns a Hydra config into model, optimizer and stage objects.

Layers and the training loop never read Hydra configs; everything they need passes through here, and
`config_key` says which config key set each `MrcnnConfig` field (so validation errors name the key).
Lives next to the schema: the config layer sits above the model layer (`bookseg.mrcnn`) and below
everything that builds a model from a config (experiment, inference, analysis).
"""

from __future__ import annotations

from dataclasses import fields

from omegaconf import DictConfig, ListConfig

from bookseg.mrcnn.config import MrcnnConfig

# MrcnnConfig fields set from a config key of another name (the value as given; model.<field> otherwise).
_RENAMED = {
    "rpn_anchor_scales": "anchors.scales",
    "rpn_anchor_ratios": "anchors.ratios",
    "rpn_anchor_stride": "anchors.stride",
    "weight_decay": "optimizer.weight_decay",
    "weight_decay_mode": "optimizer.weight_decay_mode",
}
# MrcnnConfig fields computed from a config key (not its value as given).
_DERIVED = {
    "mini_mask_shape": "model.mini_mask_size",
    "mask_shape": "model.mask_pool_size",
}


def config_key(cfg: DictConfig, field_name: str) -> tuple[str, bool]:
    """The config key `mrcnn_config` sets MrcnnConfig field `field_name` from, and whether the field holds
    that key's value as given (True) or a value computed from it (False: mask_shape from
    model.mask_pool_size). Fields no key sets (fixed matterport constants, num_classes from the data)
    give ("model", False)."""
    if field_name in _RENAMED:
        return _RENAMED[field_name], True
    if field_name in _DERIVED:
        return _DERIVED[field_name], False
    if field_name in cfg.model:
        return f"model.{field_name}", True
    return "model", False


def mrcnn_config(cfg: DictConfig, num_classes: int) -> MrcnnConfig:
    """MrcnnConfig for `cfg.model` + `cfg.anchors` + the optimizer's weight decay; `num_classes` includes
    the background. Every `model` field named like an MrcnnConfig field is passed by name.

    Raises:
        MrcnnConfigError: settings the model cannot be built with (`MrcnnConfig.validate`); its
            `problems` name the fields, `config_key` the keys that set them.
    """
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
    return [stage(cfg, index) for index in range(len(cfg.stages.schedule))]


def stage(cfg: DictConfig, index: int):
    """training.Stage of `cfg.stages.schedule[index]`, its learning rate scaled by `cfg.lr_scale`; raises
    ValueError on values the training loop rejects (see `training.Stage`)."""
    from bookseg.mrcnn.training import Stage

    s = cfg.stages.schedule[index]
    return Stage(layers=s.layers, epochs=int(s.epochs), learning_rate=float(s.learning_rate) * cfg.lr_scale)


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
