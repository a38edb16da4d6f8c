"""Validation of parsed annotations: image files, paths and region geometry.

Readers parse a file into `RawImage` / `RawRegion` (polygons as written, no checks beyond parsing)
and report what they cannot parse. `validate_images` then checks each image file and region and
turns them into `ImageRecord`s. Every problem names the annotation file, the image and the region.
The problem catalogue and the report live in `bookseg.data.problems` and are re-exported here.

Points outside the image: VIA and friends store rounded click positions, so a vertex up to half a
pixel beyond the border is rounding noise (a note); further out is a warning. Both are clipped to
the image rectangle with Sutherland-Hodgman, which keeps the covered pixels unchanged.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath

import numpy as np

from bookseg.data.images import ImageReadError, image_orientation, image_size
from bookseg.data.polygons import (
    clip_polygon,
    drop_repeated_vertices,
    is_degenerate,
    polygon_stats,
)
from bookseg.data.problems import (
    ERROR,
    NOTE,
    PROBLEM_KINDS,
    WARNING,
    DatasetError,
    Kind,
    Problem,
    ValidationReport,
)
from bookseg.data.records import ImageRecord, Instance, rasterize_polygon

__all__ = [
    "BORDER_TOLERANCE",
    "ERROR",
    "NOTE",
    "PROBLEM_KINDS",
    "WARNING",
    "DatasetError",
    "Kind",
    "Problem",
    "RawImage",
    "RawRegion",
    "ValidationReport",
    "resolve_image_path",
    "validate_images",
]

# ----------------------------------------------------------------------------------------------
# Parsed annotations, before validation.

# Vertices may lie this far (px) outside the image before it counts as a warning (rounding noise).
BORDER_TOLERANCE = 0.5
# Polygons smaller than this (px^2) are rasterised once to check that they cover a pixel centre.
_SMALL_AREA = 16.0


@dataclass
class RawRegion:
    """One annotated region as a reader parsed it.

    Attributes:
        region: location for messages, e.g. "region 3 (polygon)".
        class_name: class label.
        polygons: parts of the region, each float64 [P, 2] (x, y) in pixels; the instance is their
            union (one part for VIA shapes, several for COCO multi-polygons or LabelMe groups).
        mask: bool [h, w] mask whose top-left pixel sits at `mask_origin`, or None.
        mask_origin: (x, y) pixel offset of `mask` in the image.
        mask_is_full_image: the mask must be exactly the image size (COCO RLE).
        iscrowd: COCO crowd region.
    """

    region: str
    class_name: str
    polygons: list[np.ndarray] = field(default_factory=list)
    mask: np.ndarray | None = None
    mask_origin: tuple[int, int] = (0, 0)
    mask_is_full_image: bool = False
    iscrowd: bool = False


@dataclass
class RawImage:
    """One image entry as a reader parsed it.

    Attributes:
        image_id: unique id (file name as written in the annotation, for messages and folds).
        file_name: image file name as written in the annotation.
        path: absolute image path, or None when the name was rejected (the error is reported).
        width, height: size given by the annotation (after EXIF orientation), or None.
        regions: parsed regions.
        attributes: file-level attributes.
        source: annotation file.
    """

    image_id: str
    file_name: str
    path: Path | None
    width: int | None
    height: int | None
    regions: list[RawRegion] = field(default_factory=list)
    attributes: dict = field(default_factory=dict)
    source: str = ""


_URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://|data:)")


def resolve_image_path(
    file_name: str, base_dirs: list[Path], report: ValidationReport, source: str, image_id: str
) -> Path | None:
    """Turn a file name from an annotation into an absolute path inside the data set folder.

    Args:
        file_name: name as written (relative, "/" separated; "\\" is also read as a separator for
            the safety check).
        base_dirs: absolute folders to look in, in order; the first holding the file wins, and the
            first is used (and reported missing later) when none does.

    Returns:
        The path, or None after reporting an error: URL or inline data (`remote_image`), absolute
        path or a name escaping the folder with ".." (`unsafe_path`), empty name (`bad_entry`).
    """
    name = str(file_name) if file_name is not None else ""
    if not name:
        report.add("bad_entry", source, image_id, "", "empty image file name")
        return None
    if _URL.match(name):
        report.add(
            "remote_image", source, image_id, "", f'image "{name[:80]}" is a URL or inline data, not a file'
        )
        return None
    if name.startswith(("/", "\\")) or PureWindowsPath(name).is_absolute() or PureWindowsPath(name).drive:
        report.add(
            "unsafe_path",
            source,
            image_id,
            "",
            f'absolute image path "{name}" (use a path relative to the images folder)',
        )
        return None
    normal = posixpath.normpath(name.replace("\\", "/"))
    if normal == ".." or normal.startswith("../"):
        report.add("unsafe_path", source, image_id, "", f'image path "{name}" escapes the images folder')
        return None
    candidates = [base / posixpath.normpath(name) for base in base_dirs]
    return next((path for path in candidates if path.is_file()), candidates[0])


# ----------------------------------------------------------------------------------------------
# Checks.


def _size_message(raw: RawImage, actual: tuple[int, int]) -> str:
    text = (
        f"annotation gives {raw.width}x{raw.height} (WxH), image file {raw.path} is {actual[0]}x{actual[1]}"
    )
    if (raw.height, raw.width) == actual:
        orientation = image_orientation(raw.path)
        if orientation != 1:
            text += (
                f" after EXIF orientation {orientation}; the annotation matches the stored, unrotated image"
            )
        else:
            text += "; width and height are swapped"
    return text


def _checked_size(raw: RawImage, report: ValidationReport, check_images: bool) -> tuple[int, int] | None:
    """The image's displayed (width, height), or None after reporting why it cannot be used."""
    annotated = (raw.width, raw.height) if raw.width is not None and raw.height is not None else None
    if annotated is not None and not check_images:
        return annotated
    try:
        actual = image_size(raw.path)
    except FileNotFoundError:
        report.add("missing_image", raw.source, raw.image_id, "", f"image file not found: {raw.path}")
        return None
    except (ImageReadError, OSError) as err:
        report.add("unreadable_image", raw.source, raw.image_id, "", str(err))
        return None
    if annotated is not None and annotated != actual:
        report.add("size_mismatch", raw.source, raw.image_id, "", _size_message(raw, actual))
        return None
    return actual


