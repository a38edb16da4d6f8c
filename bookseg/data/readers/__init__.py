"""One entry point for every annotation format: `load_dataset(path) -> Dataset`.

Formats (auto-detected from the JSON structure; each reader's docstring gives its layout):

- "via2_project": VIA 2 project file (`_via_img_metadata`);
- "via3": VIA 3 project (`project` plus `metadata` / `file` / `view`);
- "coco": COCO instances (`images`, `annotations`, `categories`);
- "labelme": LabelMe (`shapes`, `imagePath`), one file or a folder of them;
- "via1" / "via2": VIA JSON export, {id: {filename, regions}} with `regions` an object (VIA 1)
  or a list (VIA 2).

Loading parses the file, resolves image paths (relative to the annotation's folder, or its
`images/` subfolder, unless `images_dir` is given), reads image headers (not pixels) and validates
every region (`bookseg.data.validate`). Records hold polygons; masks are rasterised on demand by
`ImageRecord.masks()`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from bookseg.data.readers.coco import read_coco
from bookseg.data.readers.common import ReadContext
from bookseg.data.readers.labelme import read_labelme
from bookseg.data.readers.via import read_via2_project, read_via_export
from bookseg.data.readers.via3 import read_via3_project
from bookseg.data.records import ImageRecord
from bookseg.data.validate import DatasetError, Problem, RawImage, ValidationReport, validate_images

FORMATS = ("via1", "via2", "via2_project", "via3", "coco", "labelme")

__all__ = ["FORMATS", "Dataset", "DatasetError", "detect_format", "load_dataset", "read_dataset"]


@dataclass
class Dataset:
    """Images with their instances, as read and validated from one annotation source.

    Attributes:
        records: one per usable image, in annotation order.
        class_names: class labels without background: COCO category order, else `class_names` as
            given, else the classes found sorted alphabetically (`[default_class]` when no class
            attribute is configured).
        report: every problem found, with counts.
        source: the annotation file (or the LabelMe folder).
        format: one of `FORMATS`.
    """

    records: list[ImageRecord]
    class_names: list[str]
    report: ValidationReport
    source: Path
    format: str

    @property
    def num_instances(self) -> int:
        return sum(len(record.instances) for record in self.records)


def _fatal(kind: str, source, message: str) -> DatasetError:
    return DatasetError([Problem(kind, str(source), "", "", message)])


def detect_format(data) -> str | None:
    """Format name of parsed annotation JSON (one of `FORMATS`), or None when unrecognised."""
    if not isinstance(data, dict):
        return None
    if "_via_img_metadata" in data:
        return "via2_project"
    if "project" in data and any(key in data for key in ("metadata", "file", "view")):
        return "via3"
    if all(key in data for key in ("images", "annotations", "categories")):
        return "coco"
    if "shapes" in data and "imagePath" in data:
        return "labelme"
    entries = list(data.values())
    if entries and all(isinstance(e, dict) and "filename" in e and "regions" in e for e in entries):
        return "via1" if all(isinstance(e["regions"], dict) for e in entries) else "via2"
    return None


def _read_json(path: Path):
    try:
        with open(path, encoding="utf-8-sig") as f:
            return json.load(f)
    except FileNotFoundError:
        raise _fatal("unreadable_annotation", path, "annotation file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _fatal("unreadable_annotation", path, f"cannot read JSON: {err}") from None


def _annotation_files(path: Path) -> list[Path]:
    """The annotation file(s) a path names: a file, or a folder's single / COCO / LabelMe JSON files."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise _fatal("unreadable_annotation", path, "no such file or folder")
    files = sorted(path.glob("*.json"))
    if not files:
        raise _fatal("unreadable_annotation", path, "folder holds no .json annotation file")
    for name in ("annotations.json", "_annotations.coco.json"):
        if len(files) > 1 and path / name in files:
            return [path / name]
    return files


def _check_format(requested: str, detected: str | None, source: Path) -> str:
    if detected is None:
        raise _fatal("unknown_format", source, "not a VIA 1/2/3, COCO or LabelMe annotation file")
    same_reader = {requested, detected} <= {"via1", "via2"}
    if (
        requested not in ("auto", detected)
        and not same_reader
        and not (requested == "via" and detected.startswith("via"))
    ):
        raise _fatal("unknown_format", source, f"format={requested!r} requested but the file is {detected}")
    return detected


def _base_dirs(annotation: Path, images_dir, data=None) -> list[Path]:
    """Folders image names are looked up in: `images_dir`, else the JSON's folder, its `images/`, and
    a VIA 2 project's `default_filepath` (absolute or relative to the JSON; `bookseg predict` writes
    projects whose photos live elsewhere)."""
    if images_dir is not None:
        return [Path(images_dir).expanduser().resolve()]
    folder = annotation.parent.resolve()
    dirs = [folder, folder / "images"]
    settings = data.get("_via_settings") if isinstance(data, dict) else None
    default = ((settings or {}).get("core") or {}).get("default_filepath") or ""
    if isinstance(default, str) and default.strip() and "://" not in default:
        extra = (folder / Path(default).expanduser()).resolve()
        if extra not in dirs:
            dirs.append(extra)
    return dirs


