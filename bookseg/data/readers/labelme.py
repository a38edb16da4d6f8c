"""LabelMe JSON, one file per image.

{imagePath, imageHeight, imageWidth, flags, shapes: [{label, points: [[x, y], ...], shape_type,
group_id, description, mask}]}. `imagePath` is relative to the JSON file (Windows separators are
accepted); points are in the EXIF-rotated frame. Shapes sharing (label, group_id) with a non-null
group_id are one instance (their union). Shape types: polygon; rectangle (two opposite corners);
circle (centre, then a point on the circle); line / linestrip (closed, with a warning);
oriented_rectangle; mask (bbox corners plus a base64 PNG of the cropped 0/1 mask); point / points
are not instances (skipped, with a warning).

Region attributes (for `class_attribute`): "label", "description", "group_id" and the keys of
the shape's optional "attributes" object; the usual choice is `class_attribute="label"`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import posixpath
from pathlib import Path

import cv2
import numpy as np

from bookseg.data.polygons import circle_polygon, rectangle_polygon
from bookseg.data.readers.common import ReadContext, integer_or_none, number, resolve_class
from bookseg.data.validate import RawImage, RawRegion, resolve_image_path

_POLYGON_TYPES = ("polygon", "line", "linestrip", "oriented_rectangle")


def _points(shape: dict) -> np.ndarray:
    points = shape.get("points")
    if not isinstance(points, list) or not all(isinstance(p, list) and len(p) == 2 for p in points):
        raise TypeError("points must be a list of [x, y] pairs")
    return np.array([[number(x), number(y)] for x, y in points], np.float64).reshape(-1, 2)


def _decode_mask(text) -> np.ndarray:
    """bool [h, w] from a LabelMe base64 PNG mask (values 0/1)."""
    if not isinstance(text, str):
        raise TypeError("mask shape without a base64 mask")
    try:
        data = np.frombuffer(base64.b64decode(text, validate=True), np.uint8)
    except (binascii.Error, ValueError) as err:
        raise ValueError(f"mask is not base64: {err}") from err
    pixels = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise ValueError("mask is not a PNG image")
    return (pixels if pixels.ndim == 2 else pixels[:, :, 0]) > 0


def _shape_region(shape_type: str, shape: dict, label: str, class_name: str) -> RawRegion:
    """Raises TypeError / ValueError on malformed points or mask."""
    points = _points(shape)
    if shape_type in _POLYGON_TYPES:
        return RawRegion(label, class_name, [points])
    if shape_type in ("rectangle", "circle", "mask") and len(points) != 2:
        raise ValueError(f"{shape_type} needs 2 points, got {len(points)}")
    if shape_type == "rectangle":
        (x0, y0), (x1, y1) = points.min(axis=0), points.max(axis=0)  # corners in any order
        return RawRegion(label, class_name, [rectangle_polygon(x0, y0, x1 - x0, y1 - y0)])
    if shape_type == "circle":
        (cx, cy), edge = points
        return RawRegion(label, class_name, [circle_polygon(cx, cy, float(np.hypot(*(edge - (cx, cy)))))])
    # mask: the PNG covers the bbox whose top-left corner is the first point
    x, y = np.round(points.min(axis=0)).astype(int)
    return RawRegion(label, class_name, mask=_decode_mask(shape.get("mask")), mask_origin=(int(x), int(y)))


def _embedded_image(image_data: str, missing: Path) -> Path | None:
    """The image LabelMe embeds (`imageData`, base64 of the file's bytes) as a file in the cache folder.

    Written once under a content-hash name in `$BOOKSEG_CACHE/labelme-images/` (default
    `./.cache/bookseg`), never next to the user's files; None when the data is not base64 (the image
    is then reported missing as usual).
    """
    try:
        content = base64.b64decode(image_data, validate=True)
    except (binascii.Error, ValueError):
        return None
    folder = Path(os.environ.get("BOOKSEG_CACHE") or Path.cwd() / ".cache" / "bookseg") / "labelme-images"
    path = folder / f"{hashlib.sha256(content).hexdigest()[:20]}{missing.suffix.lower() or '.png'}"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_bytes(content)
        os.replace(tmp, path)
    return path


def read_labelme(data: dict, ctx: ReadContext, *, basename_only: bool = False) -> RawImage | None:
    """Read one LabelMe file into one image.

    Args:
        data: the parsed JSON.
        ctx: context whose `base_dirs` hold the JSON file's folder (or the images folder).
        basename_only: look the image up by the file name of `imagePath` only (used when an
            images folder is given explicitly, since `imagePath` is relative to the JSON file).
    """
    report = ctx.report
    image_path = data.get("imagePath")
    if not isinstance(image_path, str) or not isinstance(data.get("shapes"), list):
        report.add("bad_entry", ctx.source, "", "", "LabelMe file without imagePath or shapes")
        return None
    name = posixpath.normpath(image_path.replace("\\", "/"))
    if basename_only:
        name = posixpath.basename(name)
    path = resolve_image_path(name, ctx.base_dirs, report, ctx.source, name)
    if path is not None and not path.is_file() and isinstance(data.get("imageData"), str):
        path = _embedded_image(data["imageData"], path)
        if path is not None:
            report.add("embedded_image", ctx.source, name, "", f"image read from imageData into {path}")
    flags = data.get("flags") if isinstance(data.get("flags"), dict) else {}
    image = RawImage(
        name,
        image_path,
        path,
        integer_or_none(data.get("imageWidth")),
        integer_or_none(data.get("imageHeight")),
        attributes=dict(flags),
        source=ctx.source,
    )
    groups: dict[tuple, RawRegion] = {}
    for index, shape in enumerate(data["shapes"]):
        report.regions += 1
        if not isinstance(shape, dict):
            report.add("bad_region", ctx.source, name, f"shape {index}", "shape is not an object")
            continue
        shape_type = shape.get("shape_type") or "polygon"  # LabelMe <= 5.8 default
        text = shape.get("label")
        label = f'shape {index} ({shape_type}, "{text}")'
        if shape_type in ("point", "points"):
            report.add("point_skipped", ctx.source, name, label)
            continue
        if shape_type not in _POLYGON_TYPES + ("rectangle", "circle", "mask"):
            report.add("unknown_shape", ctx.source, name, label, f"unknown shape_type {shape_type!r}")
            continue
        extra = shape.get("attributes") if isinstance(shape.get("attributes"), dict) else {}
        attributes = {
            "label": text,
            "description": shape.get("description"),
            "group_id": shape.get("group_id"),
            **extra,
        }
        value = attributes.get(ctx.class_attribute) if ctx.class_attribute else None
        class_name = resolve_class(
            value, ctx, name, label, [k for k, v in attributes.items() if v is not None]
        )
        if class_name is None:
            continue
        try:
            region = _shape_region(shape_type, shape, label, class_name)
        except (TypeError, ValueError) as err:
            report.add("bad_region", ctx.source, name, label, str(err))
            continue
        if shape_type in ("line", "linestrip"):
            report.add("polyline_closed", ctx.source, name, label)
        group_id = shape.get("group_id")
        key = (text, group_id)
        if group_id is not None and key in groups:
            _merge(groups[key], region)
            report.add(
                "shapes_merged",
                ctx.source,
                name,
                label,
                f"merged into {groups[key].region} (same label and group_id)",
            )
            continue
        if group_id is not None:
            region.region += f", group {group_id}"
            groups[key] = region
        image.regions.append(region)
    return image


def _merge(target: RawRegion, part: RawRegion) -> None:
    """Add a grouped shape to its group's region (mask shapes are OR-ed on the image later)."""
    target.polygons.extend(part.polygons)
    if part.mask is not None:
        if target.mask is None:
            target.mask, target.mask_origin = part.mask, part.mask_origin
        else:  # two mask shapes in one group: combine on a canvas covering both
            (ax, ay), (bx, by) = target.mask_origin, part.mask_origin
            x0, y0 = min(ax, bx), min(ay, by)
            x1 = max(ax + target.mask.shape[1], bx + part.mask.shape[1])
            y1 = max(ay + target.mask.shape[0], by + part.mask.shape[0])
            canvas = np.zeros((y1 - y0, x1 - x0), bool)
            canvas[ay - y0 : ay - y0 + target.mask.shape[0], ax - x0 : ax - x0 + target.mask.shape[1]] |= (
                target.mask
            )
            canvas[by - y0 : by - y0 + part.mask.shape[0], bx - x0 : bx - x0 + part.mask.shape[1]] |= (
                part.mask
            )
            target.mask, target.mask_origin = canvas, (x0, y0)