@dataclass
class _Part:
    """One polygon part with its precomputed measurements."""

    polygon: np.ndarray
    crossing: bool
    degenerate: bool
    area: float
    reach: float  # px beyond the image rectangle, 0 when inside


def _polygon_part(part: _Part, label: str, raw: RawImage, width: int, height: int, report: ValidationReport):
    """Check and fix one polygon; returns (polygon or None, reason it was dropped)."""
    if part.degenerate:
        return None, f"{len(part.polygon)} vertices enclosing no area"
    poly = part.polygon
    if part.reach > 0:
        clipped = clip_polygon(poly, width, height)
        # Clipping a simple polygon leaves it (weakly) simple, so its shoelace area is the area left.
        if is_degenerate(clipped, part.crossing):
            return None, f"lies entirely outside the {width}x{height} image"
        kind = "points_outside_image" if part.reach > BORDER_TOLERANCE else "points_on_border"
        report.add(
            kind,
            raw.source,
            raw.image_id,
            label,
            f"points reach {part.reach:.1f} px outside the {width}x{height} image; clipped to the border",
        )
        poly = clipped
    if part.crossing:
        report.add("self_intersecting", raw.source, raw.image_id, label)
    return poly, ""


def _covers_pixels(poly: np.ndarray) -> bool:
    """Whether a (small) polygon covers at least one pixel centre; rasterises its bounding box only."""
    x0, y0 = np.floor(poly.min(axis=0)).astype(int)
    x1, y1 = np.ceil(poly.max(axis=0)).astype(int)
    return bool(rasterize_polygon(poly - (x0, y0), y1 - y0 + 1, x1 - x0 + 1).any())


def _place_mask(region: RawRegion, raw: RawImage, width: int, height: int, report: ValidationReport):
    """The region's mask on the full image as bool [height, width], or None after reporting why not."""
    mask = np.asarray(region.mask, bool)
    if region.mask_is_full_image:
        if mask.shape != (height, width):
            report.add(
                "bad_region",
                raw.source,
                raw.image_id,
                region.region,
                f"mask is {mask.shape[1]}x{mask.shape[0]} (WxH) but the image is {width}x{height}",
            )
            return None
        return mask
    full = np.zeros((height, width), bool)
    x, y = region.mask_origin
    h, w = mask.shape
    ys, xs = slice(max(y, 0), min(y + h, height)), slice(max(x, 0), min(x + w, width))
    if ys.start < ys.stop and xs.start < xs.stop:
        full[ys, xs] = mask[ys.start - y : ys.stop - y, xs.start - x : xs.stop - x]
    return full


