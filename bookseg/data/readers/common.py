"""What every reader shares: the read context, number parsing and class-name resolution."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bookseg.data.validate import ValidationReport


@dataclass
class ReadContext:
    """Options and sinks for one annotation file.

    Attributes:
        source: annotation file, as shown in messages.
        base_dirs: absolute folders image file names are relative to, tried in order.
        report: receives every problem found while parsing.
        class_attribute: region attribute holding the class, or None (every region is `default_class`).
        default_class: class of every region when `class_attribute` is None.
    """

    source: str
    base_dirs: list[Path]
    report: ValidationReport
    class_attribute: str | None = None
    default_class: str = "book"


def number(value) -> float:
    """A finite float from a JSON number (or numeric string, as CSV-imported VIA files have).

    Raises:
        ValueError: booleans, None, non-numeric strings, NaN or infinity.
    """
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{value!r} is not a number")
    result = float(value)
    if not math.isfinite(result):
        raise ValueError(f"{value!r} is not a finite number")
    return result


def integer_or_none(value) -> int | None:
    """An integer size from a JSON value, or None when absent or not an integral number."""
    try:
        result = number(value)
    except (TypeError, ValueError):
        return None
    return int(result) if result.is_integer() and result > 0 else None


def points_from_xy(xs, ys) -> np.ndarray:
    """float64 [P, 2] (x, y) from parallel coordinate lists.

    Raises:
        TypeError: not lists.
        ValueError: different lengths, or non-numeric entries.
    """
    if not isinstance(xs, list) or not isinstance(ys, list):
        raise TypeError("coordinates are not lists")
    if len(xs) != len(ys):
        raise ValueError(f"{len(xs)} x coordinates but {len(ys)} y coordinates")
    return np.array([[number(x), number(y)] for x, y in zip(xs, ys)], np.float64).reshape(-1, 2)


def points_from_flat(values) -> np.ndarray:
    """float64 [P, 2] (x, y) from a flat [x1, y1, x2, y2, ...] list (COCO polygons, VIA 3 `xy`).

    Raises:
        TypeError: not a list.
        ValueError: odd length, or non-numeric entries.
    """
    if not isinstance(values, list):
        raise TypeError("coordinates are not a list")
    if len(values) % 2:
        raise ValueError(f"odd number of coordinates ({len(values)})")
    return np.array([number(v) for v in values], np.float64).reshape(-1, 2)


def resolve_class(value, ctx: ReadContext, image_id: str, region: str, available) -> str | None:
    """Class name of a region from its class-attribute value.

    Args:
        value: the attribute value with option ids already turned into labels: a string, a list
            of strings (ticked checkbox options) or None when absent.
        available: attribute names the region does have, for the error message.

    Returns:
        `ctx.default_class` when no class attribute is configured, else the class name; None after
        reporting `missing_class` (no value) or `ambiguous_class` (several ticked options).
    """
    if ctx.class_attribute is None:
        return ctx.default_class
    if isinstance(value, list):
        if len(value) > 1:
            ctx.report.add(
                "ambiguous_class",
                ctx.source,
                image_id,
                region,
                f'class attribute "{ctx.class_attribute}" has several values {value}',
            )
            return None
        value = value[0] if value else None
    text = "" if value is None else str(value)
    if not text.strip():
        names = ", ".join(sorted(map(str, available))) or "none"
        ctx.report.add(
            "missing_class",
            ctx.source,
            image_id,
            region,
            f'no value for class attribute "{ctx.class_attribute}" (region attributes: {names})',
        )
        return None
    return text
