"""Polygon geometry for annotation regions: shapes to polygons, area, self-intersection, clipping.

All coordinates are float pixels (x, y) in the displayed image frame, origin at the top-left corner
of the top-left pixel (the convention of records.py). Polygons are float64 [P, 2] arrays, open
(the first vertex is not repeated at the end). Pure numpy, no rasterisation.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Vertices used for circles and ellipses: the largest gap between a 64-gon and its circle is
# r * (1 - cos(pi / 64)) = 0.0012 r, i.e. 0.12 px for a 100 px radius.
ELLIPSE_VERTICES = 64


def rectangle_polygon(x: float, y: float, width: float, height: float) -> np.ndarray:
    """Corners of an axis-aligned rectangle given by its top-left corner and size.

    Returns:
        float64 [4, 2] (x, y), clockwise on screen from the top-left corner. A negative width or
        height (a rectangle drawn "backwards") gives the same rectangle as its absolute value.
    """
    x0, x1 = sorted((float(x), float(x) + float(width)))
    y0, y1 = sorted((float(y), float(y) + float(height)))
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64)


def ellipse_polygon(
    cx: float, cy: float, rx: float, ry: float, theta: float = 0.0, vertices: int = ELLIPSE_VERTICES
) -> np.ndarray:
    """Polygon inscribed in an ellipse, optionally rotated.

    Args:
        cx, cy: centre in pixels.
        rx, ry: semi-axes in pixels (absolute value is used).
        theta: rotation in radians of the rx axis from +x towards +y (clockwise on screen, y down),
            the convention of VIA 2 and the HTML canvas `ellipse()`.
        vertices: number of polygon vertices.

    Returns:
        float64 [vertices, 2] (x, y).
    """
    t = np.linspace(0.0, 2.0 * np.pi, vertices, endpoint=False)
    ex, ey = abs(float(rx)) * np.cos(t), abs(float(ry)) * np.sin(t)
    c, s = np.cos(float(theta)), np.sin(float(theta))
    return np.stack([cx + ex * c - ey * s, cy + ex * s + ey * c], axis=1)


def circle_polygon(cx: float, cy: float, r: float, vertices: int = ELLIPSE_VERTICES) -> np.ndarray:
    """Polygon inscribed in a circle: float64 [vertices, 2] (x, y)."""
    return ellipse_polygon(cx, cy, r, r, 0.0, vertices)


def circle_through_points(points: np.ndarray) -> tuple[float, float, float]:
    """Centre and radius of the circle through three points (VIA 3 "extreme circle").

    Args:
        points: [3, 2] (x, y).

    Returns:
        (cx, cy, r) in pixels.

    Raises:
        ValueError: the three points are collinear (no circle passes through them).
    """
    (ax, ay), (bx, by), (qx, qy) = np.asarray(points, np.float64).reshape(3, 2)
    d = 2.0 * (ax * (by - qy) + bx * (qy - ay) + qx * (ay - by))
    if abs(d) < 1e-12:
        raise ValueError("the three points are collinear")
    a2, b2, q2 = ax * ax + ay * ay, bx * bx + by * by, qx * qx + qy * qy
    cx = (a2 * (by - qy) + b2 * (qy - ay) + q2 * (ay - by)) / d
    cy = (a2 * (qx - bx) + b2 * (ax - qx) + q2 * (bx - ax)) / d
    return cx, cy, float(np.hypot(ax - cx, ay - cy))


def drop_repeated_vertices(polygon: np.ndarray) -> np.ndarray:
    """Remove consecutive duplicate vertices, including a last vertex equal to the first.

    VIA 1 and many COCO exports close polygons by repeating the first vertex; a repeated vertex
    adds nothing to the shape but would look like a zero-length edge to the other tests here.
    """
    pts = np.asarray(polygon, np.float64).reshape(-1, 2)
    if len(pts) < 2:
        return pts
    keep = np.empty(len(pts), bool)
    keep[0] = True
    keep[1:] = (pts[1:] != pts[:-1]).any(axis=1)
    pts = pts[keep]
    if len(pts) > 1 and (pts[-1] == pts[0]).all():  # closing vertex repeating the first
        pts = pts[:-1]
    return pts


def _batch_signed_area(polys: np.ndarray) -> np.ndarray:
    """Shoelace areas of float64 [B, n, 2] polygons: [B]."""
    x, y = polys[..., 0], polys[..., 1]
    x_next, y_next = np.roll(x, -1, axis=1), np.roll(y, -1, axis=1)
    return 0.5 * (x * y_next - y * x_next).sum(axis=1)


def _batch_collinear(polys: np.ndarray, eps: float) -> np.ndarray:
    """Whether all vertices of each [B, n, 2] polygon lie within `eps` px of one line: [B]."""
    rel = polys - polys[:, :1]
    far = np.take_along_axis(rel, (rel**2).sum(-1).argmax(axis=1)[:, None, None], axis=1)  # [B, 1, 2]
    length = np.hypot(far[..., 0], far[..., 1])  # [B, 1]
    cross = np.abs(rel[..., 0] * far[..., 1] - rel[..., 1] * far[..., 0])
    with np.errstate(divide="ignore", invalid="ignore"):
        distance = np.where(length > 0, cross / length, 0.0)
    return distance.max(axis=1) <= eps


def signed_area(polygon: np.ndarray) -> float:
    """Shoelace area in px^2, positive when the vertices run clockwise on screen (y down).

    For a self-intersecting polygon the lobes of opposite orientation cancel, so this is not the
    area of its even-odd fill; use `is_degenerate` to test for zero area.
    """
    pts = np.asarray(polygon, np.float64).reshape(-1, 2)
    return float(_batch_signed_area(pts[None])[0]) if len(pts) >= 3 else 0.0


def is_degenerate(polygon: np.ndarray, self_intersecting: bool, eps: float = 1e-9) -> bool:
    """True when a polygon encloses no area: fewer than 3 vertices, all vertices on one line
    (this includes fewer than 3 distinct points), or for a simple polygon a zero shoelace area.

    Args:
        polygon: float [P, 2] (x, y) without repeated vertices (see `drop_repeated_vertices`).
        self_intersecting: result of `self_intersections` for this polygon; a self-intersecting
            polygon can have a zero shoelace sum (a bow-tie) and still enclose area.
        eps: tolerance in px (distance from a common line) and px^2 (area).
    """
    pts = np.asarray(polygon, np.float64).reshape(-1, 2)
    if len(pts) < 3 or _batch_collinear(pts[None], eps)[0]:
        return True
    return not self_intersecting and abs(signed_area(pts)) <= eps


def _orientation(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Sign of the cross product (b - a) x (c - a) over the last axis (-1, 0 or 1)."""
    ab, ac = b - a, c - a
    return np.sign(ab[..., 0] * ac[..., 1] - ab[..., 1] * ac[..., 0])