def _instance(
    region: RawRegion, parts: list[_Part], raw: RawImage, width: int, height: int, report
) -> Instance | None:
    """Validate one region into an Instance, or None after reporting why it was dropped."""
    several = len(parts) + (region.mask is not None) > 1
    kept, reasons = [], []
    for k, part in enumerate(parts):
        label = f"{region.region} part {k}" if several else region.region
        poly, reason = _polygon_part(part, label, raw, width, height, report)
        if poly is None:
            reasons.append((label, reason))
        else:
            kept.append((poly, part))
    mask = None
    if region.mask is not None:
        mask = _place_mask(region, raw, width, height, report)
        if mask is None:
            return None
        if not mask.any():
            if not kept:
                report.add("empty_mask", raw.source, raw.image_id, region.region)
                return None
            mask = None
    if not kept and mask is None:
        reason = reasons[0][1] if reasons else "no shape"
        kind = "outside_image" if "outside" in reason else "degenerate_polygon"
        report.add(kind, raw.source, raw.image_id, region.region, f"{PROBLEM_KINDS[kind].meaning} ({reason})")
        return None
    for label, reason in reasons:
        report.add("degenerate_part", raw.source, raw.image_id, label, f"part dropped ({reason})")
    if len(kept) == 1 and mask is None:
        poly, part = kept[0]
        if part.area < _SMALL_AREA and not _covers_pixels(poly):
            report.add("no_pixels", raw.source, raw.image_id, region.region)
            return None
        return Instance(region.class_name, polygon=poly, region=region.region, iscrowd=region.iscrowd)
    union = np.zeros((height, width), bool) if mask is None else mask.copy()
    for poly, _ in kept:
        union |= rasterize_polygon(poly, height, width)
    if not union.any():
        report.add("no_pixels", raw.source, raw.image_id, region.region)
        return None
    return Instance(region.class_name, mask=union, region=region.region, iscrowd=region.iscrowd)


def _usable_images(images: list[RawImage], report: ValidationReport, check_images: bool):
    """(image, width, height) for every image that is unique, exists and matches its annotated size."""
    usable = []
    seen_paths: dict[Path, str] = {}
    seen_ids: set[str] = set()
    for raw in images:
        if raw.path is None:
            continue
        if raw.path in seen_paths or raw.image_id in seen_ids:
            first = seen_paths.get(raw.path, raw.image_id)
            report.add(
                "duplicate_image",
                raw.source,
                raw.image_id,
                "",
                f'entry resolves to the same image as entry "{first}" ({raw.path})',
            )
            continue
        seen_paths[raw.path] = raw.image_id
        seen_ids.add(raw.image_id)
        size = _checked_size(raw, report, check_images)
        if size is not None:
            usable.append((raw, *size))
    return usable


def validate_images(
    images: list[RawImage], report: ValidationReport, *, check_images: bool = True
) -> list[ImageRecord]:
    """Check image files and regions; return the usable images as records.

    Args:
        images: parsed entries, in data set order.
        report: receives every problem; `report.instances` is set to the instances kept.
        check_images: read every image header (existence, readability, size). When False, images
            whose annotation gives a size are not opened at all.

    Returns:
        One record per image that exists (and matches its annotated size), with instances whose
        polygons are clipped to the image and have no repeated vertices. Images with errors are
        left out (the errors are in the report).
    """
    usable = _usable_images(images, report, check_images)
    # Measure every polygon of the data set in one vectorised pass.
    polygons, sizes = [], []
    for raw, width, height in usable:
        for region in raw.regions:
            for poly in region.polygons:
                polygons.append(drop_repeated_vertices(poly))
                sizes.append((width, height))
    stats = polygon_stats(polygons)
    sizes = np.array(sizes, np.float64).reshape(-1, 2)
    beyond = np.concatenate([-stats.bounds[:, :2], stats.bounds[:, 2:] - sizes], axis=1)
    reach = np.maximum(beyond.max(axis=1, initial=0.0), 0.0)
    parts = iter(
        _Part(poly, bool(crossing), bool(degenerate), float(area), float(out))
        for poly, crossing, degenerate, area, out in zip(
            polygons, stats.self_intersecting, stats.degenerate, stats.area, reach
        )
    )
    records = []
    for raw, width, height in usable:
        instances = []
        for region in raw.regions:
            region_parts = [next(parts) for _ in region.polygons]
            instance = _instance(region, region_parts, raw, width, height, report)
            if instance is not None:
                instances.append(instance)
        if not instances:
            report.add("image_without_instances", raw.source, raw.image_id)
        records.append(
            ImageRecord(
                raw.image_id,
                raw.path,
                width,
                height,
                instances,
                group=raw.image_id,
                source=raw.source,
                attributes=raw.attributes,
            )
        )
    report.instances = sum(len(r.instances) for r in records)
    return records
