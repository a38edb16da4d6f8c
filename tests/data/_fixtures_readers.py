"""Builders of tiny annotated data sets for the reader / validation / check tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
OPEN_SHELVES = SHARED_DATA / "open_shelves" / "via_project.json"
BOOKSHELF = SHARED_DATA / "bookshelf_v5"


def write_image(path: Path, width: int = 64, height: int = 48, value: int = 90) -> Path:
    """Write a uniform RGB image (format from the suffix) and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((height, width, 3), value, np.uint8)).save(path)
    return path


def write_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def polygon(xs, ys, **attributes) -> dict:
    """A VIA 1/2 polygon region."""
    return {
        "shape_attributes": {"name": "polygon", "all_points_x": list(xs), "all_points_y": list(ys)},
        "region_attributes": attributes,
    }


def shape(name: str, region_attributes: dict | None = None, **fields) -> dict:
    """A VIA 1/2 region of any shape."""
    return {"shape_attributes": {"name": name, **fields}, "region_attributes": region_attributes or {}}


def square(x0: float, y0: float, side: float, **attributes) -> dict:
    return polygon([x0, x0 + side, x0 + side, x0], [y0, y0, y0 + side, y0 + side], **attributes)


def via2_entry(filename: str, regions: list, **file_attributes) -> dict:
    return {"filename": filename, "size": -1, "regions": regions, "file_attributes": file_attributes}


def via2_project(entries: list[dict], region_attributes: dict | None = None) -> dict:
    """A VIA 2 project from `via2_entry` dicts, keys `filename + size` as VIA writes them."""
    metadata = {f"{e['filename']}{e['size']}": e for e in entries}
    return {
        "_via_settings": {"project": {"name": "test"}},
        "_via_img_metadata": metadata,
        "_via_attributes": {"region": region_attributes or {}, "file": {}},
        "_via_data_format_version": "2.0.10",
        "_via_image_id_list": list(metadata),
    }


def write_via2_dataset(root: Path, entries: list[dict], size=(64, 48), **project_kwargs) -> Path:
    """Write the images of `entries` (uniform, `size` = (width, height)) and a project file."""
    for entry in entries:
        if not entry["filename"].startswith(("/", "..", "http")):
            write_image(root / entry["filename"], *size)
    return write_json(root / "project.json", via2_project(entries, **project_kwargs))


def coco(images: list[dict], annotations: list[dict], categories=None) -> dict:
    return {
        "info": {},
        "images": images,
        "annotations": [{"id": i + 1, "iscrowd": 0, **a} for i, a in enumerate(annotations)],
        "categories": categories if categories is not None else [{"id": 1, "name": "book"}],
    }


def labelme(image_path: str, shapes: list[dict], width: int = 64, height: int = 48) -> dict:
    return {
        "version": "5.5.0",
        "flags": {},
        "shapes": [
            {"label": "book", "group_id": None, "description": None, "flags": {}, "mask": None, **s}
            for s in shapes
        ],
        "imagePath": image_path,
        "imageData": None,
        "imageHeight": height,
        "imageWidth": width,
    }