def _self_intersecting_batch(polys: np.ndarray) -> np.ndarray:
    """`self_intersections` for polygons of one vertex count, stacked as float64 [B, n, 2]."""
    n = polys.shape[1]
    start, end = polys, np.roll(polys, -1, axis=1)  # edge i runs from vertex i to vertex i + 1
    # Adjacent edges share a vertex; they overlap only when they fold back on themselves (a spike).
    prev_dir = start - np.roll(start, 1, axis=1)
    next_dir = end - start
    cross = prev_dir[..., 0] * next_dir[..., 1] - prev_dir[..., 1] * next_dir[..., 0]
    dot = (prev_dir * next_dir).sum(-1)
    spikes = ((cross == 0) & (dot < 0)).any(axis=1)
    if n < 4:
        return spikes
    i, j = np.triu_indices(n, k=2)
    keep = ~((i == 0) & (j == n - 1))  # first and last edges are adjacent too
    i, j = i[keep], j[keep]
    a1, b1, a2, b2 = start[:, i], end[:, i], start[:, j], end[:, j]  # [B, pairs, 2]
    o1, o2 = _orientation(a1, b1, a2), _orientation(a1, b1, b2)
    o3, o4 = _orientation(a2, b2, a1), _orientation(a2, b2, b1)
    collinear = (o1 == 0) & (o2 == 0)
    crossing = (o1 * o2 <= 0) & (o3 * o4 <= 0) & ~collinear
    overlap = np.ones_like(collinear)
    for axis in (0, 1):
        lo = np.maximum(np.minimum(a1[..., axis], b1[..., axis]), np.minimum(a2[..., axis], b2[..., axis]))
        hi = np.minimum(np.maximum(a1[..., axis], b1[..., axis]), np.maximum(a2[..., axis], b2[..., axis]))
        overlap &= lo <= hi
    return spikes | (crossing | (collinear & overlap)).any(axis=1)


