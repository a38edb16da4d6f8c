"""The one record type every reader yields, and the polygon rasterisation rule.

Coordinate convention (all readers): pixel units of the image *as displayed* (EXIF orientation
applied), origin at the top-left corner of the top-left pixel, x to the right, y down. Pixel
(row i, column j) covers the square [j, j+1) x [i, i+1); it belongs to a polygon when its centre
(j + 0.5, i + 0.5) lies inside or on an edge. Self-intersecting polygons are filled with the even-odd
rule (a pixel inside an odd number of loops is in the mask), see `rasterize_polygon`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Instance:
    """One annotated object.

    Exactly one of `polygon` / `mask` is set.

    Attributes:
        class_name: class label, e.g. "book".
        polygon: float64 [P, 2] vertices (x, y) in pixels (convention in the module docstring).
        mask: bool [H, W] full-image mask (COCO RLE, LabelMe mask shapes).
        region: where the instance came from, for messages, e.g. "region 3 (polygon)".
        iscrowd: COCO crowd region (never a positive training target).
    """

    class_name: str
    polygon: np.ndarray | None = None
    mask: np.ndarray | None = None
    region: str = ""
    iscrowd: bool = False

    def to_mask(self, height: int, width: int) -> np.ndarray:
        """Return the instance as a bool [height, width] mask."""
        if self.mask is not None:
            return self.mask.astype(bool)
        return rasterize_polygon(self.polygon, height, width)


@dataclass
class ImageRecord:
    """One image with its instances, as every reader yields it.

    Attributes:
        image_id: unique id within the dataset (the annotation file's key or file name).
        path: absolute path of the image file.
        width, height: image size as annotated (after EXIF orientation), in pixels.
        instances: annotated objects; an empty list is a valid negative (no book) image.
        group: fold group; images sharing a group never land in different folds.
        source: annotation file the record came from (for error messages).
        attributes: file-level attributes from the annotation tool (VIA file_attributes ...).
    """

    image_id: str
    path: Path
    width: int
    height: int
    instances: list[Instance] = field(default_factory=list)
    group: str = ""
    source: str = ""
    attributes: dict = field(default_factory=dict)

    def masks(self) -> np.ndarray:
        """All instance masks stacked as bool [H, W, N] (N may be 0)."""
        if not self.instances:
            return np.zeros((self.height, self.width, 0), bool)
        return np.stack([inst.to_mask(self.height, self.width) for inst in self.instances], axis=-1)

    def class_names(self) -> list[str]:
        return [inst.class_name for inst in self.instances]

    def class_ids(self, class_ids_by_name: dict[str, int]) -> np.ndarray:
        """int32 [N] class id of every instance.

        Raises ValueError naming the file, image and region of an instance whose class is unknown.
        """
        ids = []
        for index, inst in enumerate(self.instances):
            if inst.class_name not in class_ids_by_name:
                where = self.where(inst.region or f"instance {index}")
                raise ValueError(
                    f'{where}: class "{inst.class_name}" is not one of {list(class_ids_by_name)}'
                )
            ids.append(class_ids_by_name[inst.class_name])
        return np.asarray(ids, np.int32)

    def where(self, region: str = "") -> str:
        """Human-readable location for messages: 'file.json: image "x.jpg", region 3'."""
        text = f'{self.source}: image "{self.image_id}"'
        return f"{text}, {region}" if region else text


def rasterize_polygon(polygon: np.ndarray, height: int, width: int) -> np.ndarray:
    """Fill a polygon into a bool [height, width] mask by the pixel-centre, even-odd rule.

    Pixel (row i, column j) is in the mask when its centre (j + 0.5, i + 0.5) lies on an edge of the
    polygon or inside an odd number of its loops (even-odd rule, so a self-intersecting polygon's
    doubly covered parts are holes). Centres exactly on an edge count as inside, so a polygon traced
    through the centres of a mask's boundary pixels (a `cv2.findContours` contour shifted by +0.5)
    rasterises back to that mask. Exact scanline arithmetic in numpy, no sub-pixel rounding.

    Args:
        polygon: [P, 2] float vertices (x, y) in pixels; points outside the image are allowed.
        height, width: mask size in pixels.

    Returns:
        bool [height, width].
    """
    mask = np.zeros((height, width), bool)
    pts = np.asarray(polygon, np.float64).reshape(-1, 2)
    if len(pts) < 3 or height <= 0 or width <= 0 or not np.isfinite(pts).all():
        return mask
    # Work only on the rows and columns whose centres can be inside the polygon's bounding box.
    (x_min, y_min), (x_max, y_max) = pts.min(axis=0), pts.max(axis=0)
    r0, r1 = max(0, int(np.ceil(y_min - 0.5))), min(height, int(np.floor(y_max - 0.5)) + 1)
    c0, c1 = max(0, int(np.ceil(x_min - 0.5))), min(width, int(np.floor(x_max - 0.5)) + 1)
    if r0 >= r1 or c0 >= c1:
        return mask
    x0, y0 = pts[:, 0], pts[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    centre_y = np.arange(r0, r1) + 0.5  # [R]
    window = np.zeros((r1 - r0, c1 - c0), bool)

    # Interior: an edge crosses the row through centre_y when y_low <= centre_y < y_high (half-open,
    # so a vertex shared by two edges is counted once and horizontal edges never cross). Every
    # crossing toggles inside/outside for the pixel centres at or right of it.
    y_low, y_high = np.minimum(y0, y1), np.maximum(y0, y1)
    rows, edges = np.nonzero((centre_y[:, None] >= y_low) & (centre_y[:, None] < y_high))
    t = (centre_y[rows] - y0[edges]) / (y1[edges] - y0[edges])
    x_cross = x0[edges] + t * (x1[edges] - x0[edges])
    first = np.clip(np.ceil(x_cross - 0.5).astype(np.int64) - c0, 0, c1 - c0)
    toggles = np.zeros((r1 - r0, c1 - c0 + 1), np.int32)
    np.add.at(toggles, (rows, first), 1)
    window |= (np.cumsum(toggles[:, :-1], axis=1) & 1).astype(bool)

    # Boundary: centres lying exactly on an edge (up to float rounding).
    eps = 1e-7
    sloped = y0 != y1
    rows, edges = np.nonzero(
        (centre_y[:, None] >= y_low - eps) & (centre_y[:, None] <= y_high + eps) & sloped[None, :]
    )
    t = (centre_y[rows] - y0[edges]) / (y1[edges] - y0[edges])
    col = x0[edges] + t * (x1[edges] - x0[edges]) - 0.5
    on_centre = (np.abs(col - np.round(col)) <= eps) & (np.round(col) >= c0) & (np.round(col) < c1)
    window[rows[on_centre], np.round(col[on_centre]).astype(np.int64) - c0] = True
    for k in np.flatnonzero(~sloped):  # horizontal edges
        row = y0[k] - 0.5
        if abs(row - round(row)) <= eps and r0 <= round(row) < r1:
            lo = max(c0, int(np.ceil(min(x0[k], x1[k]) - 0.5 - eps)))
            hi = min(c1, int(np.floor(max(x0[k], x1[k]) - 0.5 + eps)) + 1)
            window[round(row) - r0, max(lo, c0) - c0 : max(hi, lo) - c0] = True

    mask[r0:r1, c0:c1] = window
    return mask


def boxes_from_masks(masks: np.ndarray) -> np.ndarray:
    """Tight boxes of bool [H, W, N] masks as int32 [N, 4] (y1, x1, y2, x2), y2/x2 exclusive.

    Empty masks give an all-zero box. Two reductions over the whole stack, no per-instance loop.
    """
    cols = masks.any(axis=0)  # [W, N]
    rows = masks.any(axis=1)  # [H, N]
    height, width = rows.shape[0], cols.shape[0]
    boxes = (
        np.stack(
            [
                rows.argmax(axis=0),
                cols.argmax(axis=0),
                height - rows[::-1].argmax(axis=0),
                width - cols[::-1].argmax(axis=0),
            ],
            axis=1,
        )
        .astype(np.int32)
        .reshape(-1, 4)
    )
    boxes[~cols.any(axis=0)] = 0
    return boxes
