"""VGG Image Annotator 1.x / 2.x: JSON exports and VIA 2 project files.

Layouts:

- VIA 1 export: {image_id: {filename, size, file_attributes, regions: {"0": region, ...}}};
  polygons repeat their first vertex at the end.
- VIA 2 export: the same with `regions` a list (holes written as null).
- VIA 2 project: {"_via_img_metadata": <VIA 2 export>, "_via_attributes": {region, file},
  "_via_image_id_list": [...], "_via_settings": ...}. Attribute definitions map option ids of
  radio / dropdown / image / checkbox attributes to their labels.

A region is {"shape_attributes": {"name": shape, ...}, "region_attributes": {...}}; coordinates are
pixels of the displayed image, integers or floats. Shapes: polygon, polyline (closed, with a
warning), rect, circle, ellipse (optional `theta`, radians), point (skipped, with a warning).
"""

from __future__ import annotations

from bookseg.data.polygons import circle_polygon, ellipse_polygon, rectangle_polygon
from bookseg.data.readers.common import (
    ReadContext,
    integer_or_none,
    number,
    points_from_xy,
    resolve_class,
)
from bookseg.data.validate import RawImage, RawRegion, resolve_image_path


class UnknownShapeError(ValueError):
    """A region shape name this reader does not know."""


def option_labels(value, definition):
    """A VIA 2 attribute value with option ids turned into option labels.

    Args:
        value: as stored: text, an option id (radio, dropdown, image) or {option_id: bool}
            (checkbox).
        definition: the attribute's entry in `_via_attributes`, or None (exports carry none).

    Returns:
        A string, or a list of the ticked options' labels for checkbox values.
    """
    options = definition.get("options") if isinstance(definition, dict) else None
    options = options if isinstance(options, dict) else {}
    if isinstance(value, dict):
        return [str(options.get(key, key)) for key, ticked in value.items() if ticked]
    if isinstance(value, str) and value in options:
        return str(options[value])
    return value


def shape_polygon(name, shape: dict):
    """Polygon of a VIA 1/2 `shape_attributes` object: float64 [P, 2] (x, y).

    Raises:
        UnknownShapeError: `name` is not polygon, polyline, rect, circle or ellipse.
        KeyError, TypeError, ValueError: a coordinate is missing or not a number.
    """
    if name in ("polygon", "polyline"):
        return points_from_xy(shape["all_points_x"], shape["all_points_y"])
    if name == "rect":
        return rectangle_polygon(
            number(shape["x"]), number(shape["y"]), number(shape["width"]), number(shape["height"])
        )
    if name == "circle":
        return circle_polygon(number(shape["cx"]), number(shape["cy"]), number(shape["r"]))
    if name == "ellipse":
        theta = shape.get("theta")  # VIA >= 2.0.8; older files have none, which VIA reads as 0
        return ellipse_polygon(
            number(shape["cx"]),
            number(shape["cy"]),
            number(shape["rx"]),
            number(shape["ry"]),
            0.0 if theta is None else number(theta),
        )
    raise UnknownShapeError(f"unknown shape {name!r}")


def _region_items(regions):
    """(index, region) pairs from a VIA 1 dict (ordered by integer key) or a VIA 2 list."""
    if isinstance(regions, dict):
        return sorted(
            regions.items(), key=lambda kv: (0, int(kv[0])) if str(kv[0]).isdigit() else (1, str(kv[0]))
        )
    return list(enumerate(regions))


