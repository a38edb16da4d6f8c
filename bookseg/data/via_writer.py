"""Write image records as a VIA 2.0.x project file that VIA opens and `load_dataset` reads back.

The layout, and the rules VIA itself needs to open the file:

- all five top-level keys (`_via_settings`, `_via_img_metadata`, `_via_attributes`,
  `_via_data_format_version`, `_via_image_id_list`);
- settings hold only keys VIA knows (an unknown key aborts VIA's project load), with
  `core.default_filepath` ending in "/" because VIA builds each image source as
  `default_filepath + filename` by plain string concatenation;
- metadata key = `filename + str(size)` with the real byte size of the image file (or -1 when the
  file does not exist), entries with all four keys, `regions` a list, polygons open
  (first vertex not repeated) as `all_points_x` / `all_points_y`;
- `_via_image_id_list` = the metadata keys in order; `_via_attributes` declares every region and
  file attribute written (type "text").

Instances given as masks become polygons: the largest outer contour (cv2), lightly simplified.
Coordinates follow records.py: a vertex at (x + 0.5, y + 0.5) is the centre of pixel (row y, col x),
so an unsimplified contour rasterises back to exactly the mask it came from.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np

from bookseg.data.polygons import self_intersections
from bookseg.data.records import ImageRecord, Instance, rasterize_polygon

log = logging.getLogger(__name__)

VIA_DATA_FORMAT_VERSION = "2.0.10"

# Decimal places kept for polygon vertices (VIA itself writes integers for drawn shapes and keeps
# imported floats; half-pixel vertices need at least one decimal).
_DECIMALS = 2


def write_via2_project(
    records: Sequence[ImageRecord],
    path: str | os.PathLike,
    *,
    class_attribute: str = "name",
    project_name: str | None = None,
    default_filepath: str | None = None,
    region_attributes: Mapping[str, Sequence[Mapping[str, str]]] | None = None,
    simplify_tolerance: float = 0.5,
    overwrite: bool = False,
) -> Path:
    """Write `records` as a VIA 2.0.x project file.

    Args:
        records: images to write, in this order. Each instance is written as one polygon region with
            `region_attributes[class_attribute] = instance.class_name`; instances that only have a
            mask are converted (`mask_to_polygon`). Record `attributes` become file attributes.
        path: output JSON file.
        class_attribute: name of the region attribute holding the class.
        project_name: `_via_settings.project.name`; defaults to the JSON file's stem.
        default_filepath: folder VIA prepends to every file name. Default: the images' common folder,
            relative to the JSON file's folder when it lies inside it (e.g. "images/"), else absolute.
            A trailing "/" is added when missing.
        region_attributes: extra region attributes per image id, one mapping per instance in order
            (e.g. `{"img1": [{"score": "0.97"}, ...]}` from prediction).
        simplify_tolerance: max distance (pixels) of the simplified polygon from the mask contour
            (`cv2.approxPolyDP` epsilon); 0 keeps every contour vertex.
        overwrite: replace an existing file at `path`. Without it an existing file is an error.

    Returns:
        The path written.

    Raises:
        FileExistsError: `path` exists and `overwrite` is False.
        ValueError: duplicate file names, image ids, or region attribute lists of the wrong length.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: exists; refusing to overwrite it (pass overwrite=True to replace it)")
    records = list(records)
    region_attributes = dict(region_attributes or {})
    if default_filepath is None:
        base_dir, names = _common_folder(records)
        default_filepath = _relative_or_absolute(base_dir, path.resolve().parent)
    else:
        base_dir = None
        names = [Path(r.path).name for r in records]
    if not default_filepath.endswith(("/", "\\")):
        default_filepath += "/"
    _check_unique(records, names, path)

    metadata: dict[str, dict] = {}
    region_attr_names: dict[str, None] = {class_attribute: None}
    file_attr_names: dict[str, None] = {}
    issues: Counter[str] = Counter()
    for record, filename in zip(records, names):
        extras = region_attributes.pop(record.image_id, None)
        if extras is not None and len(extras) != len(record.instances):
            raise ValueError(
                f"{path}: image {record.image_id!r}: {len(extras)} region attribute entries for "
                f"{len(record.instances)} instances"
            )
        regions = []
        for index, instance in enumerate(record.instances):
            polygon = _instance_polygon(instance, record, simplify_tolerance, issues)
            if polygon is None:
                continue
            attrs = {class_attribute: instance.class_name}
            if extras is not None:
                attrs.update({str(k): _text(v) for k, v in extras[index].items()})
            region_attr_names.update(dict.fromkeys(attrs))
            regions.append({"shape_attributes": _polygon_shape(polygon), "region_attributes": attrs})
        file_attrs = {str(k): _attribute_value(v) for k, v in record.attributes.items()}
        file_attr_names.update(dict.fromkeys(file_attrs))
        image_path = Path(record.path)
        size = os.path.getsize(image_path) if image_path.is_file() else -1
        metadata[f"{filename}{size}"] = {
            "filename": filename,
            "size": int(size),
            "regions": regions,
            "file_attributes": file_attrs,
        }
    if region_attributes:
        unknown = ", ".join(sorted(region_attributes)[:5])
        raise ValueError(f"{path}: region attributes given for unknown image ids: {unknown}")
    if issues:
        details = ", ".join(f"{count} {kind}" for kind, count in sorted(issues.items()))
        log.warning("%s: mask to polygon conversion: %s", path, details)

    project = {
        "_via_settings": _settings(project_name or path.stem, default_filepath),
        "_via_img_metadata": metadata,
        "_via_attributes": {
            "region": {name: _text_attribute(name == class_attribute) for name in region_attr_names},
            "file": {name: _text_attribute(False) for name in file_attr_names},
        },
        "_via_data_format_version": VIA_DATA_FORMAT_VERSION,
        "_via_image_id_list": list(metadata),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(project, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")
    os.replace(tmp, path)
    return path


def mask_to_polygon(
    mask: np.ndarray, simplify_tolerance: float = 0.5, min_iou: float = 0.97
) -> tuple[np.ndarray | None, int]:
    """Outline of a mask's largest connected part as a simple open polygon (see `_outline`).

    A part with 1-pixel-wide spurs or slits traces as an outline that runs back over itself, which
    readers flag as self-intersecting; when simplifying (`simplify_tolerance` > 0) such a part is
    outlined again after a 3 x 3 opening (the spurs removed), kept when that outline is simple.
    Without simplification the exact trace is kept: it rasterises back to exactly the part.
    """
    polygon, parts = _outline(mask, simplify_tolerance, min_iou)
    if simplify_tolerance > 0 and polygon is not None and self_intersections([polygon])[0]:
        opened = cv2.morphologyEx(
            np.ascontiguousarray(mask, np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)
        )
        retry, _ = _outline(opened.astype(bool), simplify_tolerance, min_iou)
        if retry is not None and not self_intersections([retry])[0]:
            polygon = retry
    return polygon, parts


def _outline(mask: np.ndarray, simplify_tolerance: float, min_iou: float) -> tuple[np.ndarray | None, int]:
    """Outline of a mask's largest connected part as an open polygon.

    The contour runs through the centres of the part's boundary pixels, which rasterises back to
    exactly the part. Simplifying (`cv2.approxPolyDP`) cuts through boundary pixels on slanted
    edges, so the simplified outline is also tried pushed outwards by 0.25 and 0.5 px; the variant
    that rasterises closest to the part is kept, and the exact contour is used when none reaches
    `min_iou`.

    Args:
        mask: bool [H, W].
        simplify_tolerance: `cv2.approxPolyDP` epsilon in pixels (0: no simplification).
        min_iou: smallest IoU with the part a simplified outline may have.

    Returns:
        (polygon, parts): polygon float64 [P, 2] (x, y) in records.py pixel coordinates (P >= 3), or
        None for an empty mask; parts = number of outer contours found (parts beyond the largest are
        not in the polygon). Holes are filled. Parts without area (single pixels, lines) become
        their pixel-edge bounding box.
    """
    mask_u8 = np.ascontiguousarray(mask, dtype=np.uint8)
    contours, _ = cv2.findContours(mask_u8, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None, 0
    # Largest by pixel count of the filled contour, not contour area: a 1-pixel-wide part has zero area.
    sizes = [_filled_pixels(c) for c in contours]
    contour = contours[int(np.argmax(sizes))].reshape(-1, 2)
    exact = contour.astype(np.float64) + 0.5
    if len(exact) < 3 or abs(_shoelace(exact)) < 1.0:
        x, y, w, h = cv2.boundingRect(contour.reshape(-1, 1, 2))
        return np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], np.float64), len(contours)
    if simplify_tolerance <= 0 or len(contour) <= 4:
        return exact, len(contours)
    simplified = cv2.approxPolyDP(contour.reshape(-1, 1, 2), simplify_tolerance, True).reshape(-1, 2) + 0.5
    if len(simplified) < 3:
        return exact, len(contours)
    # Compare rasterisations inside the part's bounding window (plus a margin for the offsets).
    x, y, w, h = cv2.boundingRect(contour.reshape(-1, 1, 2))
    origin = np.array([x - 2, y - 2], np.float64)
    target = rasterize_polygon(exact - origin, h + 4, w + 4)
    best, best_iou = exact, -1.0
    for offset in (0.0, 0.25, 0.5):
        candidate = _offset_outwards(simplified, offset)
        drawn = rasterize_polygon(candidate - origin, h + 4, w + 4)
        iou = np.count_nonzero(drawn & target) / np.count_nonzero(drawn | target)
        if iou > best_iou:
            best, best_iou = candidate, iou
    return (best if best_iou >= min_iou else exact), len(contours)


def _offset_outwards(polygon: np.ndarray, distance: float) -> np.ndarray:
    """Move each edge of a simple polygon `distance` px outwards (mitred corners, miter <= 2 * distance)."""
    if distance == 0:
        return polygon
    orientation = 1.0 if _shoelace(polygon) > 0 else -1.0
    after = np.roll(polygon, -1, axis=0) - polygon  # edge leaving each vertex
    before = polygon - np.roll(polygon, 1, axis=0)  # edge arriving at each vertex

    def outward_normal(edge):
        normal = np.stack([edge[:, 1], -edge[:, 0]], axis=1) * orientation
        return normal / np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)

    n_after, n_before = outward_normal(after), outward_normal(before)
    bisector = n_after + n_before
    bisector /= np.maximum(np.linalg.norm(bisector, axis=1, keepdims=True), 1e-12)
    cos_half = np.sum(bisector * n_after, axis=1, keepdims=True)
    return polygon + bisector * distance / np.maximum(cos_half, 0.5)


