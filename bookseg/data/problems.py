"""Problems found in an annotated data set: the catalogue of kinds, the report, the exception.

Every problem names the annotation file, the image and the region. Errors make `load_dataset`
fail (all are collected first, then raised together as one `DatasetError`); warnings are counted
and the data is fixed or the region skipped; notes are counted for information only.
`PROBLEM_KINDS` lists every kind, its severity and whether the region is dropped, so that
`report.regions == report.instances + report.dropped_regions()` once loading is done.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple

ERROR, WARNING, NOTE = "error", "warning", "note"


class Kind(NamedTuple):
    severity: str
    drops_region: bool  # the region does not become an instance
    meaning: str


PROBLEM_KINDS: dict[str, Kind] = {
    # Errors: the data set cannot be used until they are fixed.
    "unreadable_annotation": Kind(ERROR, False, "annotation file missing or not valid JSON"),
    "unknown_format": Kind(ERROR, False, "annotation file in no format bookseg reads"),
    "bad_entry": Kind(ERROR, False, "malformed image entry"),
    "missing_image": Kind(ERROR, False, "image file not found"),
    "unreadable_image": Kind(ERROR, False, "image file is not a readable image"),
    "size_mismatch": Kind(ERROR, False, "image size differs from the size in the annotation"),
    "duplicate_image": Kind(ERROR, False, "two entries resolve to the same image"),
    "unsafe_path": Kind(ERROR, False, "image file name escapes the data set folder or is absolute"),
    "remote_image": Kind(ERROR, False, "image is a URL or inline data, not a file"),
    "unknown_shape": Kind(ERROR, True, "region shape bookseg does not know"),
    "bad_region": Kind(ERROR, True, "malformed region (coordinates missing, not numbers ...)"),
    "missing_class": Kind(ERROR, True, "region has no value for the class attribute"),
    "ambiguous_class": Kind(ERROR, True, "region has several values for the class attribute"),
    "unknown_class": Kind(ERROR, True, "class not in the given class names"),
    "unknown_category": Kind(ERROR, True, "COCO annotation with an undeclared category id"),
    "unknown_image": Kind(ERROR, True, "COCO annotation for an undeclared image id"),
    # Warnings: fixed or skipped, counted.
    "null_region": Kind(WARNING, True, "null entry in a VIA regions list, skipped"),
    "point_skipped": Kind(WARNING, True, "point shape, not an instance, skipped"),
    "degenerate_polygon": Kind(WARNING, True, "polygon with < 3 distinct points or zero area, dropped"),
    "degenerate_part": Kind(WARNING, False, "zero-area part of a multi-part region, dropped"),
    "outside_image": Kind(WARNING, True, "region lies entirely outside the image, dropped"),
    "no_pixels": Kind(WARNING, True, "region covers no pixel centre, dropped"),
    "empty_mask": Kind(WARNING, True, "mask region with no pixel set, dropped"),
    "points_outside_image": Kind(
        WARNING, False, "points more than 0.5 px outside the image, polygon clipped to the border"
    ),
    "self_intersecting": Kind(WARNING, False, "self-intersecting polygon, filled by the even-odd rule"),
    "polyline_closed": Kind(WARNING, False, "polyline / line strip treated as a closed polygon"),
    "duplicate_category": Kind(WARNING, False, "two COCO categories with one name, merged"),
    "unused_category": Kind(WARNING, False, "COCO category without annotations (kept as a class)"),
    # Notes: counted for information.
    "image_without_instances": Kind(NOTE, False, "image without instances, kept as a negative"),
    "embedded_image": Kind(NOTE, False, "LabelMe image file missing, its embedded imageData used"),
    "crowd_region": Kind(NOTE, False, "COCO iscrowd region (kept, flagged iscrowd)"),
    "points_on_border": Kind(
        NOTE, False, "points at most 0.5 px outside the image (rounding), clipped to the border"
    ),
    "shapes_merged": Kind(NOTE, True, "LabelMe shape merged into its group's instance"),
    "option_ignored": Kind(NOTE, False, "a loader option that does not apply to this format"),
}

_MAX_ERRORS_SHOWN = 20


@dataclass(frozen=True)
class Problem:
    """One problem, located as precisely as possible.

    Attributes:
        kind: a key of `PROBLEM_KINDS`.
        file: annotation file.
        image: image id ("" when the problem concerns the whole file).
        region: region within the image, e.g. "region 3 (polygon)" ("" for the whole image).
        message: what is wrong and, for warnings, what was done about it.
    """

    kind: str
    file: str
    image: str
    region: str
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.image:
            where += f': image "{self.image}"'
        if self.region:
            where += f", {self.region}"
        return f"{where}: {self.message}"


@dataclass
class ValidationReport:
    """All problems of one data set, with counts per kind.

    Attributes:
        errors, warnings, notes: problems by severity, in the order found.
        counts: occurrences per problem kind.
        regions: regions read from the annotation (including skipped ones).
        instances: instances kept. Once loading is done,
            regions == instances + sum of counts of the kinds that drop a region.
    """

    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    notes: list[Problem] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    regions: int = 0
    instances: int = 0

    def add(self, kind: str, file: str, image: str = "", region: str = "", message: str = "") -> Problem:
        """Record a problem of a catalogued kind (the severity comes from `PROBLEM_KINDS`)."""
        if kind not in PROBLEM_KINDS:
            raise ValueError(f"unknown problem kind {kind!r}")
        problem = Problem(kind, str(file), image, region, message or PROBLEM_KINDS[kind].meaning)
        {ERROR: self.errors, WARNING: self.warnings, NOTE: self.notes}[PROBLEM_KINDS[kind].severity].append(
            problem
        )
        self.counts[kind] = self.counts.get(kind, 0) + 1
        return problem

    @property
    def ok(self) -> bool:
        return not self.errors

    def dropped_regions(self) -> int:
        """Regions that did not become instances, over all kinds that drop a region."""
        return sum(n for kind, n in self.counts.items() if PROBLEM_KINDS[kind].drops_region)

    def summary(self, examples: int = 3) -> str:
        """Readable text: totals, then per kind its count, affected images, meaning and examples."""
        lines = [
            (
                f"{len(self.errors)} errors, {len(self.warnings)} warnings, {len(self.notes)} notes; "
                f"{self.regions} regions read, {self.instances} instances kept, "
                f"{self.dropped_regions()} regions not kept"
            )
        ]
        for severity, problems in ((ERROR, self.errors), (WARNING, self.warnings), (NOTE, self.notes)):
            by_kind: dict[str, list[Problem]] = {}
            for problem in problems:
                by_kind.setdefault(problem.kind, []).append(problem)
            for kind, found in by_kind.items():
                images = len({(p.file, p.image) for p in found if p.image})
                lines.append(
                    f"{severity} {kind}: {len(found)} in {images} images - {PROBLEM_KINDS[kind].meaning}"
                )
                lines += [f"    e.g. {p}" for p in found[:examples]]
                if len(found) > examples:
                    lines.append(f"    ... and {len(found) - examples} more")
        return "\n".join(lines)

    def kinds_by_image(self, kind: str) -> Counter:
        """How many problems of one kind each image has (keys: (file, image))."""
        return Counter((p.file, p.image) for p in self.errors + self.warnings + self.notes if p.kind == kind)


class DatasetError(ValueError):
    """The data set has errors; `problems` lists all of them, the message shows the first 20."""

    def __init__(self, problems: list[Problem], report: ValidationReport | None = None):
        self.problems = list(problems)
        self.report = report
        shown = [f"  {p}" for p in self.problems[:_MAX_ERRORS_SHOWN]]
        more = len(self.problems) - len(shown)
        if more > 0:
            shown.append(f"  ... and {more} more errors")
        super().__init__(f"{len(self.problems)} errors in the data set:\n" + "\n".join(shown))