def _apply_class_names(images: list[RawImage], class_names, report: ValidationReport) -> None:
    """Report and remove regions whose class is not in the given class names."""
    allowed = set(class_names)
    for image in images:
        kept = []
        for region in image.regions:
            if region.class_name in allowed:
                kept.append(region)
            else:
                report.add(
                    "unknown_class",
                    image.source,
                    image.image_id,
                    region.region,
                    f'class "{region.class_name}" is not one of {list(class_names)}',
                )
        image.regions = kept


def read_dataset(
    path: str | os.PathLike,
    *,
    format: str = "auto",
    images_dir: str | os.PathLike | None = None,
    class_attribute: str | None = None,
    default_class: str = "book",
    class_names: list[str] | None = None,
    check_images: bool = True,
) -> Dataset:
    """Like `load_dataset`, but return the data set even when it has errors (see `report.errors`).

    Records of images with errors are left out. Only an unreadable or unrecognised annotation
    file raises `DatasetError` here.
    """
    if format != "auto" and format != "via" and format not in FORMATS:
        raise ValueError(f"format must be 'auto', 'via' or one of {FORMATS}, got {format!r}")
    path = Path(path).expanduser()
    files = _annotation_files(path)
    report = ValidationReport()
    images: list[RawImage] = []
    found_classes = None
    if len(files) == 1:
        source, parsed = files[0], [(files[0], _read_json(files[0]))]
        detected = _check_format(format, detect_format(parsed[0][1]), source)
    else:  # a folder of LabelMe files
        source, parsed = path, [(file, _read_json(file)) for file in files]
        detected = _check_format(format, "labelme", path)
    for file, data in parsed:
        ctx = ReadContext(
            str(file), _base_dirs(file, images_dir, data), report, class_attribute, default_class
        )
        if detected == "coco":
            images, found_classes = read_coco(data, ctx)
        elif detected == "labelme":
            if detect_format(data) != "labelme":
                raise _fatal(
                    "unknown_format",
                    file,
                    f"{path} holds several .json files, read as LabelMe files, but this one is "
                    "not LabelMe JSON (pass the annotation file itself)",
                )
            image = read_labelme(data, ctx, basename_only=images_dir is not None)
            images += [image] if image is not None else []
        elif detected == "via2_project":
            images = read_via2_project(data, ctx)
        elif detected == "via3":
            images = read_via3_project(data, ctx)
        else:
            images = read_via_export(data, ctx)
    if class_names is not None:
        _apply_class_names(images, class_names, report)
        names = list(class_names)
    elif found_classes is not None:
        names = found_classes
    elif class_attribute is None:
        names = [default_class]
    else:
        names = sorted({region.class_name for image in images for region in image.regions})
    records = validate_images(images, report, check_images=check_images)
    return Dataset(records, names, report, source, detected)


def load_dataset(
    path: str | os.PathLike,
    *,
    format: str = "auto",
    images_dir: str | os.PathLike | None = None,
    class_attribute: str | None = None,
    default_class: str = "book",
    class_names: list[str] | None = None,
    check_images: bool = True,
) -> Dataset:
    """Read and validate an annotated data set.

    Args:
        path: annotation JSON file, or a folder holding exactly one .json, a COCO
            `annotations.json`, or LabelMe files (one per image).
        format: "auto" (detect), "via" (any VIA) or one of `FORMATS`; a mismatch is an error.
        images_dir: folder image file names are relative to; default: the annotation file's
            folder, then its `images/` subfolder (LabelMe: the JSON file's folder; with
            `images_dir` given, LabelMe images are looked up by file name there).
        class_attribute: region attribute holding the class (VIA region attribute name, VIA 3
            attribute name, LabelMe "label"); None: every region is `default_class`. COCO classes
            always come from its categories.
        default_class: class of every region when `class_attribute` is None.
        class_names: expected classes (in this order); a region of any other class is an error.
        check_images: read every image header to check existence, readability and size. When
            False, images whose annotation gives a size are not opened (VIA gives none).

    Returns:
        The data set; `report` holds the counted warnings and notes.

    Raises:
        DatasetError: the annotation cannot be read, or any error was found; the exception lists
            every error (the first 20 in its message), each naming file, image and region.
    """
    dataset = read_dataset(
        path,
        format=format,
        images_dir=images_dir,
        class_attribute=class_attribute,
        default_class=default_class,
        class_names=class_names,
        check_images=check_images,
    )
    if dataset.report.errors:
        raise DatasetError(dataset.report.errors, dataset.report)
    return dataset
