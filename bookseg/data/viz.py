"""Instance overlays for validation and prediction images (OpenCV only, no matplotlib).

Images are uint8 [H, W, 3] RGB; masks bool [H, W, n]; boxes int [n, 4] (y1, x1, y2, x2) in pixels
with y2/x2 exclusive. Line widths and text sizes scale with the image, so overlays read the same at
256 px and at 2000 px.

Here in the data layer, the lowest one, because the training loop (validation overlays), prediction,
the data notebooks and scripts all draw with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_GOLDEN_RATIO_CONJUGATE = 0.6180339887498949
_CAPTION_BACKGROUND = (40, 40, 40)
_GAP_COLOR = (255, 255, 255)


def instance_colors(n: int, seed: int = 0) -> np.ndarray:
    """Distinct, deterministic colours: uint8 [n, 3] RGB.

    Hues step by the golden ratio (neighbouring instances get far-apart hues, any n works);
    saturation and brightness alternate between two levels to separate colours whose hues come
    close when n is large. `seed` rotates the hue sequence.
    """
    k = np.arange(n)
    start = (seed * _GOLDEN_RATIO_CONJUGATE * 7.0) % 1.0
    hue = ((start + k * _GOLDEN_RATIO_CONJUGATE) % 1.0) * 180.0  # OpenCV hue range is 0..180
    saturation = np.where(k % 2 == 0, 230, 170)
    value = np.where((k // 2) % 2 == 0, 255, 210)
    hsv = np.stack([hue, saturation, value], axis=-1).astype(np.uint8).reshape(1, n, 3)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB).reshape(n, 3) if n else np.zeros((0, 3), np.uint8)


def line_width(image_shape: Sequence[int]) -> int:
    """Outline thickness in pixels for an image of `image_shape` (1 px at 256 px, 4 px at 2000 px)."""
    return max(1, round(max(image_shape[:2]) / 500))


def font_scale(image_shape: Sequence[int]) -> float:
    """OpenCV font scale for an image of `image_shape` (text about 1/75 of the long side, at least 8 px)."""
    return max(0.35, max(image_shape[:2]) / 1700)


def draw_instances(
    image: np.ndarray,
    masks: np.ndarray,
    *,
    boxes: np.ndarray | None = None,
    scores: np.ndarray | None = None,
    labels: Sequence[str] | None = None,
    numbered: bool = True,
    alpha: float = 0.35,
    color_seed: int = 0,
) -> np.ndarray:
    """Draw each instance with its own colour: translucent fill, outline, optional box and tag.

    The tag (number 1..n, label, score with two decimals) sits on a patch of the instance's colour,
    centred on a pixel well inside the mask (near its centroid, away from its edge, so it lands on
    thin book spines too), moved along the mask when that spot would cover an earlier tag.

    Args:
        image: uint8 [H, W, 3] RGB; not modified.
        masks: bool [H, W, n] (other dtypes binarised at 0.5); n may be 0.
        boxes: optional int [n, 4] (y1, x1, y2, x2), y2/x2 exclusive, drawn as thin rectangles.
        scores: optional float [n], shown in the tag.
        labels: optional n class names, shown in the tag.
        numbered: show the instance number (1-based, in mask order) in the tag.
        alpha: fill opacity in [0, 1].
        color_seed: rotates the colour sequence (see `instance_colors`).

    Returns:
        A new uint8 [H, W, 3] image.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
    masks = np.asarray(masks)
    if masks.ndim != 3 or masks.shape[:2] != image.shape[:2]:
        raise ValueError(f"masks must be [H, W, n] with H, W = {image.shape[:2]}, got {masks.shape}")
    masks = masks if masks.dtype == bool else masks > 0.5
    n = masks.shape[-1]
    for name, values in (("boxes", boxes), ("scores", scores), ("labels", labels)):
        if values is not None and len(values) != n:
            raise ValueError(f"{len(values)} {name} for {n} masks")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")

    colors = instance_colors(n, color_seed)
    thickness = line_width(image.shape)
    out = image.copy()
    crops = _mask_crops(masks)
    for k, crop in enumerate(crops):
        if crop is None:
            continue
        (y0, x0), mask = crop
        region = out[y0 : y0 + mask.shape[0], x0 : x0 + mask.shape[1]]
        blended = (1.0 - alpha) * region[mask] + alpha * colors[k].astype(np.float64)
        region[mask] = np.rint(blended).astype(np.uint8)
    # Outlines after all fills so a later fill never tints an earlier outline.
    for k, crop in enumerate(crops):
        if crop is None:
            continue
        (y0, x0), mask = crop
        padded = np.pad(mask, 1).astype(np.uint8)  # zero border: shapes touching the crop edge close
        contours, _ = cv2.findContours(padded, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE, offset=(x0 - 1, y0 - 1))
        cv2.drawContours(out, contours, -1, _color_tuple(colors[k]), thickness, lineType=cv2.LINE_8)
    if boxes is not None:
        for k, (y1, x1, y2, x2) in enumerate(np.asarray(boxes, np.int64)):
            cv2.rectangle(
                out,
                (int(x1), int(y1)),
                (int(x2) - 1, int(y2) - 1),
                _color_tuple(colors[k]),
                max(1, thickness // 2),
            )
    placed: list[tuple[int, int, int, int]] = []  # tag rectangles so far, to avoid stacking tags
    for k, crop in enumerate(crops):
        parts = [str(k + 1)] if numbered else []
        if labels is not None:
            parts.append(str(labels[k]))
        if scores is not None:
            parts.append(f"{float(scores[k]):.2f}")
        if parts and crop is not None:
            placed.append(_draw_tag(out, " ".join(parts), _interior_points(*crop), colors[k], placed))
    return out


def side_by_side(
    gt_overlay: np.ndarray,
    pred_overlay: np.ndarray,
    *,
    captions: tuple[str, str] = ("ground truth", "prediction"),
) -> np.ndarray:
    """Ground truth on the left, prediction on the right, each under a caption bar.

    Args:
        gt_overlay, pred_overlay: uint8 [H, W, 3] images (sizes may differ; the shorter is padded).
        captions: texts above the left and right image.

    Returns:
        uint8 [bar + max(H), W_left + gap + W_right, 3].
    """
    images = [np.asarray(gt_overlay), np.asarray(pred_overlay)]
    for image in images:
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"overlays must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
    height = max(image.shape[0] for image in images)
    scale = font_scale((height, max(image.shape[1] for image in images)))
    text_thickness = max(1, round(scale * 1.5))
    (_, text_h), baseline = cv2.getTextSize("Ag", _FONT, scale, text_thickness)
    bar = text_h + baseline + 2 * max(4, text_h // 2)
    gap = max(2, line_width((height,)) * 2)
    panels = []
    for image, caption in zip(images, captions):
        panel = np.empty((bar + height, image.shape[1], 3), np.uint8)
        panel[:] = _CAPTION_BACKGROUND
        panel[bar : bar + image.shape[0]] = image
        origin = (max(4, text_h // 2), (bar + text_h) // 2)
        cv2.putText(panel, caption, origin, _FONT, scale, (255, 255, 255), text_thickness, cv2.LINE_AA)
        panels.append(panel)
    separator = np.empty((bar + height, gap, 3), np.uint8)
    separator[:] = _GAP_COLOR
    return np.concatenate([panels[0], separator, panels[1]], axis=1)


def save_image(path: str | Path, image: np.ndarray, *, overwrite: bool = False) -> Path:
    """Write a uint8 [H, W, 3] RGB image (format from the suffix: .png, .jpg ...).

    Raises:
        FileExistsError: `path` exists and `overwrite` is False.
        OSError: OpenCV could not write the file (unknown suffix, unwritable folder).
    """
    path = Path(path)
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        written = cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    except cv2.error as error:
        raise OSError(f"could not write {path}: {error}") from error
    if not written:
        raise OSError(f"could not write {path}")
    return path


def _mask_crops(masks: np.ndarray) -> list:
    """Per instance ((y0, x0), bool crop of the mask over its bounding box), or None when empty.

    Rows and columns are reduced for all instances at once: slicing one instance out of the
    [H, W, n] stack first would read the whole stack with a stride per instance.
    """
    rows_any, cols_any = masks.any(axis=1), masks.any(axis=0)  # [H, n], [W, n]
    crops = []
    for k in range(masks.shape[-1]):
        rows, cols = np.flatnonzero(rows_any[:, k]), np.flatnonzero(cols_any[:, k])
        if rows.size == 0:
            crops.append(None)
            continue
        y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        crops.append(((y0, x0), masks[y0:y1, x0:x1, k]))
    return crops


def _interior_points(origin: tuple[int, int], mask: np.ndarray, limit: int = 64) -> np.ndarray:
    """Candidate tag centres inside the mask, best first: int [k, 2] image (x, y), k <= limit.

    Candidates are the pixels at least half as far from the mask's edge as the farthest one (the
    mask's "spine"), ordered by distance to the mask's centroid.
    """
    distance = cv2.distanceTransform(np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2, 3)[1:-1, 1:-1]
    ys, xs = np.nonzero(distance >= 0.5 * distance.max())
    cy, cx = np.argwhere(mask).mean(axis=0)
    order = np.argsort((ys - cy) ** 2 + (xs - cx) ** 2, kind="stable")
    # Spread the candidates over the whole ordering so far-away spots are tried too.
    order = order[np.unique(np.linspace(0, len(order) - 1, min(limit, len(order))).astype(int))]
    return np.stack([xs[order] + origin[1], ys[order] + origin[0]], axis=1)


def _draw_tag(
    image: np.ndarray,
    text: str,
    centers: np.ndarray,
    color: np.ndarray,
    placed: list[tuple[int, int, int, int]],
) -> tuple[int, int, int, int]:
    """Draw `text` on a patch of `color` at the first candidate centre whose patch overlaps no
    already placed tag (the first candidate if none is free); patches stay inside the image.

    Returns:
        The patch rectangle (left, top, right, bottom), right/bottom exclusive.
    """
    scale = font_scale(image.shape)
    thickness = max(1, round(scale * 1.5))
    (text_w, text_h), baseline = cv2.getTextSize(text, _FONT, scale, thickness)
    pad = max(1, text_h // 4)
    box_w, box_h = text_w + 2 * pad, text_h + baseline + 2 * pad
    height, width = image.shape[:2]
    lefts = np.clip(centers[:, 0] - box_w // 2, 0, max(0, width - box_w))
    tops = np.clip(centers[:, 1] - box_h // 2, 0, max(0, height - box_h))
    choice = 0
    if placed:
        other = np.asarray(placed)
        overlaps = (
            (lefts[:, None] < other[None, :, 2])
            & (other[None, :, 0] < lefts[:, None] + box_w)
            & (tops[:, None] < other[None, :, 3])
            & (other[None, :, 1] < tops[:, None] + box_h)
        ).any(axis=1)
        free = np.flatnonzero(~overlaps)
        choice = int(free[0]) if free.size else 0
    left, top = int(lefts[choice]), int(tops[choice])
    cv2.rectangle(image, (left, top), (left + box_w - 1, top + box_h - 1), _color_tuple(color), cv2.FILLED)
    # Black text on light colours, white on dark ones (ITU-R BT.601 luma).
    luma = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
    ink = (0, 0, 0) if luma > 140 else (255, 255, 255)
    cv2.putText(image, text, (left + pad, top + pad + text_h), _FONT, scale, ink, thickness, cv2.LINE_AA)
    return left, top, left + box_w, top + box_h


def _color_tuple(color: np.ndarray) -> tuple[int, int, int]:
    return int(color[0]), int(color[1]), int(color[2])