def _read_region(index, region, image_id: str, ctx: ReadContext, region_defs: dict) -> RawRegion | None:
    report = ctx.report
    report.regions += 1
    if region is None:
        report.add(
            "null_region",
            ctx.source,
            image_id,
            f"region {index}",
            "null region (a hole in the VIA list), skipped",
        )
        return None
    shape = region.get("shape_attributes") if isinstance(region, dict) else None
    if not isinstance(shape, dict):
        report.add(
            "bad_region", ctx.source, image_id, f"region {index}", "region has no shape_attributes object"
        )
        return None
    name = shape.get("name")
    label = f"region {index} ({name})"
    if name == "point":
        report.add("point_skipped", ctx.source, image_id, label)
        return None
    try:
        polygon = shape_polygon(name, shape)
    except UnknownShapeError:
        report.add("unknown_shape", ctx.source, image_id, label, f"unknown shape {name!r}")
        return None
    except (KeyError, TypeError, ValueError) as err:
        report.add("bad_region", ctx.source, image_id, label, f"bad {name} coordinates: {err!r}")
        return None
    attributes = region.get("region_attributes") or {}
    if not isinstance(attributes, dict):
        report.add("bad_region", ctx.source, image_id, label, "region_attributes is not an object")
        return None
    value = None
    if ctx.class_attribute is not None:
        value = option_labels(attributes.get(ctx.class_attribute), region_defs.get(ctx.class_attribute))
    class_name = resolve_class(value, ctx, image_id, label, attributes)
    if class_name is None:
        return None
    if name == "polyline":
        report.add("polyline_closed", ctx.source, image_id, label)
    return RawRegion(label, class_name, [polygon])


def _read_entry(key: str, entry, ctx: ReadContext, attribute_defs: dict) -> RawImage | None:
    if not isinstance(entry, dict) or not isinstance(entry.get("filename"), str):
        ctx.report.add("bad_entry", ctx.source, str(key), "", "image entry without a filename")
        return None
    image_id = entry["filename"]
    file_defs = attribute_defs.get("file") or {}
    raw_attributes = entry.get("file_attributes") or {}
    if not isinstance(raw_attributes, dict):
        ctx.report.add("bad_entry", ctx.source, image_id, "", "file_attributes is not an object")
        raw_attributes = {}
    attributes = {name: option_labels(value, file_defs.get(name)) for name, value in raw_attributes.items()}
    path = resolve_image_path(image_id, ctx.base_dirs, ctx.report, ctx.source, image_id)
    image = RawImage(
        image_id,
        image_id,
        path,
        # VIA's COCO import stores the image size as file attributes "width" / "height".
        integer_or_none(raw_attributes.get("width")),
        integer_or_none(raw_attributes.get("height")),
        attributes=attributes,
        source=ctx.source,
    )
    regions = entry.get("regions", [])
    if not isinstance(regions, (dict, list)):
        ctx.report.add("bad_entry", ctx.source, image_id, "", "regions is neither a list nor an object")
        return image
    region_defs = attribute_defs.get("region") or {}
    for index, region in _region_items(regions):
        raw = _read_region(index, region, image_id, ctx, region_defs)
        if raw is not None:
            image.regions.append(raw)
    return image


def read_via_export(data: dict, ctx: ReadContext) -> list[RawImage]:
    """Read a VIA 1.x or 2.x JSON export ({image_id: entry}, the dict order is the image order)."""
    images = (_read_entry(key, entry, ctx, {}) for key, entry in data.items())
    return [image for image in images if image is not None]


def read_via2_project(data: dict, ctx: ReadContext) -> list[RawImage]:
    """Read a VIA 2 project file, in `_via_image_id_list` order when present."""
    metadata = data["_via_img_metadata"]
    if not isinstance(metadata, dict):
        ctx.report.add("bad_entry", ctx.source, "", "", "_via_img_metadata is not an object")
        return []
    attribute_defs = data.get("_via_attributes") or {}
    order = data.get("_via_image_id_list") or list(metadata)
    listed = set(order)
    order = list(order) + [key for key in metadata if key not in listed]
    images = []
    for key in order:
        if key not in metadata:
            ctx.report.add(
                "bad_entry", ctx.source, str(key), "", "listed in _via_image_id_list but has no metadata"
            )
            continue
        image = _read_entry(key, metadata[key], ctx, attribute_defs)
        if image is not None:
            images.append(image)
    return images
