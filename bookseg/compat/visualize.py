"""matterport's `mrcnn.visualize`: `display_instances`, `display_top_masks`, `display_images`, with matplotlib.

Every function draws into a matplotlib figure and returns it (save it with `fig.savefig(path)`). When it
made the figure itself (no `ax` given) it also calls `plt.show()` if the backend can show windows or
inline plots; on a headless backend (Agg) nothing is shown. Colours are deterministic (matterport
shuffled them at random).

Conventions: image uint8 [H, W, 3] RGB; boxes [N, 4] (y1, x1, y2, x2) pixels, y2/x2 exclusive; masks
bool [H, W, N]; class_ids int [N] indexing `class_names` (0 = "BG").
"""

from __future__ import annotations

import colorsys

import cv2
import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from matplotlib import patches

_HEADLESS = ("agg", "pdf", "ps", "svg", "cairo", "template")


def random_colors(n: int, bright: bool = True, seed: int = 0) -> list[tuple[float, float, float]]:
    """`n` distinct RGB colours in [0, 1]: evenly spaced hues in a seeded random order."""
    value = 1.0 if bright else 0.7
    colors = [colorsys.hsv_to_rgb(i / max(n, 1), 1.0, value) for i in range(n)]
    order = np.random.default_rng(seed).permutation(n)
    return [colors[i] for i in order]


def apply_mask(image: np.ndarray, mask: np.ndarray, color, alpha: float = 0.5) -> np.ndarray:
    """Blend `color` (RGB in [0, 1]) into `image` where bool `mask` [H, W] is set; returns a new array."""
    out = np.array(image, copy=True)
    blended = out[mask].astype(np.float32) * (1 - alpha) + alpha * np.asarray(color, np.float32) * 255
    out[mask] = blended.astype(out.dtype)
    return out


def _show_if_possible(figure) -> None:
    if matplotlib.get_backend().lower() not in _HEADLESS:
        plt.show()


def _outline(mask: np.ndarray) -> list[np.ndarray]:
    """Outer contours of a bool [H, W] mask as float [P, 2] (x, y) pixel-centre polygons."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [c.reshape(-1, 2).astype(np.float32) for c in contours if len(c) >= 3]


def display_instances(
    image,
    boxes,
    masks,
    class_ids,
    class_names,
    scores=None,
    title: str = "",
    figsize=(16, 16),
    ax=None,
    show_mask: bool = True,
    show_bbox: bool = True,
    colors=None,
    captions=None,
):
    """Draw instances on an image: masks blended in, outlines, dashed boxes and "class score" captions.

    Args:
        image: uint8 [H, W, 3]; boxes int [N, 4]; masks bool [H, W, N]; class_ids int [N];
        class_names: names indexed by class id; scores: float [N] or None;
        title, figsize, ax: matplotlib title, figure size (inches), axes to draw into (None: new figure);
        show_mask, show_bbox: draw masks / boxes; colors: N RGB colours in [0, 1]; captions: N texts.

    Returns:
        The matplotlib figure drawn into.
    """
    boxes = np.asarray(boxes).reshape(-1, 4)
    masks = np.asarray(masks)
    n = len(boxes)
    if masks.ndim != 3 or masks.shape[-1] != n or len(class_ids) != n:
        raise ValueError(
            f"display_instances: {n} boxes, masks {masks.shape} and {len(class_ids)} class ids do not agree"
        )
    own_figure = ax is None
    if own_figure:
        figure, ax = plt.subplots(1, figsize=figsize)
    else:
        figure = ax.figure
    colors = colors or random_colors(n)
    height, width = image.shape[:2]
    ax.set_ylim(height + 10, -10)
    ax.set_xlim(-10, width + 10)
    ax.axis("off")
    ax.set_title(title)
    canvas = np.array(image, dtype=np.uint8, copy=True)
    for i in range(n):
        color = colors[i]
        y1, x1, y2, x2 = (int(v) for v in boxes[i])
        if show_bbox and y2 > y1 and x2 > x1:
            ax.add_patch(
                patches.Rectangle(
                    (x1 - 0.5, y1 - 0.5),
                    x2 - x1,
                    y2 - y1,
                    linewidth=2,
                    alpha=0.7,
                    linestyle="dashed",
                    edgecolor=color,
                    facecolor="none",
                )
            )
        if captions is not None:
            caption = captions[i]
        else:
            label = class_names[int(class_ids[i])]
            caption = f"{label} {scores[i]:.3f}" if scores is not None else label
        ax.text(x1, y1 + 8, caption, color="w", size=11, backgroundcolor="none")
        mask = masks[:, :, i].astype(bool)
        if show_mask:
            canvas = apply_mask(canvas, mask, color)
        for polygon in _outline(mask):
            ax.add_patch(patches.Polygon(polygon, facecolor="none", edgecolor=color))
    ax.imshow(canvas)
    if own_figure:
        _show_if_possible(figure)
    return figure


def display_images(images, titles=None, cols: int = 4, cmap=None, norm=None, interpolation=None):
    """Show images side by side, `cols` per row, with optional titles; returns the figure."""
    titles = titles if titles is not None else [""] * len(images)
    rows = -(-len(images) // cols)
    figure = plt.figure(figsize=(14, max(2, 14 * rows // cols)))
    for index, (image, title) in enumerate(zip(images, titles), start=1):
        axes = figure.add_subplot(rows, cols, index)
        axes.set_title(title, fontsize=9)
        axes.axis("off")
        axes.imshow(np.asarray(image).astype(np.uint8), cmap=cmap, norm=norm, interpolation=interpolation)
    _show_if_possible(figure)
    return figure


def display_top_masks(image, mask, class_ids, class_names, limit: int = 4):
    """The image, then for the `limit` classes covering most pixels the union of their masks.

    Args:
        image: uint8 [H, W, 3]; mask bool [H, W, N]; class_ids int [N]; class_names by id.

    Returns:
        The figure (1 + limit panels).
    """
    mask = np.asarray(mask)
    class_ids = np.asarray(class_ids).reshape(-1)
    images, titles = [image], ["H x W={}x{}".format(*image.shape[:2])]
    present = np.unique(class_ids)
    areas = [mask[:, :, class_ids == c].sum() for c in present]
    order = np.argsort(-np.asarray(areas, np.int64), kind="stable")
    ranked = [present[i] for i in order if areas[i] > 0]
    for k in range(limit):
        if k < len(ranked):
            class_id = ranked[k]
            panel = (mask[:, :, class_ids == class_id].any(axis=-1)).astype(np.uint8) * 255
            titles.append(class_names[int(class_id)])
        else:
            panel = np.zeros(image.shape[:2], np.uint8)
            titles.append("-")
        images.append(panel)
    return display_images(images, titles=titles, cols=limit + 1, cmap="Blues_r")
