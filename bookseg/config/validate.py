"""Checks on config values that types cannot express, with messages naming the key to fix.

Each rule has one home. What the model needs (image sizes divisible by 64, one anchor scale per pyramid
level, norm and precision names, ...) is checked by `MrcnnConfig.validate`, what training needs
(optimizer names, stage names, learning rates) by `bookseg.mrcnn.training`'s `OptimizerSpec` and
`Stage`; this module builds those objects through `bookseg.config.factory` and restates their errors
with the config key that set the value. The rules here are the runner's own (data, folds, metric,
augmentation, ...).

Order: the runner's rules and the model's (no TensorFlow needed) are listed together; the training
objects' rules (which import Keras) only when those pass. `model.weights` is only checked to be a name or an
existing file here: resolving it (a download, or an MLflow run's weights) is the runner's next step
(`bookseg.experiment.fold.check_initial_weights`, reported through `raise_problems` in the same words).
"""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from bookseg.config.factory import config_key, lr_schedule, mrcnn_config, optimizer_spec, stage
from bookseg.data.augment import build_augmentation
from bookseg.data.copy_paste import settings_problems as copy_paste_problems
from bookseg.mrcnn.config import STRATEGIES, MrcnnConfigError
from bookseg.mrcnn.pretrained import is_named

# Per-fold metrics the CV loop aggregates (kept here so validation does not import TensorFlow).
FOLD_METRICS = ("mask_ap", "mask_ap50", "mask_ap75", "box_ap", "box_ap50", "box_ap75", "mask_ap50_matterport")

DATA_KINDS = ("synthetic", "via", "coco", "labelme")
RUNNER_RESIZE_MODES = ("square", "pad64")  # the runner's, narrower than the model's (which also has "none")