def _instance_polygon(
    instance: Instance, record: ImageRecord, tolerance: float, issues: Counter
) -> np.ndarray | None:
    if instance.polygon is not None:
        return np.asarray(instance.polygon, np.float64).reshape(-1, 2)
    polygon, parts = mask_to_polygon(instance.to_mask(record.height, record.width), tolerance)
    if polygon is None:
        issues["empty masks skipped"] += 1
        log.debug("%s: empty mask, not written", record.where(instance.region))
    elif parts > 1:
        issues[f"masks with several parts (only the largest written, {parts - 1} parts left out)"] += 1
    return polygon


def _polygon_shape(polygon: np.ndarray) -> dict:
    # VIA2 polygons are open: drop a repeated closing vertex.
    if len(polygon) > 3 and np.array_equal(polygon[0], polygon[-1]):
        polygon = polygon[:-1]
    return {
        "name": "polygon",
        "all_points_x": [_number(v) for v in polygon[:, 0]],
        "all_points_y": [_number(v) for v in polygon[:, 1]],
    }


def _number(value: float) -> int | float:
    value = round(float(value), _DECIMALS)
    return int(value) if value.is_integer() else value


def _text(value) -> str:
    return value if isinstance(value, str) else str(value)


def _attribute_value(value):
    # Text attributes hold strings; checkbox-style {option: True} dicts pass through unchanged.
    return value if isinstance(value, dict) else _text(value)


