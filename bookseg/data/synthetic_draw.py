"""Drawing primitives for the synthetic shelves: wall and boards, book spines, objects, shadows.

Everything paints into a float32 RGB canvas [H, W, 3] (0..255) and, for books and objects, into an
int32 owner map [H, W] (-1 = background) with the painter's algorithm: the last shape drawn over a
pixel owns it. A book's visible mask is therefore `owner == book_id`, exactly the pixels showing its
colours. Shapes are rasterised with `records.rasterize_polygon` (pixel-centre rule), the same rule
the readers use for polygons. Coordinates: pixels, x right, y down (records.py convention).
All randomness comes from the `numpy.random.Generator` passed in.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from bookseg.data.records import rasterize_polygon


@dataclass(frozen=True)
class BookGeometry:
    """An upright, tilted or lying book seen from its spine: an oriented rectangle.

    Attributes:
        center: (x, y) pixel position of the rectangle's centre.
        width: spine thickness in pixels (across the spine).
        length: spine length in pixels (along the spine, the book's height).
        angle: radians between the spine axis and the vertical; positive leans the top to the right.
            About +-pi/2 for books lying flat.
    """

    center: tuple[float, float]
    width: float
    length: float
    angle: float

    def axes(self) -> tuple[np.ndarray, np.ndarray]:
        """Unit vectors (across the spine, along the spine bottom -> top) in image (x, y)."""
        sin, cos = math.sin(self.angle), math.cos(self.angle)
        return np.array([cos, sin]), np.array([sin, -cos])

    def corners(self) -> np.ndarray:
        """float64 [4, 2] (x, y) corners, in order around the rectangle."""
        across, along = self.axes()
        c = np.asarray(self.center, np.float64)
        a, b = across * self.width / 2, along * self.length / 2
        return np.stack([c - a - b, c + a - b, c + a + b, c - a + b])

    def half_extent(self) -> tuple[float, float]:
        """Half width and half height of the axis-aligned bounding box, in pixels."""
        sin, cos = abs(math.sin(self.angle)), abs(math.cos(self.angle))
        return cos * self.width / 2 + sin * self.length / 2, sin * self.width / 2 + cos * self.length / 2


@dataclass(frozen=True)
class SpineLook:
    """Colours and decorations of one spine. Positions along the spine are fractions v in [0, 1].

    Attributes:
        colour: base RGB, floats 0..255.
        bands: (v_start, v_end, RGB) coloured bands across the spine (title bands, stripes).
        title: (v_start, v_end) span holding dark "letters", or None.
        title_colour: RGB of the letters.
        edge_px: width of the darker edge on both long sides, in pixels.
        rounding: strength of the darker shading towards the long edges (rounded spines), 0..0.5.
    """

    colour: np.ndarray
    bands: list[tuple[float, float, np.ndarray]] = field(default_factory=list)
    title: tuple[float, float] | None = None
    title_colour: np.ndarray = field(default_factory=lambda: np.zeros(3))
    edge_px: float = 1.5
    rounding: float = 0.2


def random_colour(rng: np.random.Generator, avoid: list[np.ndarray], min_distance: float) -> np.ndarray:
    """A saturated-or-pastel RGB colour (floats 0..255) at least `min_distance` from each of `avoid`.

    Tries a few times and returns the farthest candidate if none is far enough.
    """
    best, best_distance = None, -1.0
    for _ in range(12):
        hue = rng.random()
        saturation = rng.uniform(0.15, 0.9)
        value = rng.uniform(0.2, 0.95)
        rgb = np.array(colorsys.hsv_to_rgb(hue, saturation, value)) * 255.0
        distance = min((float(np.linalg.norm(rgb - a)) for a in avoid), default=1e9)
        if distance >= min_distance:
            return rgb
        if distance > best_distance:
            best, best_distance = rgb, distance
    return best


def random_spine_look(rng: np.random.Generator, colour: np.ndarray, width: float) -> SpineLook:
    """Decorations for a spine of the given base colour and thickness (pixels)."""
    bands = []
    # Thin stripes near the ends, like printed rules on cloth spines.
    if rng.random() < 0.5:
        stripe = _contrasting(rng, colour)
        for v in (rng.uniform(0.04, 0.12), rng.uniform(0.82, 0.93)):
            bands.append((v, v + rng.uniform(0.015, 0.04), stripe))
    # A wide coloured band (publisher block / label area).
    if rng.random() < 0.45:
        start = rng.uniform(0.1, 0.7)
        bands.append((start, start + rng.uniform(0.08, 0.25), _contrasting(rng, colour)))
    title = None
    if rng.random() < 0.75 and width >= 6:
        start = rng.uniform(0.2, 0.5)
        title = (start, start + rng.uniform(0.2, 0.45))
    title_colour = np.full(3, 20.0) if colour.mean() > 110 else np.full(3, 235.0)
    return SpineLook(
        colour=colour,
        bands=bands,
        title=title,
        title_colour=title_colour,
        edge_px=float(rng.uniform(0.8, 2.0)),
        rounding=float(rng.uniform(0.05, 0.3)),
    )


def paint_book(
    canvas: np.ndarray,
    owner: np.ndarray,
    owner_id: int,
    geometry: BookGeometry,
    look: SpineLook,
    rng: np.random.Generator,
) -> None:
    """Paint a spine into `canvas` and claim its pixels in `owner` (in place)."""
    window = _window(geometry.corners(), owner.shape)
    if window is None:
        return
    (y0, _, x0, _), mask = window
    ys, xs = np.nonzero(mask)
    points = np.stack([xs + x0 + 0.5, ys + y0 + 0.5], axis=1) - np.asarray(geometry.center)
    across, along = geometry.axes()
    u = points @ across / geometry.width + 0.5  # 0 at the left long edge, 1 at the right one
    v = points @ along / geometry.length + 0.5  # 0 at the bottom, 1 at the top
    colour = np.broadcast_to(look.colour, (len(u), 3)).copy()
    for start, end, band_colour in look.bands:
        colour[(v >= start) & (v < end)] = band_colour
    if look.title is not None:
        _paint_title(colour, u, v, geometry, look, rng)
    shade = 1.0 - look.rounding * (2.0 * u - 1.0) ** 2
    edge_distance = np.minimum(u, 1.0 - u) * geometry.width
    shade = shade * np.where(edge_distance < look.edge_px, 0.55, 1.0)
    grain = 1.0 + 0.03 * np.sin(v * geometry.length * rng.uniform(0.5, 1.5) + rng.uniform(0, 6.3))
    colour *= (shade * grain)[:, None]
    canvas[ys + y0, xs + x0] = colour
    owner[ys + y0, xs + x0] = owner_id


def paint_polygon(
    canvas: np.ndarray,
    owner: np.ndarray,
    owner_id: int,
    polygon: np.ndarray,
    colour: np.ndarray,
    rng: np.random.Generator,
    *,
    shading: float = 0.25,
) -> None:
    """Paint a plain object (box, vase, bookend ...) with a left-to-right shading; claims `owner`."""
    window = _window(polygon, owner.shape)
    if window is None:
        return
    (y0, _, x0, _), mask = window
    ys, xs = np.nonzero(mask)
    left, right = polygon[:, 0].min(), polygon[:, 0].max()
    t = (xs + x0 + 0.5 - left) / max(right - left, 1.0)
    shade = 1.0 + shading * (0.5 - t) * (1 if rng.random() < 0.5 else -1)
    canvas[ys + y0, xs + x0] = colour[None, :] * shade[:, None]
    owner[ys + y0, xs + x0] = owner_id


def polygon_mask(polygon: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """bool [H, W] mask of a polygon clipped to the image."""
    mask = np.zeros(shape, bool)
    window = _window(polygon, shape)
    if window is not None:
        (y0, y1, x0, x1), inner = window
        mask[y0:y1, x0:x1] = inner
    return mask


def cast_shadow(
    canvas: np.ndarray, polygon: np.ndarray, offset: tuple[float, float], strength: float
) -> None:
    """Darken the canvas under `polygon` shifted by `offset` (x, y) by `strength` (0..1), in place."""
    mask = polygon_mask(polygon + np.asarray(offset), canvas.shape[:2])
    canvas[mask] *= 1.0 - strength


def paint_background(
    rng: np.random.Generator, height: int, width: int, boards: list[tuple[float, float]]
) -> tuple[np.ndarray, np.ndarray]:
    """Wall or back panel with shelf boards.

    Args:
        boards: (top_y, thickness) of each horizontal board, in pixels.

    Returns:
        (canvas float32 [H, W, 3] 0..255, back colour RGB float [3]: the colour books must contrast with).
    """
    wood = _board_colour(rng)
    if rng.random() < 0.5:
        back = wood * rng.uniform(0.45, 0.75)  # back panel of the bookcase, in its own shadow
    else:
        back = (
            np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.0, 0.3), rng.uniform(0.55, 0.95))) * 255
        )
    canvas = np.empty((height, width, 3), np.float32)
    canvas[:] = back
    # Soft vertical texture of the wall / panel.
    columns = 1.0 + 0.04 * np.sin(np.arange(width) * rng.uniform(0.05, 0.3) + rng.uniform(0, 6.3))
    canvas *= columns[None, :, None].astype(np.float32)
    rows = np.arange(height, dtype=np.float32)
    for top, thickness in boards:
        # Shadow under the board on the back panel: strongest right below it.
        below = rows - (top + thickness)
        fade = np.where(below >= 0, np.exp(-below / max(thickness * 1.5, 1.0)), 0.0)
        canvas *= (1.0 - 0.45 * fade)[:, None, None]
    for top, thickness in boards:
        y0, y1 = round(top), round(top + thickness)
        y0c, y1c = max(y0, 0), min(y1, height)
        if y1c <= y0c:
            continue
        grain = 1.0 + 0.06 * np.sin(
            np.arange(width)[None, :] * rng.uniform(0.02, 0.08)
            + np.arange(y0c, y1c)[:, None] * rng.uniform(0.5, 2.0)
        )
        canvas[y0c:y1c] = wood[None, None, :] * grain[:, :, None]
        edge = min(y0 + max(1, int(thickness * 0.3)), height)
        if edge > y0c:
            canvas[y0c:edge] *= 1.15  # lit front edge of the board
    return canvas, back


def finish_image(canvas: np.ndarray, rng: np.random.Generator, noise_sigma: float) -> np.ndarray:
    """Lighting gradient, slight lens blur and Gaussian sensor noise; returns uint8 [H, W, 3] RGB."""
    height, width = canvas.shape[:2]
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = (xx * math.cos(angle) + yy * math.sin(angle)) / math.hypot(height, width)
    low, high = rng.uniform(0.7, 0.9), rng.uniform(1.0, 1.15)
    ramp = (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1e-6)
    canvas = canvas * (low + (high - low) * ramp)[:, :, None]
    canvas = cv2.GaussianBlur(canvas, (3, 3), 0.6)
    canvas = canvas + rng.normal(0.0, noise_sigma, canvas.shape).astype(np.float32)
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


def _paint_title(
    colour: np.ndarray, u: np.ndarray, v: np.ndarray, geometry: BookGeometry, look: SpineLook, rng
) -> None:
    start, end = look.title
    # "Letters": short blocks along the spine inside the middle of its width.
    letter_px = rng.uniform(2.5, 5.0)
    phase = rng.uniform(0, 2 * math.pi)
    along_px = v * geometry.length
    letters = (np.sin(along_px * 2 * math.pi / letter_px + phase) > 0.1) & (np.abs(u - 0.5) < 0.22)
    colour[(v >= start) & (v < end) & letters] = look.title_colour


def _contrasting(rng: np.random.Generator, colour: np.ndarray) -> np.ndarray:
    if rng.random() < 0.4:  # gold or silver foil
        return np.array([212.0, 175.0, 55.0]) if rng.random() < 0.6 else np.array([200.0, 200.0, 205.0])
    return random_colour(rng, [colour], 90.0)


def _board_colour(rng: np.random.Generator) -> np.ndarray:
    kind = rng.random()
    if kind < 0.6:  # wood
        rgb = colorsys.hsv_to_rgb(rng.uniform(0.05, 0.11), rng.uniform(0.35, 0.7), rng.uniform(0.4, 0.85))
    elif kind < 0.8:  # white laminate
        rgb = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.0, 0.08), rng.uniform(0.85, 0.97))
    else:  # dark laminate
        rgb = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.0, 0.15), rng.uniform(0.15, 0.3))
    return np.array(rgb) * 255.0


def _window(polygon: np.ndarray, shape: tuple[int, int]):
    """Clipped bounding window of a polygon and its mask inside it, or None when off the image."""
    height, width = shape
    x0 = max(math.floor(polygon[:, 0].min()), 0)
    x1 = min(math.ceil(polygon[:, 0].max()) + 1, width)
    y0 = max(math.floor(polygon[:, 1].min()), 0)
    y1 = min(math.ceil(polygon[:, 1].max()) + 1, height)
    if x1 <= x0 or y1 <= y0:
        return None
    mask = rasterize_polygon(polygon - np.array([x0, y0]), y1 - y0, x1 - x0)
    if not mask.any():
        return None
    return (y0, y1, x0, x1), mask
