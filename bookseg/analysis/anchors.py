"""How well a model's anchors fit a data set's boxes: `analyze_anchors(records, config)`.

Ground-truth boxes are taken to the network input the way training takes them
(`bookseg.mrcnn.images.resize_geometry`, then the tight box of the nearest-neighbour resized mask),
and matched against the config's anchors: best-anchor IoU per box, RPN positive anchors per box and
per image, summaries overall and per size / aspect bucket, and a suggested anchor config fitted to
the boxes (`bookseg.analysis.anchor_suggest`).

Conventions: boxes are (y1, x1, y2, x2) pixels of the molded (resized and padded) image, y2/x2
exclusive. Box size is sqrt(height * width) in those pixels; aspect is height / width (a standing
spine is > 1). Anchor ratios are matterport's width / height (a ratio of 0.25 is 4 times as tall as
wide).
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from bookseg.analysis.anchor_geometry import AnchorGrid, positive_anchors
from bookseg.analysis.anchor_suggest import suggest_anchors
from bookseg.data.records import ImageRecord, Instance
from bookseg.mrcnn.boxes import iou_matrix
from bookseg.mrcnn.images import resize_geometry

SIZE_EDGES = (0, 16, 32, 64, 128, 256, np.inf)
RATIO_COUNTS = (3, 4, 5)
ASPECT_EDGES = (0, 0.5, 2, 4, 8, np.inf)


def instance_box(instance: Instance, height: int, width: int) -> tuple[int, int, int, int] | None:
    """Tight pixel box of an instance's mask inside its image, or None when the mask is empty.

    Polygons are not rasterised: a pixel belongs to a polygon when its centre is inside (see
    `bookseg.data.records`), so the mask's rows run from ceil(min y - 0.5) to floor(max y - 0.5)
    (and likewise columns), clipped to the image. This is the mask's box except for thin slanted
    polygons whose extreme vertex covers no pixel centre (then off by at most one pixel).
    """
    if instance.polygon is not None:
        xs, ys = instance.polygon[:, 0], instance.polygon[:, 1]
        y1 = max(int(np.ceil(ys.min() - 0.5)), 0)
        x1 = max(int(np.ceil(xs.min() - 0.5)), 0)
        y2 = min(int(np.floor(ys.max() - 0.5)) + 1, height)
        x2 = min(int(np.floor(xs.max() - 0.5)) + 1, width)
    else:
        rows = np.flatnonzero(instance.mask.any(axis=1))
        cols = np.flatnonzero(instance.mask.any(axis=0))
        if rows.size == 0:
            return None
        y1, x1, y2, x2 = int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1
    if y2 <= y1 or x2 <= x1:
        return None
    return y1, x1, y2, x2


def resize_box(box, scale: float, window) -> tuple[int, int, int, int]:
    """A tight mask box after `resize_masks` (nearest-exact resize by `scale`) and padding.

    Output pixel i samples input pixel floor((i + 0.5) / scale), so input rows [y1, y2) become output
    rows [ceil(y1 * scale - 0.5), ceil(y2 * scale - 0.5)), shifted by the window's top-left corner.
    The result may be empty (a mask that vanishes at the model's resolution).
    """
    if scale != 1.0:
        box = [int(np.ceil(v * scale - 0.5)) for v in box]
    y1, x1, y2, x2 = box
    return y1 + window[0], x1 + window[1], y2 + window[0], x2 + window[1]


@dataclass
class ModelBoxes:
    """Ground-truth boxes of a data set in network-input pixels.

    Attributes:
        boxes: float64 [M, 4] (y1, x1, y2, x2) molded pixels of every non-crowd box.
        image_index: int64 [M], index of each box's record.
        shape_index: int64 [M], index into `shapes` of each box's molded image shape.
        shapes: molded (H, W) shapes ("square" mode: a single one).
        image_shape_index: int64 [num_images], index into `shapes` per record.
        skipped: counts of instances left out, by reason (crowd, empty_in_image, vanish_at_model_size).
        images_over_max_gt: images with more boxes than `max_gt_instances` (training keeps a random
            subset of those).
    """

    boxes: np.ndarray
    image_index: np.ndarray
    shape_index: np.ndarray
    shapes: list[tuple[int, int]]
    image_shape_index: np.ndarray
    skipped: Counter
    images_over_max_gt: int


def model_boxes(records: list[ImageRecord], config) -> ModelBoxes:
    """Collect every record's instance boxes in network-input pixels (see `ModelBoxes`)."""
    boxes, image_index, shape_index, image_shapes = [], [], [], []
    shapes: dict[tuple[int, int], int] = {}
    skipped: Counter = Counter()
    over = 0
    for i, record in enumerate(records):
        scale, window, out_shape = resize_geometry(record.height, record.width, config)
        s = shapes.setdefault(tuple(out_shape), len(shapes))
        image_shapes.append(s)
        kept = 0
        for instance in record.instances:
            if instance.iscrowd:
                skipped["crowd"] += 1
                continue
            box = instance_box(instance, record.height, record.width)
            if box is None:
                skipped["empty_in_image"] += 1
                continue
            y1, x1, y2, x2 = resize_box(box, scale, window)
            if y2 <= y1 or x2 <= x1:
                skipped["vanish_at_model_size"] += 1
                continue
            boxes.append((y1, x1, y2, x2))
            image_index.append(i)
            shape_index.append(s)
            kept += 1
        over += kept > config.max_gt_instances
    return ModelBoxes(
        boxes=np.asarray(boxes, np.float64).reshape(-1, 4),
        image_index=np.asarray(image_index, np.int64),
        shape_index=np.asarray(shape_index, np.int64),
        shapes=list(shapes),
        image_shape_index=np.asarray(image_shapes, np.int64),
        skipped=skipped,
        images_over_max_gt=over,
    )


@dataclass
class Coverage:
    """Best-anchor statistics of a set of boxes.

    Attributes:
        boxes: number of boxes.
        iou50: share of boxes whose best anchor reaches IoU >= 0.5.
        iou70: share reaching IoU >= 0.7 (the RPN positive threshold).
        mean_iou: mean best-anchor IoU.
        mean_positives: mean number of RPN positive anchors per box.
    """

    boxes: int
    iou50: float
    iou70: float
    mean_iou: float
    mean_positives: float

    @classmethod
    def of(cls, best_iou: np.ndarray, positives: np.ndarray) -> Coverage:
        if best_iou.size == 0:
            return cls(0, float("nan"), float("nan"), float("nan"), float("nan"))
        return cls(
            int(best_iou.size),
            float(np.mean(best_iou >= 0.5)),
            float(np.mean(best_iou >= 0.7)),
            float(best_iou.mean()),
            float(positives.mean()),
        )


@dataclass
class AnchorMatch:
    """One anchor config matched against the boxes.

    Attributes:
        scales, ratios: the anchors (ratios width / height).
        best_iou: float64 [M] best-anchor IoU per box.
        positives: int64 [M] RPN positive anchors per box.
        positives_per_image: int64 [num_images] distinct positive anchors per image (before the cap).
        overall: `Coverage` of all boxes.
        by_size: (bucket label, Coverage) per non-empty box-size bucket (`SIZE_EDGES`, px).
        by_aspect: (bucket label, Coverage) per non-empty height / width bucket (`ASPECT_EDGES`).
    """

    scales: list[float]
    ratios: list[float]
    best_iou: np.ndarray
    positives: np.ndarray
    positives_per_image: np.ndarray
    overall: Coverage
    by_size: list[tuple[str, Coverage]] = field(default_factory=list)
    by_aspect: list[tuple[str, Coverage]] = field(default_factory=list)


def _buckets(values, edges, unit: str, best, positives) -> list[tuple[str, Coverage]]:
    out = []
    for low, high in itertools.pairwise(edges):
        inside = (values >= low) & (values < high)
        if inside.any():
            label = (
                f"< {low if high == np.inf else high:g}{unit}"
                if low == 0
                else (f">= {low:g}{unit}" if high == np.inf else f"{low:g}-{high:g}{unit}")
            )
            out.append((label, Coverage.of(best[inside], positives[inside])))
    return out


def match_anchors(boxes: ModelBoxes, config, scales=None, ratios=None) -> AnchorMatch:
    """Best IoU and positive anchors of every box for `config`'s anchors (or `scales` / `ratios`)."""
    scales = [float(s) for s in (config.rpn_anchor_scales if scales is None else scales)]
    ratios = [float(r) for r in (config.rpn_anchor_ratios if ratios is None else ratios)]
    if len(scales) != len(config.backbone_strides):
        raise ValueError(
            f"{len(scales)} anchor scales for {len(config.backbone_strides)} pyramid levels: "
            "give one scale per level"
        )
    n_images = len(boxes.image_shape_index)
    best = np.zeros(len(boxes.boxes))
    positives = np.zeros(len(boxes.boxes), np.int64)
    per_image = np.zeros(n_images, np.int64)
    for s, shape in enumerate(boxes.shapes):
        rows = np.flatnonzero(boxes.shape_index == s)
        grid = AnchorGrid.for_config(config, shape, scales, ratios)
        found = positive_anchors(boxes.boxes[rows], boxes.image_index[rows], grid, n_images)
        best[rows], positives[rows] = found.best_iou, found.per_box
        per_image += found.per_image
    b = boxes.boxes
    size = np.sqrt((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))
    aspect = (b[:, 2] - b[:, 0]) / (b[:, 3] - b[:, 1])
    return AnchorMatch(
        scales=scales,
        ratios=ratios,
        best_iou=best,
        positives=positives,
        positives_per_image=per_image,
        overall=Coverage.of(best, positives),
        by_size=_buckets(size, SIZE_EDGES, " px", best, positives),
        by_aspect=_buckets(aspect, ASPECT_EDGES, "", best, positives),
    )


@dataclass
class AnchorAnalysis:
    """Everything `bookseg anchors` prints, as arrays for notebooks.

    Attributes:
        source: what was analysed (annotation file, or "synthetic ...").
        num_images: records analysed.
        boxes: the `ModelBoxes`.
        size: float64 [M] sqrt(height * width) per box, molded pixels.
        aspect: float64 [M] height / width per box.
        current: `AnchorMatch` of the config's anchors.
        suggested: `AnchorMatch` of the suggested anchors (None when not asked for or no boxes).
        alternatives: `AnchorMatch` of the suggestion for each ratio count in `RATIO_COUNTS` (the
            trade-off between anchors per position and coverage); includes `suggested`.
        num_anchors: anchors per molded shape, in `boxes.shapes` order.
        positive_cap: positives kept per image in training (rpn_train_anchors_per_image / 2).
        num_groups: distinct fold groups among the records (source photos when a group regex is set).
        neighbour_iou: float64 [M] each box's highest IoU with another box of its image (0 when alone): books
            whose neighbour overlaps them above `detection_nms_threshold` can be removed by detection NMS.
    """

    source: str
    num_images: int
    boxes: ModelBoxes
    size: np.ndarray
    aspect: np.ndarray
    current: AnchorMatch
    suggested: AnchorMatch | None
    alternatives: list[AnchorMatch]
    num_anchors: list[int]
    positive_cap: int
    num_groups: int
    neighbour_iou: np.ndarray


def analyze_anchors(
    records: list[ImageRecord],
    config,
    *,
    source: str = "",
    suggest: bool = True,
    n_ratios: int | None = None,
) -> AnchorAnalysis:
    """Match `config`'s anchors against the records' boxes and (optionally) suggest better ones.

    Args:
        records: images with instances (e.g. `load_dataset(path).records`).
        config: `MrcnnConfig`: image resizing, pyramid strides, anchor scales / ratios / stride,
            rpn_train_anchors_per_image, max_gt_instances.
        source: label for the printed report.
        suggest: also search suggested anchor configs (`anchor_suggest.suggest_anchors`), one per
            ratio count in `RATIO_COUNTS` (and `n_ratios`).
        n_ratios: ratios in the main suggestion; default: as many as the config has, kept within 3..5.

    Returns:
        `AnchorAnalysis`.
    """
    boxes = model_boxes(records, config)
    b = boxes.boxes
    current = match_anchors(boxes, config)
    suggested, alternatives = None, []
    if suggest and len(b):
        n = n_ratios or min(max(len(config.rpn_anchor_ratios), 3), 5)
        grids = [AnchorGrid.for_config(config, shape) for shape in boxes.shapes]
        for k in sorted(set(RATIO_COUNTS) | {n}):
            scales, ratios = suggest_anchors(
                b, boxes.shape_index, grids, k, config.rpn_anchor_scales, config.rpn_anchor_ratios
            )
            alternatives.append(match_anchors(boxes, config, scales, ratios))
            if k == n:
                suggested = alternatives[-1]
    return AnchorAnalysis(
        source=source,
        num_images=len(records),
        boxes=boxes,
        size=np.sqrt((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])),
        aspect=(b[:, 2] - b[:, 0]) / np.maximum(b[:, 3] - b[:, 1], 1e-9),
        current=current,
        suggested=suggested,
        alternatives=alternatives,
        num_anchors=[AnchorGrid.for_config(config, shape).num_anchors for shape in boxes.shapes],
        positive_cap=int(config.rpn_train_anchors_per_image) // 2,
        num_groups=len({r.group or r.image_id for r in records}),
        neighbour_iou=neighbour_iou(b, boxes.image_index),
    )


def neighbour_iou(boxes: np.ndarray, image_index: np.ndarray) -> np.ndarray:
    """float64 [M]: each box's highest IoU with another box of the same image; boxes [M, 4] (y1, x1, y2, x2)."""
    out = np.zeros(len(boxes))
    for image in np.unique(image_index):
        members = np.flatnonzero(image_index == image)
        if len(members) > 1:
            iou = iou_matrix(boxes[members], boxes[members])
            np.fill_diagonal(iou, 0.0)
            out[members] = iou.max(axis=1)
    return out
