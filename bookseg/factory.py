"""The one place that turns a Hydra config into model, optimizer and stage objects.

Layers and the training loop never read Hydra configs; everything they need passes through here.
"""

from __future__ import annotations

from omegaconf import DictConfig

from bookseg.mrcnn.config import MrcnnConfig


def mrcnn_config(cfg: DictConfig, num_classes: int) -> MrcnnConfig:
    """MrcnnConfig for `cfg.model` + `cfg.anchors`; `num_classes` includes the background."""
    m, a = cfg.model, cfg.anchors
    config = MrcnnConfig(
        backbone=m.backbone,
        tiny_channels=tuple(m.tiny_channels),
        norm=m.norm,
        precision=m.precision,
        num_classes=num_classes,
        top_down_pyramid_size=m.top_down_pyramid_size,
        fpn_classif_fc_layers_size=m.fpn_classif_fc_layers_size,
        rpn_conv_channels=m.rpn_conv_channels,
        mask_head_channels=m.mask_head_channels,
        rpn_anchor_scales=tuple(float(s) for s in a.scales),
        rpn_anchor_ratios=tuple(float(r) for r in a.ratios),
        rpn_anchor_stride=a.stride,
        rpn_nms_threshold=m.rpn_nms_threshold,
        rpn_train_anchors_per_image=m.rpn_train_anchors_per_image,
        pre_nms_limit=m.pre_nms_limit,
        post_nms_rois_training=m.post_nms_rois_training,
        post_nms_rois_inference=m.post_nms_rois_inference,
        image_resize_mode=m.image_resize_mode,
        image_min_dim=m.image_min_dim,
        image_max_dim=m.image_max_dim,
        train_rois_per_image=m.train_rois_per_image,
        roi_positive_ratio=m.roi_positive_ratio,
        use_mini_mask=m.use_mini_mask,
        mini_mask_shape=(m.mini_mask_size, m.mini_mask_size),
        mask_pool_size=m.mask_pool_size,
        mask_shape=(2 * m.mask_pool_size, 2 * m.mask_pool_size),
        max_gt_instances=m.max_gt_instances,
        detection_max_instances=m.detection_max_instances,
        detection_min_confidence=m.detection_min_confidence,
        detection_nms_threshold=m.detection_nms_threshold,
        images_per_batch=m.images_per_batch,
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
