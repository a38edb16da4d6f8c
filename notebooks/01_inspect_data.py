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
# # Inspect a data set and its augmentations
#
# What the model will be trained on, before any training: the validation report (every problem the
# readers found, counted), instance statistics that drive the anchor and image-size settings, a few
# images with their masks, the grouped cross-validation folds, and each augmentation preset of
# `conf/augmentation/` applied to one image, with the masks drawn on the augmented pixels to show that
# they move with the image.
#
# By default the notebook uses the built-in synthetic shelves (generated once into the cache). Point
# `DATA_PATH` at your own VIA, COCO or LabelMe annotation file to inspect your data instead.

# %%
import os
from collections import Counter
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from omegaconf import OmegaConf

import bookseg
from bookseg.analysis.mask_targets import mask_round_trip
from bookseg.data.augment import build_augmentation
from bookseg.data.check import dataset_stats, format_check
from bookseg.data.folds import assign_groups, make_folds
from bookseg.data.images import load_image_rgb
from bookseg.data.readers import read_dataset
from bookseg.data.synthetic import synthetic_dataset_path
from bookseg.data.viz import draw_instances
from bookseg.mrcnn.config import MrcnnConfig
from bookseg.mrcnn.images import paste_masks

# %% tags=["parameters"]
DATA_PATH = None  # annotation file (VIA 1/2/3, COCO, LabelMe); None: the built-in synthetic shelves
IMAGES_DIR = None  # folder the image file names are relative to; None: next to the annotation file
CLASS_ATTRIBUTE = None  # region attribute holding the class; None: every region is one "book"
GROUP_REGEX = None  # file-name regex whose first group names the fold group, e.g. r"^(.*)_jpg\.rf\."
GROUP_ATTRIBUTE = None  # or a VIA file attribute naming the group
K_FOLDS = 3
SEED = 0
N_EXAMPLES = 4  # images shown with their masks
AUGMENTATION_DRAWS = 3  # random draws shown per augmentation preset
MODEL_PRESET = "cpu"  # conf/model preset whose input size and mask sizes the mask-target section uses
SYNTHETIC = {"n_images": 48, "seed": 0, "image_size": (256, 256)}  # the default job's data set
CACHE_DIR = Path(os.environ.get("BOOKSEG_CACHE", Path.cwd() / ".cache" / "bookseg"))
CONF_DIR = Path(bookseg.__file__).resolve().parents[1] / "conf"

# %% [markdown]
# ## Validation report and statistics
#
# `read_dataset` reads and validates every region. Images with errors are left out of `records` and
# each error names its file, image and region; warnings and notes are counted. (`load_dataset`, which
# training uses, raises on any error instead.) The statistics are those of `bookseg data check`.

# %%
if DATA_PATH is None:
    annotation = synthetic_dataset_path(
        CACHE_DIR, SYNTHETIC["n_images"], SYNTHETIC["seed"], SYNTHETIC["image_size"]
    )
else:
    annotation = Path(DATA_PATH).expanduser()
dataset = read_dataset(annotation, images_dir=IMAGES_DIR, class_attribute=CLASS_ATTRIBUTE)
print(format_check(dataset))
if dataset.report.errors:
    print(f"\n{len(dataset.report.errors)} errors (images with errors are not in the data set):")
    for problem in dataset.report.errors[:20]:
        print("  ", problem)

# %% [markdown]
# ## Images with their instances
#
# Each instance gets its own colour, its outline and its number; images spread over the data set.

# %%
# Spread over the data set, so copies of one photo (often stored next to each other) do not fill the row.
examples = [
    dataset.records[int(i)] for i in np.unique(np.linspace(0, len(dataset.records) - 1, N_EXAMPLES).round())
]
fig, axes = plt.subplots(1, len(examples), figsize=(4 * len(examples), 4.4), squeeze=False)
for ax, record in zip(axes[0], examples):
    labels = record.class_names() if len(dataset.class_names) > 1 else None
    ax.imshow(draw_instances(load_image_rgb(record.path), record.masks(), labels=labels))
    ax.set_title(f"{Path(record.image_id).name}\n{len(record.instances)} instances", fontsize=9)
    ax.axis("off")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Box sizes and shapes
