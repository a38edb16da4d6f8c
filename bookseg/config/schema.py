"""Typed schema of `conf/`: one dataclass per config group, registered in Hydra's ConfigStore.

Hydra checks every YAML option and command-line override against these types (a typo such as
`optimizer.momentun=0.8` or `cv.k=two` is rejected with the key's name); `bookseg.config.validate`
then checks the values that a type cannot express (image size divisible by 64, one anchor scale per
pyramid level, known stage names, k >= 2, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from bookseg.mrcnn.config import MrcnnConfig


@dataclass
class SyntheticConfig:
    n_images: int = 48  # shelves generated for the built-in data set
    seed: int = 0  # same seed, same bytes
    height: int = 256
    width: int = 256
    style: str = "default"  # default | photo: a preset of bookseg.data.synthetic.STYLES


@dataclass
class TestDataConfig:
    """A held-out test set, scored by every fold model; never trained on, never in a fold."""

    path: Optional[str] = None  # annotation file (or folder); None: no test set
    kind: Optional[str] = None  # via | coco | labelme; None: same as data.kind
    images_dir: Optional[str] = None  # default: next to the annotation file


@dataclass
class DataConfig:
    kind: str = "synthetic"  # synthetic | via | coco | labelme
    path: Optional[str] = None  # annotation file (or folder); unused for synthetic
    images_dir: Optional[str] = None  # default: next to the annotation file
    # region attribute holding the class; None: every region is default_class
    class_attribute: Optional[str] = None
    default_class: str = "book"
    group_regex: Optional[str] = None  # file-name regex whose first group names the fold group
    group_attribute: Optional[str] = None  # or a VIA file attribute naming the group
    # synthetic data lives here
    cache_dir: str = "${oc.env:BOOKSEG_CACHE,${hydra:runtime.cwd}/.cache/bookseg}"
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    test: TestDataConfig = field(default_factory=TestDataConfig)


_MODEL = MrcnnConfig  # defaults (and what each setting means) are declared once, in bookseg/mrcnn/config.py


@dataclass
class ModelConfig:
    """The `model` group. A field named like an `MrcnnConfig` field is that setting, with its default, and
    reaches the model by name (`bookseg.config.factory.mrcnn_config`); the others are `RUNNER_MODEL_FIELDS`."""

    name: str = MISSING
    backbone: str = _MODEL.backbone  # resnet50 | resnet101 | tiny
    tiny_channels: list[int] = field(default_factory=lambda: list(_MODEL.tiny_channels))
    image_resize_mode: str = _MODEL.image_resize_mode  # square | pad64 (train with square)
    image_min_dim: int = _MODEL.image_min_dim
    image_max_dim: int = _MODEL.image_max_dim
    top_down_pyramid_size: int = _MODEL.top_down_pyramid_size
    fpn_classif_fc_layers_size: int = _MODEL.fpn_classif_fc_layers_size
    rpn_conv_channels: int = _MODEL.rpn_conv_channels
    mask_head_channels: int = _MODEL.mask_head_channels
    norm: str = _MODEL.norm  # frozen_bn (pretrained weights) | batch_norm | group_norm (from scratch)
    precision: str = _MODEL.precision  # float32 | mixed_bfloat16 (bf16 compute, float32 weights and outputs)
    images_per_batch: int = _MODEL.images_per_batch
    rpn_train_anchors_per_image: int = _MODEL.rpn_train_anchors_per_image
    rpn_nms_threshold: float = _MODEL.rpn_nms_threshold
    pre_nms_limit: int = _MODEL.pre_nms_limit
    post_nms_rois_training: int = _MODEL.post_nms_rois_training
    post_nms_rois_inference: int = _MODEL.post_nms_rois_inference
    train_rois_per_image: int = _MODEL.train_rois_per_image
    roi_positive_ratio: float = _MODEL.roi_positive_ratio
    max_gt_instances: int = _MODEL.max_gt_instances
    use_mini_mask: bool = _MODEL.use_mini_mask
    mini_mask_size: int = _MODEL.mini_mask_shape[0]  # -> mini_mask_shape (square)
    # ROI side (px) pooled from P4 (FPN's 224); 448 pools every ROI one level finer (thin books at 512 px)
    roi_canonical_size: float = _MODEL.roi_canonical_size
    # extra box heads, one IoU threshold each (Cascade R-CNN): [] = one head; [0.6] refines the boxes once more
    cascade_iou_thresholds: list[float] = field(default_factory=lambda: list(_MODEL.cascade_iou_thresholds))
    mask_pool_size: int = _MODEL.mask_pool_size  # ROI Align size of the mask head; its masks are twice that
    # the mask head also sees each cell's position in its ROI: it can outline the book the box is centred on
    mask_head_coordinates: bool = _MODEL.mask_head_coordinates
    detection_max_instances: int = _MODEL.detection_max_instances
    detection_min_confidence: float = _MODEL.detection_min_confidence
    detection_nms_threshold: float = _MODEL.detection_nms_threshold
    # start from: path (h5) | coco | imagenet | run:<run id> (bookseg.inference.starting_weights); None: from scratch
    weights: Optional[str] = None
    weights_exclude: list[str] = field(default_factory=list)  # layer names not to load


# `model` fields that are not MrcnnConfig fields: the runner's, or mapped to one (mini_mask_size).
RUNNER_MODEL_FIELDS = ("name", "weights", "weights_exclude", "mini_mask_size")


@dataclass
class AnchorsConfig:
    name: str = "default"  # the preset (conf/anchors/<name>.yaml), logged as a param like the other groups'
    scales: list[float] = field(default_factory=lambda: [32, 64, 128, 256, 512])  # one per level P2..P6, px
    ratios: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])  # width / height
    stride: int = 1  # anchors every N feature cells
    auto: bool = False  # fit scales and ratios to each fold's training boxes, starting from the ones above
    auto_ratios: Optional[int] = None  # with auto: how many ratios to fit; null: as many as `ratios` lists


@dataclass
class CopyPasteConfig:
    """Copy-paste of books from the fold's training photos (bookseg.data.copy_paste), before `transforms`."""

    p: float = 0.0  # probability that a training image gets pasted books; 0: off
    max_instances: int = 10  # books pasted per image: uniform in 1..max_instances, all from one source photo
    scale: list[float] = field(default_factory=lambda: [0.8, 1.25])  # [lo, hi] random resize of pasted books
    hflip: float = 0.5  # probability that a pasted book is mirrored left-right
    min_visible_pixels: int = 1  # books that pasting covers down to fewer visible pixels are removed