class ConfigError(ValueError):
    """A config value bookseg cannot run with; the message names the key and the fix."""


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError listing every problem found in a composed config."""
    problems: list[str] = []
    m = cfg.model
    model_checked = mrcnn_problems(cfg)
    if m.image_resize_mode not in RUNNER_RESIZE_MODES:
        problems.append(f"model.image_resize_mode={m.image_resize_mode!r}: use square or pad64")
        model_checked = [p for p in model_checked if not p.startswith("model.image_resize_mode")]
    if m.image_resize_mode == "pad64" and m.images_per_batch > 1:
        problems.append(
            "model.image_resize_mode=pad64 gives images of different sizes: train with square "
            "(pad64 is for inference) or set model.images_per_batch=1"
        )
    if m.weights and not is_named(m.weights) and not Path(m.weights).expanduser().is_file():
        problems.append(
            f"model.weights={m.weights!r}: no such file (give an h5 file, or coco | imagenet | run:<run id>)"
        )
    problems += model_checked
    a = cfg.anchors
    if a.auto_ratios is not None and a.auto_ratios < 1:
        problems.append(
            f"anchors.auto_ratios={a.auto_ratios} must be >= 1 (or null: as many as anchors.ratios)"
        )

    try:
        build_augmentation(OmegaConf.to_container(cfg.augmentation.transforms, resolve=True))
    except Exception as exc:  # noqa: BLE001 - any instantiation error of a user's transform list
        problems.append(f"augmentation.transforms: {type(exc).__name__}: {exc}")
    copy_paste = OmegaConf.to_container(cfg.augmentation.copy_paste, resolve=True)
    problems += [f"augmentation.copy_paste.{problem}" for problem in copy_paste_problems(**copy_paste)]

    s = cfg.stages
    if not s.schedule:
        problems.append("stages.schedule is empty: give at least one {layers, epochs, learning_rate}")
    for i, stage_cfg in enumerate(s.schedule):
        if stage_cfg.epochs < 1:
            problems.append(f"stages.schedule[{i}].epochs={stage_cfg.epochs} must be >= 1")
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

    if cfg.strategy not in STRATEGIES:
        problems.append(f"strategy={cfg.strategy!r}: use {' or '.join(STRATEGIES)}")

    metrics = {f"cv/{name}_{stat}" for name in FOLD_METRICS for stat in ("mean", "std")}
    if cfg.optimized_metric not in metrics:
        problems.append(f"optimized_metric={cfg.optimized_metric!r}: use one of {sorted(metrics)}")

    if not problems:  # the training objects' own checks: they import Keras, not worth it for a broken config
        problems += optimizer_problems(cfg) + stage_problems(cfg)
    raise_problems(problems)


def raise_problems(problems: list[str]) -> None:
    """Raise ConfigError listing `problems` (one per line), if there are any."""
    if problems:
        raise ConfigError("invalid config:\n  - " + "\n  - ".join(problems))


def keyed(key: str, field_name: str, message: str) -> str:
    """A model-layer `message` about `field_name` restated for config key `key`: its leading
    "<field>" or "unknown <field> " becomes the key ("unknown norm 'x': use ..." -> "model.norm='x': use
    ..."); a message in another form is prefixed with "<key>: "."""
    if match := re.match(rf"unknown {re.escape(field_name)} (?=\S)", message):
        return f"{key}={message[match.end() :]}"
    if re.match(rf"{re.escape(field_name)}\b", message):
        return key + message[len(field_name) :]
    return f"{key}: {message}"


def mrcnn_problems(cfg: DictConfig) -> list[str]:
    """`MrcnnConfig.validate`'s problems with the settings `cfg` gives the model, each naming its config key."""
    try:
        mrcnn_config(cfg, num_classes=2)
    except MrcnnConfigError as error:
        problems = []
        for field_name, message in error.problems:
            key, as_given = config_key(cfg, field_name)
            problems.append(keyed(key, field_name, message) if as_given else f"{key}: {message}")
        return problems
    except ValueError as error:  # a value the model's settings cannot even hold
        return [f"model / anchors: {error}"]
    return []


def optimizer_problems(cfg: DictConfig) -> list[str]:
    """`OptimizerSpec`'s checks (bookseg.mrcnn.training, imports Keras) on `cfg.optimizer`, each naming the
    optimizer.<field> key it rejects (its fields are the keys' names; it checks each field alone)."""
    from bookseg.mrcnn.training import OptimizerSpec

    try:
        optimizer_spec(cfg)
        return []
    except ValueError as error:
        first = f"optimizer: {error}"
    problems = []
    for f in fields(OptimizerSpec):
        try:
            OptimizerSpec(**{f.name: cfg.optimizer[f.name]})
        except ValueError as error:
            problems.append(keyed(f"optimizer.{f.name}", f.name, str(error)))
    return problems or [first]


def stage_problems(cfg: DictConfig) -> list[str]:
    """Each `stages.schedule` entry built as a training `Stage` (imports Keras): its layers a stage name of
    `training.STAGE_REGEXES` or a valid regex, and `Stage`'s own checks (learning rate > 0, ...)."""
    from bookseg.mrcnn.training import STAGE_REGEXES, stage_regex

    names = ", ".join(STAGE_REGEXES)
    problems = []
    for i, stage_cfg in enumerate(cfg.stages.schedule):
        where, layers = f"stages.schedule[{i}]", stage_cfg.layers
        if layers not in STAGE_REGEXES and re.fullmatch(r"\d\+?|[a-z]+", layers):
            problems.append(
                f"{where}.layers={layers!r} is not a known stage: use one of {names} or a regex over layer names"
            )
            continue
        try:
            re.compile(stage_regex(layers))
        except re.error as exc:
            problems.append(
                f"{where}.layers={layers!r} is neither a stage ({names}) nor a valid regex: {exc}"
            )
            continue
        try:
            stage(cfg, i)
        except ValueError as exc:
            scaled = f" (learning_rate x lr_scale={cfg.lr_scale})" if cfg.lr_scale != 1 else ""
            problems.append(f"{where}{scaled}: {exc}")
    return problems


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