#
# Box size is sqrt(width x height) in pixels of the photo as stored (the model resizes it to
# `image_max_dim` first); the aspect ratio is height / width, so an upright spine is well above 1.
# The vertical lines mark the anchor shapes of `conf/anchors/default.yaml` (dotted) and `spines.yaml`
# (dashed; anchor ratios are width / height, drawn here as height / width).

# %%
stats = dataset_stats(dataset)
anchor_presets = {
    name: OmegaConf.load(CONF_DIR / "anchors" / f"{name}.yaml") for name in ("default", "spines")
}
fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
axes[0].hist(stats.instances_per_image, bins=np.arange(stats.instances_per_image.max() + 2) - 0.5)
axes[0].set(title="instances per image", xlabel="instances", ylabel="images")
finite_ratio = stats.aspect_ratio[np.isfinite(stats.aspect_ratio) & (stats.aspect_ratio > 0)]
if stats.box_size.size:
    axes[1].hist(stats.box_size, bins=30)
    axes[2].hist(finite_ratio, bins=np.geomspace(finite_ratio.min(), finite_ratio.max(), 30))
axes[1].set(title="box size sqrt(w*h)", xlabel="pixels", ylabel="instances")
axes[2].set(
    title="box aspect ratio h/w", xlabel="height / width (log scale)", ylabel="instances", xscale="log"
)
for (name, preset), color, style in zip(anchor_presets.items(), ("tab:red", "tab:green"), (":", "--")):
    for k, ratio in enumerate(preset.ratios):
        axes[2].axvline(
            1 / ratio, color=color, linestyle=style, linewidth=2, label=f"anchors {name}" if k == 0 else None
        )
axes[2].legend(fontsize=8)
fig.tight_layout()
plt.show()
print(
    f"{len(stats.box_size)} boxes; median size {np.median(stats.box_size):.1f} px, "
    f"median h/w {np.median(finite_ratio):.2f}"
)

# %% [markdown]
# ## Cross-validation folds
#
# Images of one source photo (augmented copies, video frames) form a group and a group never spans two
# folds, so no fold validates on a copy of a training image. Without `GROUP_REGEX` or
# `GROUP_ATTRIBUTE` every image is its own group. These are the folds `python -m bookseg.run` makes
# with `cv.k=K_FOLDS cv.seed=SEED`.

# %%
assign_groups(dataset.records, regex=GROUP_REGEX, attribute=GROUP_ATTRIBUTE)
folds = make_folds(dataset.records, K_FOLDS, seed=SEED)
by_id = {record.image_id: record for record in dataset.records}
fold_table = pd.DataFrame(
    [
        {
            "fold": index,
            "images": len(ids),
            "groups": len({by_id[i].group for i in ids}),
            "largest group (images)": max(Counter(by_id[i].group for i in ids).values()),
            "instances": sum(len(by_id[i].instances) for i in ids),
            "images without instances": sum(not by_id[i].instances for i in ids),
        }
        for index, ids in enumerate(folds)
    ]
).set_index("fold")
groups_in_folds = [{by_id[i].group for i in ids} for ids in folds]
shared = set.intersection(*groups_in_folds) if len(folds) > 1 else set()
print(
    f"{len(set().union(*groups_in_folds))} groups in {K_FOLDS} folds; groups in more than one fold: {len(shared)}"
)
print(f"images per fold: {[len(ids) for ids in folds]}")
fold_table  # noqa: B018  (the last expression of a cell is displayed)

# %%
ax = fold_table[["images", "groups", "instances"]].plot.bar(
    subplots=True, layout=(1, 3), figsize=(12, 3), legend=False, rot=0
)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Augmentation presets
#
# Each preset of `conf/augmentation/` is built exactly as training builds it
# (`build_augmentation` on the YAML's `transforms`), then applied to one image several times, each
# draw seeded like a training example. Every transform fires with its own probability `p`, so some
# draws leave the image unchanged, as they do in training. The masks are drawn on the augmented
# pixels: outlines that still sit on the books show that masks move with the image. Instances
# pushed out of the frame are dropped (the count is in each title).

