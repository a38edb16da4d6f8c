# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Inspect the model: anchors, RPN, proposals, detections and masks
#
# Follows one image through Mask R-CNN, stage by stage, like matterport's `inspect_model.ipynb`:
#
# 1. the anchors of every pyramid level;
# 2. the RPN training targets of the image (positive anchors and the boxes their deltas lead to);
# 3. the RPN's predictions: best-scored anchors, their refined boxes, the proposals left after NMS;
# 4. the classifier head: proposals scored and refined, then the final detections;
# 5. the mask head: 28 x 28 masks and the same masks pasted into the photo;
# 6. weight statistics and histograms of a few layers.
#
# By default a tiny model is trained here for about 20 seconds on a few easy synthetic shelves
# (one row of upright books), so every stage shows something meaningful on a CPU. Set `RUN_ID` to an
# MLflow run of `python -m bookseg.run` (or `WEIGHTS_FILE` to a `.weights.h5`) to inspect a trained
# model instead.

# %%
import os
from pathlib import Path

import keras
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import tensorflow as tf
from matplotlib.patches import Rectangle

from bookseg.config import factory
from bookseg.config.compose import compose_config
from bookseg.data.images import load_image_rgb
from bookseg.data.readers import load_dataset
from bookseg.data.synthetic import ShelfStyle, synthetic_dataset_path
from bookseg.data.viz import draw_instances, side_by_side
from bookseg.mrcnn.anchors import anchors_for, backbone_shapes, pixel_anchors_for
from bookseg.mrcnn.boxes import decode_boxes, denorm_boxes, iou_matrix
from bookseg.mrcnn.images import parse_image_meta, unmold_detections, unmold_image
from bookseg.mrcnn.inputs import load_training_example, make_dataset
from bookseg.mrcnn.model import MaskRCNN, named_weight_layers
from bookseg.mrcnn.proposals import propose
from bookseg.mrcnn.rpn import run_rpn
from bookseg.mrcnn.training import Stage, train_stages

# %% tags=["parameters"]
RUN_ID = None  # MLflow run of `python -m bookseg.run`: a job (parent) run, or one fold's child run
FOLD = None  # with a parent RUN_ID: which fold's weights (None: the fold with the best mask_ap50)
WEIGHTS_FILE = None  # or a `.weights.h5` of a whole MaskRCNN (a run's weights artifact or checkpoint)
CONFIG_FILE = None  # the `config.yaml` the WEIGHTS_FILE's run logged (None: the default config)
# The model trained here when neither RUN_ID nor WEIGHTS_FILE is set:
MODEL_OVERRIDES = ["model=tiny", "anchors=spines", "optimizer=adamw"]  # Hydra overrides of conf/config.yaml
TRAIN_IMAGES = 8  # easy synthetic shelves to train on; 2 more are held out for the inspection
EPOCHS, STEPS_PER_EPOCH, LEARNING_RATE = 5, 20, 3e-3
SEED = 0
MIN_CONFIDENCE = 0.5  # detection score threshold for the final detections
TOP_ANCHORS = 30  # best-scored RPN anchors drawn
CACHE_DIR = Path(os.environ.get("BOOKSEG_CACHE", Path.cwd() / ".cache" / "bookseg"))


# %%
def draw_boxes(ax, boxes, color, *, linestyle="-", linewidth=1.0, alpha=1.0):
    """Draw (y1, x1, y2, x2) pixel boxes (y2/x2 exclusive) on a matplotlib axis."""
    for y1, x1, y2, x2 in np.asarray(boxes, np.float64).reshape(-1, 4):
        ax.add_patch(
            Rectangle(
                (x1 - 0.5, y1 - 0.5),
                x2 - x1,
                y2 - y1,
                fill=False,
                edgecolor=color,
                linestyle=linestyle,
                linewidth=linewidth,
                alpha=alpha,
            )
        )


def show(ax, image, title):
    ax.imshow(image)
    ax.set_title(title, fontsize=9)
    ax.axis("off")


