"""The one record type every reader yields, and the polygon rasterisation rule.

Coordinate convention (all readers): pixel units of the image *as displayed* (EXIF orientation
applied), origin at the top-left corner of the top-left pixel, x to the right, y down. Pixel
(row i, column j) covers the square [j, j+1) x [i, i+1); it belongs to a polygon when its centre
(j + 0.5, i + 0.5) lies inside. Self-intersecting polygons are filled with the even-odd rule
(a pixel inside an odd number of loops is in the mask), see `rasterize_polygon`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

# Sub-pixel precision for cv2.fillPoly: vertices are scaled by 2**_SHIFT and passed as integers.
_SHIFT = 8


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

    def where(self, region: str = "") -> str:
        """Human-readable location for messages: 'file.json: image "x.jpg", region 3'."""
        text = f'{self.source}: image "{self.image_id}"'
        return f"{text}, {region}" if region else text


def rasterize_polygon(polygon: np.ndarray, height: int, width: int) -> np.ndarray:
    """Fill a polygon into a bool [height, width] mask (pixel-centre rule, even-odd for self-crossings).

    Args:
        polygon: [P, 2] float vertices (x, y) in pixels; points outside the image are allowed.
    """
    mask = np.zeros((height, width), np.uint8)
    pts = np.asarray(polygon, np.float64).reshape(-1, 2)
    if len(pts) < 3:
        return mask.astype(bool)
    # cv2 treats integer vertex (x, y) as the centre of pixel (x, y); shift by half a pixel so that
    # continuous coordinates follow the pixel-centre rule above.
    fixed = np.round((pts - 0.5) * (1 << _SHIFT)).astype(np.int64)
    # Keep values inside int32 after shifting for absurd coordinates.
    fixed = np.clip(fixed, -(1 << 30), 1 << 30).astype(np.int32)
    cv2.fillPoly(mask, [fixed.reshape(-1, 1, 2)], 1, lineType=cv2.LINE_8, shift=_SHIFT)
    return mask.astype(bool)


def boxes_from_masks(masks: np.ndarray) -> np.ndarray:
    """Tight boxes of bool [H, W, N] masks as int32 [N, 4] (y1, x1, y2, x2), y2/x2 exclusive.

    Empty masks give an all-zero box.
    """
    n = masks.shape[-1]
    boxes = np.zeros((n, 4), np.int32)
    for i in range(n):
        rows = np.flatnonzero(masks[:, :, i].any(axis=1))
        if rows.size == 0:
            continue
        cols = np.flatnonzero(masks[:, :, i].any(axis=0))
        boxes[i] = (rows[0], cols[0], rows[-1] + 1, cols[-1] + 1)
    return boxes
