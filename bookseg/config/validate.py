"""Checks on config values that types cannot express, with messages naming the key to fix."""

from __future__ import annotations

import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from bookseg.data.augment import build_augmentation
from bookseg.data.copy_paste import settings_problems as copy_paste_problems
from bookseg.factory import lr_schedule, mrcnn_config
from bookseg.mrcnn.config import NORMS, PRECISIONS
from bookseg.mrcnn.pretrained import WeightsSourceError, is_named, resolve_config_weights

# Per-fold metrics the CV loop aggregates (kept here so validation does not import TensorFlow).
FOLD_METRICS = ("mask_ap", "mask_ap50", "mask_ap75", "box_ap", "box_ap50", "box_ap75", "mask_ap50_matterport")

STAGE_NAMES = ("heads", "3+", "4+", "5+", "all")
DATA_KINDS = ("synthetic", "via", "coco", "labelme")
PYRAMID_LEVELS = 5  # P2..P6


class ConfigError(ValueError):
    """A config value bookseg cannot run with; the message names the key and the fix."""


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError listing every problem found in a composed config."""
    problems: list[str] = []
    m = cfg.model
    if m.image_resize_mode not in ("square", "pad64"):
        problems.append(f"model.image_resize_mode={m.image_resize_mode!r}: use square or pad64")
    if m.image_max_dim % 64:
        problems.append(
            f"model.image_max_dim={m.image_max_dim} is not divisible by 64 (the FPN halves the image 6 times)"
        )
    if m.image_resize_mode == "pad64" and m.images_per_batch > 1:
        problems.append(
            "model.image_resize_mode=pad64 gives images of different sizes: train with square "
            "(pad64 is for inference) or set model.images_per_batch=1"
        )
    if m.backbone == "tiny" and len(m.tiny_channels) != 4:
        problems.append(f"model.tiny_channels needs 4 widths (C2..C5), got {list(m.tiny_channels)}")
    if m.images_per_batch < 1:
        problems.append("model.images_per_batch must be >= 1")
    if m.norm not in NORMS:
        problems.append(f"model.norm={m.norm!r}: use {', '.join(NORMS)}")
    if m.precision not in PRECISIONS:
        problems.append(f"model.precision={m.precision!r}: use {' or '.join(PRECISIONS)}")
    if not 0 < m.roi_positive_ratio <= 1:
        problems.append(f"model.roi_positive_ratio={m.roi_positive_ratio} must be in (0, 1]")
    if m.weights and not is_named(m.weights) and not Path(m.weights).expanduser().is_file():
        problems.append(
            f"model.weights={m.weights!r}: no such file (give an h5 file, or coco | imagenet | run:<run id>)"
        )
    a = cfg.anchors
    if len(a.scales) != PYRAMID_LEVELS:
        problems.append(
            f"anchors.scales has {len(a.scales)} values but the pyramid has {PYRAMID_LEVELS} levels "
            f"(P2..P6): give one scale per level, e.g. [32, 64, 128, 256, 512]"
        )
    if any(s <= 0 for s in a.scales) or any(r <= 0 for r in a.ratios) or not a.ratios:
        problems.append("anchors.scales and anchors.ratios must be positive (and ratios non-empty)")
    if a.stride < 1:
        problems.append("anchors.stride must be >= 1")
    if a.auto_ratios is not None and a.auto_ratios < 1:
        problems.append(
            f"anchors.auto_ratios={a.auto_ratios} must be >= 1 (or null: as many as anchors.ratios)"
        )

    o = cfg.optimizer
    if o.name not in ("sgd", "adamw"):
        problems.append(f"optimizer.name={o.name!r}: use sgd or adamw")
    if o.clipnorm is not None and o.clipnorm <= 0:
        problems.append("optimizer.clipnorm must be positive or null")
    try:
        build_augmentation(OmegaConf.to_container(cfg.augmentation.transforms, resolve=True))
    except Exception as exc:  # noqa: BLE001 - any instantiation error of a user's transform list
        problems.append(f"augmentation.transforms: {type(exc).__name__}: {exc}")
    copy_paste = OmegaConf.to_container(cfg.augmentation.copy_paste, resolve=True)
    problems += [f"augmentation.copy_paste.{problem}" for problem in copy_paste_problems(**copy_paste)]

    s = cfg.stages
    if not s.schedule:
        problems.append("stages.schedule is empty: give at least one {layers, epochs, learning_rate}")
    for i, stage in enumerate(s.schedule):
        where = f"stages.schedule[{i}]"
        if stage.layers not in STAGE_NAMES:
            try:
                re.compile(stage.layers)
            except re.error as exc:
                problems.append(
                    f"{where}.layers={stage.layers!r} is neither a stage ({', '.join(STAGE_NAMES)}) "
                    f"nor a valid regex: {exc}"
                )
            if re.fullmatch(r"\d\+?|[a-z]+", stage.layers) and stage.layers not in STAGE_NAMES:
                problems.append(
                    f"{where}.layers={stage.layers!r} is not a known stage: use one of {', '.join(STAGE_NAMES)} "
                    f"or a regex over layer names"
                )
        if stage.epochs < 1:
            problems.append(f"{where}.epochs={stage.epochs} must be >= 1")
        if stage.learning_rate * cfg.lr_scale <= 0:
            problems.append(f"{where}.learning_rate must be positive")
    if s.steps_per_epoch < 1 or s.validation_steps < 0:
        problems.append("stages.steps_per_epoch must be >= 1 and stages.validation_steps >= 0")
    try:
        lr_schedule(cfg)
    except ValueError as exc:
        problems.append(f"stages (learning-rate schedule): {exc}")

    c = cfg.cv
    if c.k < 2:
        problems.append(f"cv.k={c.k}: cross-validation needs k >= 2")
    if c.folds is not None:
        bad = [f for f in c.folds if not 0 <= f < c.k]
        if bad:
            problems.append(f"cv.folds={list(c.folds)} has folds outside 0..{c.k - 1}: {bad}")

    d = cfg.data
    if d.kind not in DATA_KINDS:
        problems.append(f"data.kind={d.kind!r}: use one of {', '.join(DATA_KINDS)}")
    if d.kind != "synthetic" and not d.path:
        problems.append(f"data.path is required for data={d.kind} (the annotation file or folder)")
    from bookseg.data.synthetic import STYLES

    if d.synthetic.style not in STYLES:
        problems.append(f"data.synthetic.style={d.synthetic.style!r}: use one of {', '.join(STYLES)}")
    if d.group_regex:
        try:
            re.compile(d.group_regex)
        except re.error as exc:
            problems.append(f"data.group_regex={d.group_regex!r} is not a valid regex: {exc}")

    if not problems:
        try:  # the model's own checks (backbone, batch, ROI ratio, ...), kept in one place
            mrcnn_config(cfg, num_classes=2)
        except ValueError as exc:
            problems.append(f"model / anchors: {exc}")
    metrics = {f"cv/{name}_{stat}" for name in FOLD_METRICS for stat in ("mean", "std")}
    if cfg.optimized_metric not in metrics:
        problems.append(f"optimized_metric={cfg.optimized_metric!r}: use one of {sorted(metrics)}")

    if (
        not problems
    ):  # last: a named file may download (hundreds of MB) and is not worth it for a broken config
        problems += weights_problems(cfg)

    if problems:
        raise ConfigError("invalid config:\n  - " + "\n  - ".join(problems))


def weights_problems(cfg: DictConfig) -> list[str]:
    """`model.weights` resolved to a local file (`coco` / `imagenet` downloaded and verified on first use,
    `run:<id>` fetched from MLflow), so a missing or corrupt file stops the job before anything trains; for
    `run:<id>`, also whether the run's model has as many anchor ratios as this config."""
    try:
        resolved = resolve_config_weights(cfg)
    except WeightsSourceError as exc:
        return [str(exc)]
    if resolved is None or resolved.run_id is None:
        return []
    a = cfg.anchors
    mismatch = resolved.mismatch_hint(int(a.auto_ratios if a.auto and a.auto_ratios else len(a.ratios)))
    return [f"model.weights={cfg.model.weights!r}: {mismatch}"] if mismatch else []


def config_warnings(cfg: DictConfig) -> list[str]:
    """Settings that run but are very likely a mistake, each with the fix."""
    warnings = []
    if cfg.model.weights == "coco" and cfg.model.backbone != "resnet101":
        warnings.append(
            f"model.weights=coco is matterport's ResNet-101 Mask R-CNN, model.backbone={cfg.model.backbone}: not all "
            "of its layers fit (one of another shape stops the load; list such layers in model.weights_exclude). "
            "Use model=resnet101, or model.weights=imagenet for a ResNet-50"
        )
    if cfg.model.norm == "frozen_bn" and not cfg.model.weights:
        warnings.append(
            "model.norm=frozen_bn without model.weights: BatchNorm stays frozen at its initial statistics "
            "(mean 0, variance 1), so the network trains with no normalisation at all and learns real photos "
            "poorly. Train from scratch with model.norm=batch_norm (what the CPU presets use; group_norm needs a "
            "longer schedule); keep frozen_bn for pretrained weights."
        )
    return warnings