# %% [markdown]
# ## The model
#
# Loaded from MLflow or a file, or trained here. Training uses the library's input pipeline and
# staged training loop (`make_dataset`, `train_stages`), exactly as a fold of `bookseg.run` does.

# %%
keras.utils.set_random_seed(SEED)
tf.config.experimental.enable_op_determinism()  # the same model and figures on every run
if RUN_ID or WEIGHTS_FILE:
    from bookseg.experiment.data import load_data
    from bookseg.inference.trained_model import load_from_run, load_from_weights

    if RUN_ID:
        trained = load_from_run(RUN_ID, fold=FOLD)
    else:
        trained = load_from_weights(WEIGHTS_FILE, config_path=CONFIG_FILE)
    print(trained.source)
    model, class_names = trained.model, trained.class_names
    records = load_data(trained.cfg).records
    inspect_records = records[-2:]  # the model may have trained on these: it is an inspection, not a test
else:
    cfg = compose_config(MODEL_OVERRIDES)
    easy = ShelfStyle(
        books_per_image=(3, 8),
        empty_rate=0.0,
        rows=(1,),
        stack_rate=0.0,
        object_rate=0.0,
        front_book_rate=0.0,
        tilt_rate=0.0,
    )
    size = (cfg.model.image_max_dim, cfg.model.image_max_dim)
    dataset = load_dataset(synthetic_dataset_path(CACHE_DIR, TRAIN_IMAGES + 2, SEED, size, style=easy))
    class_names = dataset.class_names
    records, inspect_records = dataset.records[:TRAIN_IMAGES], dataset.records[TRAIN_IMAGES:]
    model = MaskRCNN(factory.mrcnn_config(cfg, num_classes=len(class_names) + 1))
    history = train_stages(
        model,
        make_dataset(records, model.config, class_names, seed=SEED),
        None,
        [Stage("all", EPOCHS, LEARNING_RATE)],
        factory.optimizer_spec(cfg),
        steps_per_epoch=STEPS_PER_EPOCH,
        validation_steps=None,
        verbose=0,
    )
    losses = pd.DataFrame(history).set_index("epoch")
    print(losses.filter(like="loss").round(3).to_string())

config = model.config
print(f"backbone {config.backbone}, image {config.image_shape}, classes {['BG', *class_names]}")
print(f"anchor scales {config.rpn_anchor_scales}, ratios (w/h) {config.rpn_anchor_ratios}")

# %% [markdown]
# ## The image, as the network sees it
#
# `load_training_example` builds the molded input (resized, padded to `image_max_dim`, mean pixel
# subtracted) with its ground truth and RPN targets, as the training pipeline does (no augmentation).

# %%
record = inspect_records[-1]
class_ids_by_name = {name: i + 1 for i, name in enumerate(class_names)}
example = load_training_example(record, config, class_ids_by_name, rng=np.random.default_rng(SEED))
molded = example["input_image"]
image = unmold_image(molded, config)  # uint8 molded pixels, for drawing
meta = parse_image_meta(example["input_image_meta"])
gt_valid = example["input_gt_class_ids"] > 0
gt_boxes = example["input_gt_boxes"][gt_valid]
print(
    f"{record.image_id}: original {meta['original_image_shape'].tolist()}, molded {meta['image_shape'].tolist()}, "
    f"window {meta['window'].tolist()}, scale {float(meta['scale']):.3f}, {int(gt_valid.sum())} GT instances"
)

# %% [markdown]
# ## Anchors
#
# One anchor per feature cell and ratio on each level P2..P6 (`anchors_for` / `pixel_anchors_for`,
# constants of the molded image size, not weights). Left: the anchor counts per level. Right: the
# anchors of the cell nearest the image centre, one panel per level.