def self_intersections(polygons: Sequence[np.ndarray]) -> np.ndarray:
    """Which polygons are not simple: two non-adjacent edges touch or cross, or an edge folds back.

    Vectorised over all edge pairs of all polygons with the same vertex count.

    Args:
        polygons: float [P_k, 2] (x, y) arrays without repeated vertices.

    Returns:
        bool [len(polygons)].
    """
    return polygon_stats(polygons).self_intersecting


@dataclass
class PolygonStats:
    """Per-polygon measurements of a list of polygons (each field has one entry per polygon).

    Attributes:
        self_intersecting: bool [N], see `self_intersections`.
        degenerate: bool [N], see `is_degenerate`.
        area: float64 [N] absolute shoelace area in px^2 (not the fill area when self-intersecting).
        bounds: float64 [N, 4] (x_min, y_min, x_max, y_max); zeros for empty polygons.
    """

    self_intersecting: np.ndarray
    degenerate: np.ndarray
    area: np.ndarray
    bounds: np.ndarray


def polygon_stats(polygons: Sequence[np.ndarray], eps: float = 1e-9) -> PolygonStats:
    """Measure many polygons at once, vectorised over polygons with the same vertex count.

    Args:
        polygons: float [P_k, 2] (x, y) arrays without repeated vertices.
        eps: tolerance of the degeneracy test (see `is_degenerate`).
    """
    n = len(polygons)
    stats = PolygonStats(np.zeros(n, bool), np.ones(n, bool), np.zeros(n), np.zeros((n, 4)))
    by_count: dict[int, list[int]] = defaultdict(list)
    for index, poly in enumerate(polygons):
        by_count[len(poly)].append(index)
    for count, indices in by_count.items():
        if count == 0:
            continue
        stacked = np.stack([np.asarray(polygons[k], np.float64).reshape(count, 2) for k in indices])
        stats.bounds[indices] = np.concatenate([stacked.min(axis=1), stacked.max(axis=1)], axis=1)
        if count < 3:
            continue
        crossing = _self_intersecting_batch(stacked)
        area = np.abs(_batch_signed_area(stacked))
        stats.self_intersecting[indices] = crossing
        stats.area[indices] = area
        stats.degenerate[indices] = _batch_collinear(stacked, eps) | (~crossing & (area <= eps))
    return stats


def outside_extent(polygon: np.ndarray, width: int, height: int) -> float:
    """How far (px) the polygon reaches beyond the image rectangle [0, width] x [0, height]; 0 if inside."""
    pts = np.asarray(polygon, np.float64).reshape(-1, 2)
    beyond = np.concatenate([-pts.min(axis=0), pts.max(axis=0) - (width, height)])
    return float(max(0.0, beyond.max()))


def _clip_half_plane(pts: np.ndarray, axis: int, limit: float, keep_below: bool) -> np.ndarray:
    """One Sutherland-Hodgman step: keep the part of the polygon with pts[:, axis] <= / >= limit."""
    if len(pts) == 0:
        return pts
    prev = np.roll(pts, 1, axis=0)  # edge k runs from prev[k] to pts[k]
    v_prev, v_cur = prev[:, axis], pts[:, axis]
    in_prev = v_prev <= limit if keep_below else v_prev >= limit
    in_cur = v_cur <= limit if keep_below else v_cur >= limit
    crossing = in_prev != in_cur
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(crossing, (limit - v_prev) / (v_cur - v_prev), 0.0)
    hit = prev + t[:, None] * (pts - prev)
    hit[:, axis] = limit  # exact, whatever the rounding of t
    candidates = np.stack([hit, pts], axis=1)  # per edge: [crossing point, end vertex]
    emit = np.stack([crossing, in_cur], axis=1)
    return candidates[emit]


def clip_polygon(polygon: np.ndarray, width: int, height: int) -> np.ndarray:
    """Clip a polygon to the image rectangle [0, width] x [0, height] (Sutherland-Hodgman).

    The part of the polygon inside the image is kept exactly, so the pixels it covers do not change:
    outside excursions are replaced by runs along the border. This also holds for self-intersecting
    polygons filled by the even-odd rule (each clip preserves every inside point's winding number).

    Returns:
        float64 [Q, 2] (x, y) without repeated vertices; fewer than 3 vertices (or zero area) when
        the polygon lies outside the image.
    """
    pts = np.asarray(polygon, np.float64).reshape(-1, 2)
    for axis, limit, keep_below in (
        (0, 0.0, False),
        (0, float(width), True),
        (1, 0.0, False),
        (1, float(height), True),
    ):
        pts = _clip_half_plane(pts, axis, limit, keep_below)
    return drop_repeated_vertices(pts)
