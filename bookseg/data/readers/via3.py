"""VGG Image Annotator 3.x project files (image annotator, `data_format_version` 3.1.x).

Layout: `project.vid_list` orders the views, each view holds
one file (`view[vid].fid_list`), and `metadata` entries {vid, z, xy, av} are either regions
(`xy = [shape_id, coords...]`) or, with `xy = []`, the file-level attributes. `av` is keyed by
attribute id (`attribute[aid].aname` is the name); option ids map to labels through
`attribute[aid].options`, checkbox values are comma-joined option ids. Ids may be strings or
integers and are compared as strings.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from bookseg.data.polygons import circle_polygon, circle_through_points, ellipse_polygon, rectangle_polygon
from bookseg.data.readers.common import ReadContext, number, points_from_flat, resolve_class
from bookseg.data.validate import RawImage, RawRegion, resolve_image_path

# Shape ids of _VIA_RSHAPE with the number of coordinates after the id (None: any even number).
SHAPES = {
    1: ("point", 2),
    2: ("rect", 4),
    3: ("circle", 3),
    4: ("ellipse", 4),
    5: ("line", 4),
    6: ("polyline", None),
    7: ("polygon", None),
    8: ("extreme_rect", 8),
    9: ("extreme_circle", 6),
}
_CHECKBOX, _RADIO, _SELECT, _IMAGE = 2, 3, 4, 5
_REGION_ANCHOR = "FILE1_Z0_XY1"


def _value_labels(value, definition: dict):
    """An `av` value with option ids turned into labels (a list for checkbox values)."""
    options = definition.get("options") if isinstance(definition.get("options"), dict) else {}
    kind = definition.get("type")
    if kind == _CHECKBOX and isinstance(value, str):
        return [str(options.get(oid, oid)) for oid in value.split(",") if oid != ""]
    if kind in (_RADIO, _SELECT, _IMAGE) and isinstance(value, str):
        return str(options.get(value, value))
    return value


def shape_polygon(shape_id: int, coords: list) -> np.ndarray:
    """Polygon of a VIA 3 region: float64 [P, 2] (x, y).

    Raises:
        ValueError: wrong number of coordinates, non-numeric values, or collinear circle points.
    """
    name, expected = SHAPES[shape_id]
    if expected is not None and len(coords) != expected:
        raise ValueError(f"{name} needs {expected} coordinates, got {len(coords)}")
    if shape_id == 2:
        return rectangle_polygon(*(number(v) for v in coords))
    if shape_id == 3:
        return circle_polygon(*(number(v) for v in coords))
    if shape_id == 4:
        return ellipse_polygon(*(number(v) for v in coords))  # VIA 3 ellipses have no rotation
    points = points_from_flat(coords)
    if shape_id == 8:  # four extreme points; the box is their extent
        (x0, y0), (x1, y1) = points.min(axis=0), points.max(axis=0)
        return rectangle_polygon(x0, y0, x1 - x0, y1 - y0)
    if shape_id == 9:  # three points on the circle
        return circle_polygon(*circle_through_points(points))
    return points  # line, polyline, polygon


class _Project:
    """Lookups over a VIA 3 project dict."""

    def __init__(self, data: dict, ctx: ReadContext):
        self.ctx = ctx
        self.files = {str(k): v for k, v in (data.get("file") or {}).items()}
        self.views = {str(k): v for k, v in (data.get("view") or {}).items()}
        self.attributes = {str(k): v for k, v in (data.get("attribute") or {}).items() if isinstance(v, dict)}
        config = data.get("config") or {}
        self.loc_prefix = {
            str(k): str(v or "") for k, v in ((config.get("file") or {}).get("loc_prefix") or {}).items()
        }
        self.metadata = defaultdict(list)
        for mid, entry in (data.get("metadata") or {}).items():
            vid = str(entry.get("vid")) if isinstance(entry, dict) else None
            if vid not in self.views:
                ctx.report.regions += 1
                ctx.report.add(
                    "bad_region", ctx.source, "", f"metadata {mid}", f"metadata for unknown view {vid!r}"
                )
                continue
            self.metadata[vid].append((str(mid), entry))
        # The class attribute's id: a region attribute with that name (any anchor as a fallback).
        named = [aid for aid, a in self.attributes.items() if a.get("aname") == ctx.class_attribute]
        regional = [aid for aid in named if self.attributes[aid].get("anchor_id") == _REGION_ANCHOR]
        self.class_aid = (regional or named or [None])[0]

    def named_values(self, av: dict) -> dict:
        """{attribute name: value with labels} of an `av` object."""
        result = {}
        for aid, value in av.items():
            definition = self.attributes.get(str(aid), {})
            result[str(definition.get("aname", aid))] = _value_labels(value, definition)
        return result

    def file_name(self, fid: str, image_id: str) -> str | None:
        """The file name to resolve for a file entry, or None after reporting why there is none."""
        entry = self.files[fid]
        try:
            loc, kind = int(number(entry.get("loc", 1))), int(number(entry.get("type", 2)))
        except (TypeError, ValueError):
            self.ctx.report.add(
                "bad_entry", self.ctx.source, image_id, "", f"file {fid}: loc / type are not numbers"
            )
            return None
        src = str(entry.get("src") or "")
        if kind != 2:
            self.ctx.report.add(
                "bad_entry",
                self.ctx.source,
                image_id,
                "",
                f"file {fid} is not an image (type {entry.get('type')})",
            )
            return None
        if loc == 1:  # picked with the browser's file dialog: only the display name is known
            return str(entry.get("fname") or src)
        if loc == 3:
            name = self.loc_prefix.get("3", "") + src
            return name.removeprefix("file://")
        kind = "a URL" if loc == 2 else "inline data"
        self.ctx.report.add(
            "remote_image", self.ctx.source, image_id, "", f"image is {kind} (loc {loc}), not a file"
        )
        return None

    def region(self, mid: str, xy: list, av: dict, image_id: str) -> RawRegion | None:
        ctx, report = self.ctx, self.ctx.report
        report.regions += 1
        try:
            shape_id = int(number(xy[0]))
        except (TypeError, ValueError):
            shape_id = None
        if shape_id not in SHAPES:
            report.add("unknown_shape", ctx.source, image_id, f"region {mid}", f"unknown shape id {xy[0]!r}")
            return None
        name = SHAPES[shape_id][0]
        label = f"region {mid} ({name})"
        if name == "point":
            report.add("point_skipped", ctx.source, image_id, label)
            return None
        try:
            polygon = shape_polygon(shape_id, list(xy[1:]))
        except (TypeError, ValueError) as err:
            report.add("bad_region", ctx.source, image_id, label, f"bad {name} coordinates: {err}")
            return None
        value = None
        if ctx.class_attribute is not None and self.class_aid is not None:
            value = _value_labels(av.get(self.class_aid), self.attributes[self.class_aid])
        class_name = resolve_class(value, ctx, image_id, label, self.named_values(av))
        if class_name is None:
            return None
        if name in ("line", "polyline"):
            report.add("polyline_closed", ctx.source, image_id, label)
        return RawRegion(label, class_name, [polygon])

    def image(self, vid: str) -> RawImage | None:
        ctx = self.ctx
        fids = [str(f) for f in (self.views[vid].get("fid_list") or [])]
        if len(fids) != 1 or fids[0] not in self.files:
            ctx.report.add(
                "bad_entry", ctx.source, f"view {vid}", "", f"view must hold one known file, has {fids}"
            )
            return None
        entry = self.files[fids[0]]
        image_id = str(entry.get("fname") or entry.get("src") or f"file {fids[0]}")
        name = self.file_name(fids[0], image_id)
        path = (
            None
            if name is None
            else resolve_image_path(name, ctx.base_dirs, ctx.report, ctx.source, image_id)
        )
        image = RawImage(image_id, name or "", path, None, None, source=ctx.source)
        for mid, entry in self.metadata.get(vid, []):
            xy, av = entry.get("xy") or [], entry.get("av") or {}
            if entry.get("z"):
                ctx.report.regions += 1
                ctx.report.add(
                    "bad_region",
                    ctx.source,
                    image_id,
                    f"region {mid}",
                    f"temporal metadata z={entry['z']} in an image project",
                )
            elif not xy:
                image.attributes.update(self.named_values(av))
            else:
                region = self.region(mid, xy, av, image_id)
                if region is not None:
                    image.regions.append(region)
        return image


def read_via3_project(data: dict, ctx: ReadContext) -> list[RawImage]:
    """Read a VIA 3 image project, in `project.vid_list` order."""
    project = _Project(data, ctx)
    order = [str(v) for v in ((data.get("project") or {}).get("vid_list") or project.views)]
    images = []
    for vid in order:
        if vid not in project.views:
            ctx.report.add(
                "bad_entry", ctx.source, f"view {vid}", "", "listed in project.vid_list but not in view"
            )
            continue
        image = project.image(vid)
        if image is not None:
            images.append(image)
    return images