# %%
anchors_px = pixel_anchors_for(config, molded.shape)
shapes = backbone_shapes(molded.shape, config.backbone_strides)
per_level = [
    ((h + config.rpn_anchor_stride - 1) // config.rpn_anchor_stride)
    * ((w + config.rpn_anchor_stride - 1) // config.rpn_anchor_stride)
    * len(config.rpn_anchor_ratios)
    for h, w in shapes
]
assert sum(per_level) == len(anchors_px)
anchor_table = pd.DataFrame(
    {
        "level": [f"P{i + 2}" for i in range(len(shapes))],
        "stride": config.backbone_strides,
        "feature map": [f"{h}x{w}" for h, w in shapes],
        "scale (px)": config.rpn_anchor_scales,
        "anchors": per_level,
    }
).set_index("level")
print(f"{len(anchors_px)} anchors in total")
anchor_table  # noqa: B018

# %%
fig, axes = plt.subplots(1, len(shapes), figsize=(3.2 * len(shapes), 3.4))
start = 0
centre = np.array(molded.shape[:2]) / 2
for level, (ax, count) in enumerate(zip(axes, per_level)):
    level_anchors = anchors_px[start : start + count]
    start += count
    centres = (level_anchors[:, :2] + level_anchors[:, 2:]) / 2
    nearest = np.abs(centres - centre).sum(axis=1)
    show(
        ax,
        image,
        f"P{level + 2}: scale {config.rpn_anchor_scales[level]:g}, stride {config.backbone_strides[level]}",
    )
    draw_boxes(ax, level_anchors[nearest == nearest.min()], "yellow", linewidth=1.5)
    ax.set_xlim(-0.5 * molded.shape[1], 1.5 * molded.shape[1])
    ax.set_ylim(1.5 * molded.shape[0], -0.5 * molded.shape[0])
fig.tight_layout()
plt.show()

# %% [markdown]
# ## RPN targets
#
# Anchors with IoU >= 0.7 with a ground-truth box (and each box's best anchor) are positive, those
# below 0.3 negative, the rest neutral; positives and negatives are then subsampled to
# `rpn_train_anchors_per_image`. Each positive anchor carries the deltas that move it onto its box:
# applying them (`decode_boxes`) must give the ground-truth box back exactly.

# %%
rpn_match = example["input_rpn_match"]
positive = np.flatnonzero(rpn_match == 1)
positive_anchors = anchors_px[positive]
refined_targets = decode_boxes(
    positive_anchors, example["input_rpn_bbox"][: len(positive)], config.rpn_bbox_std_dev
)
best_gt_iou = iou_matrix(refined_targets, gt_boxes).max(axis=1) if len(gt_boxes) else np.zeros(len(positive))
covered = iou_matrix(positive_anchors, gt_boxes).argmax(axis=1) if len(positive) else np.array([], int)
print(
    f"anchors: {int((rpn_match == 1).sum())} positive, {int((rpn_match == -1).sum())} negative, "
    f"{int((rpn_match == 0).sum())} neutral"
)
print(f"GT boxes with a positive anchor: {len(np.unique(covered))} of {len(gt_boxes)}")
print(
    f"refined positive anchors: min IoU with their GT box {best_gt_iou.min() if len(best_gt_iou) else float('nan'):.4f}"
)

fig, axes = plt.subplots(1, 2, figsize=(10, 5))
show(axes[0], image, "positive anchors (dashed) and GT boxes (green)")
draw_boxes(axes[0], gt_boxes, "lime", linewidth=1.5)
draw_boxes(axes[0], positive_anchors, "yellow", linestyle="--")
show(axes[1], image, "positive anchors refined by their target deltas")
draw_boxes(axes[1], refined_targets, "yellow")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## RPN predictions and proposals
#
# The backbone and FPN (`model.backbone_fpn`) give P2..P6; the shared RPN head (`run_rpn` over
# `model.rpn_model`) scores every anchor and predicts its deltas. `propose` (the `ROI` layer) keeps
# the `pre_nms_limit` best anchors, applies their deltas, clips them and runs NMS.

# %%
feature_maps = model.backbone_fpn(molded[None], training=False)
rpn_class_logits, rpn_probs, rpn_bbox = (np.asarray(t) for t in run_rpn(model.rpn_model, feature_maps))
scores = rpn_probs[0, :, 1]
top = np.argsort(-scores)[:TOP_ANCHORS]
top_refined = np.clip(
    decode_boxes(anchors_px[top], rpn_bbox[0, top], config.rpn_bbox_std_dev),
    0,
    [molded.shape[0], molded.shape[1]] * 2,
)
anchors_norm = keras.ops.convert_to_tensor(anchors_for(config, molded.shape))
proposals_norm = np.asarray(
    propose(
        rpn_probs,
        rpn_bbox,
        anchors_norm,
        proposal_count=config.post_nms_rois_inference,
        nms_threshold=config.rpn_nms_threshold,
        pre_nms_limit=config.pre_nms_limit,
        rpn_bbox_std_dev=config.rpn_bbox_std_dev,
    )
)[0]
proposals_norm = proposals_norm[np.any(proposals_norm != 0, axis=1)]
proposals = denorm_boxes(proposals_norm, molded.shape)
print(
    f"{len(scores)} anchors scored; foreground score >= 0.5: {int((scores >= 0.5).sum())}; "
    f"proposals after NMS: {len(proposals)} (at most {config.post_nms_rois_inference})"
)

fig, axes = plt.subplots(1, 4, figsize=(20, 5))
axes[0].hist(scores[rpn_match == -1], bins=30, range=(0, 1), alpha=0.6, label="negative targets", log=True)
axes[0].hist(scores[rpn_match == 1], bins=30, range=(0, 1), alpha=0.6, label="positive targets", log=True)
axes[0].set(title="RPN foreground score", xlabel="score", ylabel="anchors")
axes[0].legend()
show(axes[1], image, f"top {TOP_ANCHORS} anchors by score")
draw_boxes(axes[1], anchors_px[top], "yellow", linestyle="--")
show(axes[2], image, f"top {TOP_ANCHORS} refined (before NMS)")
draw_boxes(axes[2], top_refined, "cyan")
show(axes[3], image, f"first {TOP_ANCHORS} of {len(proposals)} proposals after NMS")
draw_boxes(axes[3], proposals[:TOP_ANCHORS], "orange")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Classifier head and detections
#
# The whole inference graph (`model.inference_outputs`) on the same molded image. Its proposals
# must be the ones computed above. The classifier gives every proposal class probabilities and
# per-class box deltas; the detection layer keeps the non-background proposals scoring at least
# `MIN_CONFIDENCE`, refines them with their class's deltas, runs per-class NMS and keeps at most
# `detection_max_instances`.

# %%
outputs = model.inference_outputs(
    molded[None], example["input_image_meta"][None], anchors_norm, min_confidence=MIN_CONFIDENCE
)
outputs = {name: np.asarray(value)[0] for name, value in outputs.items()}
rois_norm = outputs["rpn_rois"][: len(proposals_norm)]
print(f"inference proposals match the ones above: {np.allclose(rois_norm, proposals_norm, atol=1e-5)}")
roi_class = outputs["mrcnn_class"][: len(rois_norm)].argmax(axis=1)
roi_score = outputs["mrcnn_class"][np.arange(len(rois_norm)), roi_class]
deltas = outputs["mrcnn_bbox"][np.arange(len(rois_norm)), roi_class]
refined_rois = denorm_boxes(decode_boxes(rois_norm, deltas, config.bbox_std_dev), molded.shape)
foreground = roi_class > 0
detections = outputs["detections"]
n_detections = int((detections[:, 4] > 0).sum())
print(
    f"proposals classified as an object: {int(foreground.sum())} of {len(rois_norm)}; "
    f"with score >= {MIN_CONFIDENCE}: {int((foreground & (roi_score >= MIN_CONFIDENCE)).sum())}; "
    f"detections after NMS: {n_detections}"
)

fig, axes = plt.subplots(1, 3, figsize=(15, 5))
show(axes[0], image, "proposals: object (orange) / background (grey)")
draw_boxes(axes[0], proposals[~foreground], "grey", alpha=0.4)
draw_boxes(axes[0], proposals[foreground], "orange")
show(axes[1], image, "object proposals refined by the classifier's deltas")
draw_boxes(axes[1], refined_rois[foreground], "cyan")
show(axes[2], image, f"{n_detections} detections (score >= {MIN_CONFIDENCE}) and GT (green)")
draw_boxes(axes[2], gt_boxes, "lime", linestyle="--")
detection_boxes = denorm_boxes(detections[:n_detections, :4], molded.shape)
draw_boxes(axes[2], detection_boxes, "red", linewidth=1.5)
for (y1, x1, _, _), score in zip(detection_boxes, detections[:n_detections, 5]):
    axes[2].text(x1, y1 - 1, f"{score:.2f}", color="white", fontsize=7, backgroundcolor="red")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Masks
#
# The mask head predicts a 28 x 28 probability map per detection and class (here: the detected
# class). `unmold_detections` (what `model.detect` does per image) maps the boxes back to the photo,
# resizes each mask to its box and thresholds it at 0.5.

# %%
masks_28 = outputs["mrcnn_mask"][np.arange(n_detections), :, :, detections[:n_detections, 4].astype(int)]
shown = min(n_detections, 8)
if shown:
    fig, axes = plt.subplots(1, shown, figsize=(1.8 * shown, 2.2), squeeze=False)
    for k, ax in enumerate(axes[0]):
        ax.imshow(masks_28[k], cmap="viridis", vmin=0, vmax=1)
        ax.set_title(f"#{k + 1} {detections[k, 5]:.2f}", fontsize=8)
        ax.axis("off")
    fig.suptitle("28 x 28 mask probabilities of the best detections", fontsize=9)
    fig.tight_layout()
    plt.show()

photo = load_image_rgb(record.path)
result = unmold_detections(detections, outputs["mrcnn_mask"], photo.shape, molded.shape, meta["window"])
predicted = draw_instances(photo, result["masks"], boxes=result["rois"], scores=result["scores"])
fig, ax = plt.subplots(figsize=(10, 5))
show(
    ax,
    side_by_side(draw_instances(photo, record.masks()), predicted),
    f"{record.image_id}: masks in the photo",
)
plt.show()
print(f"{len(result['scores'])} books detected, {len(record.instances)} annotated")

# %% [markdown]
# ## Weights
#
# Statistics of every layer with weights (matterport's `display_weight_stats`), then histograms of
# the kernels of a few layers: the first backbone convolution, an FPN output, the RPN head and the
# heads' last layers. Collapsed (all zero) or exploding weights show up here first.

# %%
layers = named_weight_layers(model)
weight_stats = pd.DataFrame(
    [
        {
            "layer": name,
            "weight": variable.path.split("/")[-1],
            "shape": tuple(variable.shape),
            "mean": float(np.mean(values)),
            "std": float(np.std(values)),
            "min": float(np.min(values)),
            "max": float(np.max(values)),
        }
        for name, layer in layers.items()
        for variable in layer.weights
        if len(variable.shape) >= 2
        for values in [np.asarray(variable)]
    ]
).set_index("layer")
weight_stats.round(4)

# %%
chosen = [
    name
    for name in (
        next(iter(layers)),
        "fpn_p2",
        "rpn_model",
        "mrcnn_class_logits",
        "mrcnn_bbox_fc",
        "mrcnn_mask",
    )
    if name in layers
]
fig, axes = plt.subplots(1, len(chosen), figsize=(3.2 * len(chosen), 3))
for ax, name in zip(axes, chosen):
    kernels = np.concatenate([np.ravel(v) for v in layers[name].weights if len(v.shape) >= 2])
    ax.hist(kernels, bins=50)
    ax.set_title(f"{name}\nstd {kernels.std():.3f}, {kernels.size} values", fontsize=9)
fig.tight_layout()
plt.show()
