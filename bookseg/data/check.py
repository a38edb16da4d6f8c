"""`bookseg data check`: read a data set, print its statistics and every problem found.

The statistics are the ones that matter when choosing Mask R-CNN settings: instances per image
(detections per image, ROIs), box sizes in pixels and relative to the image (anchor scales, image
size) and box aspect ratios (anchor ratios; book spines are tall).
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from dataclasses import dataclass
from typing import TextIO

import numpy as np

from bookseg.data.problems import DatasetError
from bookseg.data.readers import Dataset, read_dataset
from bookseg.data.records import Instance

PERCENTILES = (0, 5, 25, 50, 75, 95, 100)


@dataclass
class DatasetStats:
    """Statistics of a data set's instances.

    Attributes:
        instances_per_image: int [num_images].
        class_counts: instances per class name.
        box_size: float [num_instances] sqrt(box width * box height) in pixels.
        box_share: float [num_instances] box_size / the longer image side.
        aspect_ratio: float [num_instances] box height / box width.
    """

    instances_per_image: np.ndarray
    class_counts: Counter
    box_size: np.ndarray
    box_share: np.ndarray
    aspect_ratio: np.ndarray


def instance_box(instance: Instance) -> tuple[float, float]:
    """(width, height) in pixels of an instance's box: polygon extent, or tight mask box."""
    if instance.polygon is not None:
        width, height = instance.polygon.max(axis=0) - instance.polygon.min(axis=0)
        return float(width), float(height)
    rows = np.flatnonzero(instance.mask.any(axis=1))
    cols = np.flatnonzero(instance.mask.any(axis=0))
    if rows.size == 0:
        return 0.0, 0.0
    return float(cols[-1] + 1 - cols[0]), float(rows[-1] + 1 - rows[0])


def dataset_stats(dataset: Dataset) -> DatasetStats:
    """Measure instance counts, classes and boxes of every record."""
    sizes, shares, ratios = [], [], []
    classes: Counter = Counter()
    for record in dataset.records:
        longer_side = max(record.width, record.height)
        for instance in record.instances:
            classes[instance.class_name] += 1
            width, height = instance_box(instance)
            size = float(np.sqrt(width * height))
            sizes.append(size)
            shares.append(size / longer_side)
            ratios.append(height / width if width > 0 else np.inf)
    return DatasetStats(
        np.array([len(r.instances) for r in dataset.records], int),
        classes,
        np.array(sizes),
        np.array(shares),
        np.array(ratios),
    )


def _percentile_row(values: np.ndarray, digits: int) -> str:
    if values.size == 0:
        return "(no instances)"
    points = np.percentile(values, PERCENTILES)
    names = ["min" if p == 0 else "max" if p == 100 else f"p{p}" for p in PERCENTILES]
    return "  ".join(f"{name} {value:.{digits}f}" for name, value in zip(names, points))


def format_check(dataset: Dataset) -> str:
    """The full text `bookseg data check` prints for a data set."""
    stats = dataset_stats(dataset)
    counts = stats.instances_per_image
    lines = [
        f"data set: {dataset.source}",
        f"format: {dataset.format}",
        f"images: {len(dataset.records)}",
        f"instances: {dataset.num_instances}",
    ]
    if counts.size:
        lines.append(
            f"instances per image: min {counts.min()} / median {np.median(counts):g} / "
            f"mean {counts.mean():.2f} / max {counts.max()}"
        )
    lines.append(f"images without instances: {int((counts == 0).sum())}")
    lines.append(f"classes ({len(dataset.class_names)}): " + ", ".join(dataset.class_names))
    lines += [f"  {name}: {stats.class_counts.get(name, 0)}" for name in dataset.class_names]
    lines += [
        "box size sqrt(w*h), px:        " + _percentile_row(stats.box_size, 1),
        "box size / longer image side:  " + _percentile_row(stats.box_share, 3),
        "box aspect ratio h/w:          " + _percentile_row(stats.aspect_ratio, 2),
        "problems: " + dataset.report.summary(),
    ]
    return "\n".join(lines)


def run_check(
    path: str | os.PathLike,
    *,
    format: str = "auto",
    class_attribute: str | None = None,
    images_dir: str | os.PathLike | None = None,
    default_class: str = "book",
    out: TextIO | None = None,
) -> int:
    """Read a data set, print statistics and problems to `out` (stdout by default).

    Returns:
        Exit code: 0 when the data set has no errors, 1 otherwise (everything is printed anyway).
    """
    out = out or sys.stdout
    try:
        dataset = read_dataset(
            path,
            format=format,
            images_dir=images_dir,
            class_attribute=class_attribute,
            default_class=default_class,
        )
    except DatasetError as err:
        print(f"data set: {path}\n{err}", file=out)
        return 1
    print(format_check(dataset), file=out)
    return 1 if dataset.report.errors else 0