# %%
record = max(examples, key=lambda r: len(r.instances))
image, masks = load_image_rgb(record.path), record.masks()
class_ids = np.ones(masks.shape[-1], np.int32)
presets = sorted((CONF_DIR / "augmentation").glob("*.yaml"))
columns = AUGMENTATION_DRAWS + 1
fig, axes = plt.subplots(len(presets), columns, figsize=(3 * columns, 3.2 * len(presets)), squeeze=False)
for row, path in zip(axes, presets):
    preset = OmegaConf.load(path)
    augment = build_augmentation(OmegaConf.to_container(preset.transforms, resolve=True), seed=SEED)
    row[0].imshow(draw_instances(image, masks, numbered=False))
    row[0].set_title(f"{preset.name}: original", fontsize=9)
    if augment is None:
        print(f"{preset.name}: no transform")
    else:
        n_changed, kept = 0, []
        for draw, ax in enumerate(row[1:]):
            result = augment(image, masks, class_ids, rng=np.random.default_rng([SEED, draw]))
            changed = result.image.shape != image.shape or not np.array_equal(result.image, image)
            n_changed += changed
            kept.append(result.masks.shape[-1])
            ax.imshow(draw_instances(result.image, result.masks, numbered=False))
            title = f"{result.masks.shape[-1]} kept, {result.dropped} dropped" + (
                "" if changed else " (unchanged)"
            )
            ax.set_title(title, fontsize=9)
        print(
            f"{preset.name}: {', '.join(type(t).__name__ for t in augment.transforms)}; {n_changed} of "
            f"{AUGMENTATION_DRAWS} draws changed the image; instances kept per draw {kept} of {masks.shape[-1]}"
        )
    for ax in row:
        ax.set_xticks([])
        ax.set_yticks([])
        if augment is None and ax is not row[0]:
            ax.axis("off")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Mask targets: what the mask head is asked to learn
#
# A book's mask reaches the mask loss resized to the model's input, cropped to its box and shrunk to
# the mini mask, then cut by the ROI and resized to the mask head's `mask_shape` (28 x 28); `detect`
# pastes a prediction of that size back into the photo. Here every book goes through that path with
# a perfect ROI and a perfect prediction (`bookseg.analysis.mask_targets.mask_round_trip`): the IoU
# with its original mask is the most the mask head can reach on it. Left: the annotation; right: the
# targets pasted back, for the image with the most books. If tall, thin or tilted books came back as
# thin bands or blobs, the mask gap would be in the targets, not in learning.

# %%
preset = OmegaConf.load(CONF_DIR / "model" / f"{MODEL_PRESET}.yaml")
mask_config = MrcnnConfig(
    image_min_dim=preset.image_min_dim,
    image_max_dim=preset.image_max_dim,
    mini_mask_shape=(preset.mini_mask_size, preset.mini_mask_size),
)
trip = mask_round_trip(dataset.records[:60], mask_config)
print(
    f"model={MODEL_PRESET} ({preset.image_max_dim} px, mini mask {preset.mini_mask_size}, "
    f"mask {mask_config.mask_shape[0]}): {trip.summary()}"
)
shown = mask_round_trip([record], mask_config)
pasted = paste_masks(shown.targets, shown.photo_boxes, (record.height, record.width))
fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
axes[0].imshow(draw_instances(image, masks, numbered=False))
axes[0].set_title(f"annotation: {masks.shape[-1]} books", fontsize=9)
axes[1].imshow(draw_instances(image, pasted, numbered=False))
axes[1].set_title(f"28 x 28 targets pasted back: median IoU {np.median(shown.iou):.3f}", fontsize=9)
axes[2].scatter(trip.aspect, trip.iou, c=trip.fill, s=8, cmap="viridis")
axes[2].set_xscale("log")
axes[2].set(
    xlabel="box width / height at model size", ylabel="round-trip IoU", title="colour: share of box filled"
)
for ax in axes[:2]:
    ax.axis("off")
fig.tight_layout()
plt.show()