def _text_attribute(is_class: bool) -> dict:
    return {"type": "text", "description": "object class" if is_class else "", "default_value": ""}


def _settings(project_name: str, default_filepath: str) -> dict:
    """VIA 2.0.11 default settings (only keys VIA knows), with our project name and image folder."""
    return {
        "ui": {
            "annotation_editor_height": 25,
            "annotation_editor_fontsize": 0.8,
            "leftsidebar_width": 18,
            "image_grid": {
                "img_height": 80,
                "rshape_fill": "none",
                "rshape_fill_opacity": 0.3,
                "rshape_stroke": "yellow",
                "rshape_stroke_width": 2,
                "show_region_shape": True,
                "show_image_policy": "all",
            },
            "image": {
                "region_label": "__via_region_id__",
                "region_color": "__via_default_region_color__",
                "region_label_font": "10px Sans",
                "on_image_annotation_editor_placement": "NEAR_REGION",
            },
        },
        "core": {"buffer_size": 18, "filepath": {}, "default_filepath": default_filepath},
        "project": {"name": project_name},
    }


def _common_folder(records: Sequence[ImageRecord]) -> tuple[Path, list[str]]:
    """Common folder of all image files and each file name relative to it (posix)."""
    paths = [Path(r.path).absolute() for r in records]
    if not paths:
        return Path("."), []
    base = Path(os.path.commonpath([p.parent for p in paths]))
    return base, [p.relative_to(base).as_posix() for p in paths]


def _relative_or_absolute(folder: Path, json_dir: Path) -> str:
    folder = folder.resolve()
    try:
        relative = folder.relative_to(json_dir).as_posix()
    except ValueError:
        return folder.as_posix() + "/"
    return "./" if relative == "." else relative + "/"


def _check_unique(records: Iterable[ImageRecord], names: Sequence[str], path: Path) -> None:
    seen_ids: set[str] = set()
    seen_names: dict[str, str] = {}
    for record, name in zip(records, names):
        if record.image_id in seen_ids:
            raise ValueError(f"{path}: image id {record.image_id!r} appears twice")
        seen_ids.add(record.image_id)
        if name in seen_names:
            raise ValueError(
                f"{path}: images {seen_names[name]!r} and {record.image_id!r} share the file name {name!r}"
            )
        seen_names[name] = record.image_id


def _filled_pixels(contour: np.ndarray) -> int:
    x, y, w, h = cv2.boundingRect(contour)
    canvas = np.zeros((h, w), np.uint8)
    cv2.drawContours(canvas, [contour - np.array([x, y])], -1, 1, thickness=cv2.FILLED)
    return int(canvas.sum())


def _shoelace(polygon: np.ndarray) -> float:
    x, y = polygon[:, 0], polygon[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))