@dataclass
class AugmentationConfig:
    name: str = "none"
    transforms: list[Any] = field(default_factory=list)  # albumentations items with `_target_`
    copy_paste: CopyPasteConfig = field(default_factory=CopyPasteConfig)  # off unless copy_paste.p > 0


@dataclass
class OptimizerConfig:
    name: str = "sgd"  # sgd | adamw
    momentum: float = 0.9  # sgd
    clipnorm: Optional[float] = 5.0  # global gradient norm; null: no clipping
    weight_decay: float = 0.0001  # L2 added to the loss (see weight_decay_mode)
    weight_decay_mode: str = "matterport"  # matterport: wd * mean(w^2) per tensor | l2: wd * sum(w^2)
    adamw_weight_decay: float = 0.0001  # decoupled decay of AdamW
    beta_1: float = 0.9
    beta_2: float = 0.999


@dataclass
class StageConfig:
    layers: str = "heads"  # heads | 3+ | 4+ | 5+ | all | a custom regex over layer names
    epochs: int = 1  # epochs of this stage (not cumulative)
    learning_rate: float = 0.001


@dataclass
class StagesConfig:
    name: str = "default"
    schedule: list[StageConfig] = field(default_factory=lambda: [StageConfig()])
    steps_per_epoch: int = 100
    validation_steps: int = 10
    # Learning-rate schedule within each stage (bookseg.mrcnn.lr_schedule.LrSchedule)
    warmup_steps: int = 0  # linear warm-up over the first training steps; 0: none
    warmup_factor: float = 0.001  # warm-up starts at this fraction of the stage's rate
    decay: str = "constant"  # constant (matterport) | step | cosine, over each stage
    step_at: list[float] = field(
        default_factory=lambda: [0.67, 0.89]
    )  # step decay points, fractions of a stage
    step_gamma: float = 0.1  # step decay factor
    min_lr_ratio: float = 0.0  # cosine ends at this fraction of the stage's rate


@dataclass
class CVConfig:
    k: int = 3  # folds
    folds: Optional[list[int]] = None  # which folds to run (None: all); e.g. [0] while debugging
    seed: int = 0
    stratify: bool = False  # balance instance counts across folds (StratifiedGroupKFold)
    final: bool = False  # after the folds, train one model on every training image (child run `final`)


@dataclass
class TrackingConfig:
    tracking_uri: Optional[str] = None  # None: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the cwd
    experiment: str = "bookseg/${study}"  # one MLflow experiment per study: all its runs are comparable
    log_weights: bool = True  # final weights of each fold as an artifact
    overlays: int = 4  # validation overlay images per fold
    tensorboard: bool = True
    # MLflow registered model name: the job's model (final, else best fold) as a servable pyfunc
    register_model: Optional[str] = None


@dataclass
class EvalConfig:
    min_confidence: float = 0.0  # detections kept for AP (COCO practice: score threshold 0)
    max_images: Optional[int] = None  # evaluate on at most this many validation images


@dataclass
class BooksegConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    anchors: AnchorsConfig = field(default_factory=AnchorsConfig)
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    stages: StagesConfig = field(default_factory=StagesConfig)
    cv: CVConfig = field(default_factory=CVConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tags: list[str] = field(default_factory=list)  # free labels, logged as an MLflow tag
    lr_scale: float = 1.0  # multiplies every stage's learning rate (one knob for sweepers)
    study: str = "default"  # MLflow experiment is bookseg/<study>; sweep presets set their own
    seed: int = 0
    # tf.distribute strategy of training: default (one device) | mirrored (every GPU of this machine;
    # the global batch is model.images_per_batch x GPUs). See bookseg/mrcnn/distribute.py.
    strategy: str = "default"
    resume: bool = True  # continue an unfinished run of the same config (checkpoints + MLflow runs)
    work_dir: str = "${hydra:runtime.cwd}/outputs/runs"  # checkpoints and folds, keyed by config hash
    optimized_metric: str = "cv/mask_ap50_mean"  # returned to sweepers


def register_configs() -> None:
    """Register the schema as `base_config`; conf/config.yaml lists it first, so every group is typed."""
    ConfigStore.instance().store(name="base_config", node=BooksegConfig)
