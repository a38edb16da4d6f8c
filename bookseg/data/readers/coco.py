"""COCO instances JSON.

`images` [{id, file_name, width, height, ...}], `categories` [{id, name, ...}], `annotations`
[{id, image_id, category_id, segmentation, iscrowd, ...}]. A segmentation is a list of polygons
[[x1, y1, x2, y2, ...], ...] (several polygons = one occluded object: the instance is their union)
or an RLE {"size": [h, w], "counts": list (uncompressed) | str (compressed)}. `bbox` and `area` are
not read: boxes are recomputed from the shapes. Classes come from the categories, in file order;
the region-attribute options of the loader do not apply.
"""

from __future__ import annotations

import warnings

import numpy as np
from pycocotools import mask as mask_utils

from bookseg.data.readers.common import ReadContext, integer_or_none, points_from_flat
from bookseg.data.validate import RawImage, RawRegion, resolve_image_path


def _categories(data: dict, ctx: ReadContext) -> tuple[dict, list[str]]:
    """({category id: name}, class names in file order with duplicate names merged)."""
    by_id, names = {}, []
    for index, category in enumerate(data.get("categories") or []):
        if (
            not isinstance(category, dict)
            or "id" not in category
            or not str(category.get("name", "")).strip()
        ):
            ctx.report.add("bad_entry", ctx.source, "", f"category {index}", "category without id or name")
            continue
        cid, name = category["id"], str(category["name"])
        if cid in by_id:
            ctx.report.add(
                "bad_entry", ctx.source, "", f"category {cid}", f"category id {cid} declared twice"
            )
            continue
        if name in names:
            ctx.report.add(
                "duplicate_category",
                ctx.source,
                "",
                f"category {cid}",
                f'category name "{name}" is used by several ids; merged',
            )
        else:
            names.append(name)
        by_id[cid] = name
    return by_id, names


def _image(entry, index: int, ctx: ReadContext) -> RawImage | None:
    if not isinstance(entry, dict) or "id" not in entry or not isinstance(entry.get("file_name"), str):
        ctx.report.add("bad_entry", ctx.source, f"images[{index}]", "", "image without id or file_name")
        return None
    image_id = entry["file_name"]
    path = resolve_image_path(image_id, ctx.base_dirs, ctx.report, ctx.source, image_id)
    attributes = {k: v for k, v in entry.items() if k not in ("file_name", "width", "height")}
    return RawImage(
        image_id,
        image_id,
        path,
        integer_or_none(entry.get("width")),
        integer_or_none(entry.get("height")),
        attributes=attributes,
        source=ctx.source,
    )


def _rle_mask(segmentation: dict) -> np.ndarray:
    """Decode an RLE segmentation to bool [h, w] (raises ValueError/TypeError when malformed)."""
    height, width = (int(v) for v in segmentation["size"])
    counts = segmentation["counts"]
    if isinstance(counts, list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    elif isinstance(counts, str):
        rle = {"size": [height, width], "counts": counts.encode("ascii")}
    else:
        raise TypeError("counts is neither a list nor a string")
    with warnings.catch_warnings():
        # pycocotools' Cython RLE object predates numpy 2's `copy` keyword of `__array__`.
        warnings.filterwarnings("ignore", "__array__ implementation", DeprecationWarning)
        return mask_utils.decode(rle).astype(bool)


def _region(ann: dict, label: str, class_name: str, image_id: str, ctx: ReadContext) -> RawRegion | None:
    segmentation = ann.get("segmentation")
    crowd = bool(ann.get("iscrowd", 0))
    if isinstance(segmentation, list):
        if not any(segmentation):
            ctx.report.add("bad_region", ctx.source, image_id, label, "no segmentation (bounding box only)")
            return None
        try:
            parts = [points_from_flat(part) for part in segmentation]
        except (TypeError, ValueError) as err:
            ctx.report.add("bad_region", ctx.source, image_id, label, f"bad polygon: {err}")
            return None
        return RawRegion(f"{label} (polygon)", class_name, parts, iscrowd=crowd)
    if isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        try:
            mask = _rle_mask(segmentation)
        except (TypeError, ValueError, KeyError) as err:
            ctx.report.add("bad_region", ctx.source, image_id, label, f"bad RLE: {err}")
            return None
        return RawRegion(f"{label} (rle)", class_name, mask=mask, mask_is_full_image=True, iscrowd=crowd)
    ctx.report.add("bad_region", ctx.source, image_id, label, "segmentation is neither polygons nor RLE")
    return None


def read_coco(data: dict, ctx: ReadContext) -> tuple[list[RawImage], list[str]]:
    """Read a COCO instances file.

    Returns:
        (images in file order, class names in category order). Categories no annotation uses are
        kept as classes and reported as `unused_category` warnings.
    """
    report = ctx.report
    if ctx.class_attribute is not None:
        report.add(
            "option_ignored",
            ctx.source,
            "",
            "",
            "class_attribute is ignored: COCO classes are its categories",
        )
    categories, class_names = _categories(data, ctx)
    images: dict = {}
    for index, entry in enumerate(data.get("images") or []):
        image = _image(entry, index, ctx)
        if image is None:
            continue
        if entry["id"] in images:
            report.add(
                "duplicate_image", ctx.source, image.image_id, "", f"image id {entry['id']} declared twice"
            )
            continue
        images[entry["id"]] = image
    used = set()
    for index, ann in enumerate(data.get("annotations") or []):
        report.regions += 1
        label = f"annotation {ann.get('id', index) if isinstance(ann, dict) else index}"
        if not isinstance(ann, dict):
            report.add("bad_region", ctx.source, "", label, "annotation is not an object")
            continue
        image = images.get(ann.get("image_id"))
        if image is None:
            report.add(
                "unknown_image",
                ctx.source,
                f"id {ann.get('image_id')}",
                label,
                "annotation for an image id not in images",
            )
            continue
        if ann.get("category_id") not in categories:
            report.add(
                "unknown_category",
                ctx.source,
                image.image_id,
                label,
                f"category id {ann.get('category_id')!r} not in categories",
            )
            continue
        class_name = categories[ann["category_id"]]
        region = _region(ann, label, class_name, image.image_id, ctx)
        if region is None:
            continue
        used.add(class_name)
        if region.iscrowd:
            report.add("crowd_region", ctx.source, image.image_id, region.region)
        image.regions.append(region)
    for name in class_names:
        if name not in used:
            report.add(
                "unused_category",
                ctx.source,
                "",
                f'category "{name}"',
                f'category "{name}" has no annotations',
            )
    return list(images.values()), class_names
