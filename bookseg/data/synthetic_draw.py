"""Drawing primitives for the synthetic shelves: wall and boards, book spines, objects, shadows.

Everything paints into a float32 RGB canvas [H, W, 3] (0..255) and, for books and objects, into an
int32 owner map [H, W] (-1 = background) with the painter's algorithm: the last shape drawn over a
pixel owns it. A book's visible mask is therefore `owner == book_id`, exactly the pixels showing its
colours. Shapes are rasterised with `records.rasterize_polygon` (pixel-centre rule), the same rule
the readers use for polygons. Coordinates: pixels, x right, y down (records.py convention).
All randomness comes from the `numpy.random.Generator` passed in.

The photo-like extras (`spine_texture`, `wood_texture`, `paint_clutter`, `random_homography` /
`warp_scene`, `photo_lighting`, `camera_finish`) are only called by non-default styles; background
clutter paints the canvas only (it is background), and `warp_scene` moves canvas and owner map
together (owner with nearest neighbour), so masks stay exact.
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
        texture: optional float32 [L, W, 3] RGB surface of the spine in its own frame (`spine_texture`);
            when set it replaces colour, bands and title.
    """

    colour: np.ndarray
    bands: list[tuple[float, float, np.ndarray]] = field(default_factory=list)
    title: tuple[float, float] | None = None
    title_colour: np.ndarray = field(default_factory=lambda: np.zeros(3))
    edge_px: float = 1.5
    rounding: float = 0.2
    texture: np.ndarray | None = None


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


def muted_colour(rng: np.random.Generator, colour: np.ndarray) -> np.ndarray:
    """Paper white, cream, near black, or `colour` greyed: the plain spines common on real shelves.

    Returns RGB floats 0..255 [3].
    """
    kind = rng.random()
    if kind < 0.35:  # white or cream paper
        rgb = colorsys.hsv_to_rgb(rng.uniform(0.08, 0.15), rng.uniform(0.0, 0.15), rng.uniform(0.82, 0.97))
    elif kind < 0.6:  # black or dark grey
        rgb = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.0, 0.3), rng.uniform(0.07, 0.25))
    else:
        grey = colour.mean()
        return grey + (colour - grey) * rng.uniform(0.25, 0.6)
    return np.array(rgb) * 255.0


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
    if look.texture is None:
        colour = np.broadcast_to(look.colour, (len(u), 3)).copy()
        for start, end, band_colour in look.bands:
            colour[(v >= start) & (v < end)] = band_colour
        if look.title is not None:
            _paint_title(colour, u, v, geometry, look, rng)
    else:
        rows, cols = look.texture.shape[:2]
        row = np.clip(((1.0 - v) * rows).astype(np.int64), 0, rows - 1)  # row 0 = top of the spine
        col = np.clip((u * cols).astype(np.int64), 0, cols - 1)
        colour = look.texture[row, col].astype(np.float64)
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
    window = _window(polygon + np.asarray(offset), canvas.shape[:2])
    if window is not None:  # only the polygon's bounding window is touched (cheaper than a full mask)
        (y0, y1, x0, x1), inside = window
        canvas[y0:y1, x0:x1][inside] *= 1.0 - strength


def paint_background(
    rng: np.random.Generator, height: int, width: int, boards: list[tuple[float, float]]
) -> tuple[np.ndarray, np.ndarray]:
    """Wall or back panel with shelf boards.

    Args:
        boards: (top_y, thickness) of each horizontal board, in pixels.

    Returns:
        (canvas float32 [H, W, 3] 0..255, back colour RGB float [3]: the colour books must contrast with,
        board colour RGB float [3]).
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
    return canvas, back, wood


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


_FONTS = (
    cv2.FONT_HERSHEY_SIMPLEX,
    cv2.FONT_HERSHEY_DUPLEX,
    cv2.FONT_HERSHEY_COMPLEX,
    cv2.FONT_HERSHEY_TRIPLEX,
)
_LETTERS = "ABCDEFGHIKLMNOPRSTUWY"


def spine_texture(rng: np.random.Generator, look: SpineLook, width: float, length: float) -> np.ndarray:
    """A photo-like spine surface in the spine's own frame: float32 [L, W, 3] RGB 0..255.

    L = ceil(length) rows from the top of the spine (v = 1) down to its bottom (v = 0); W = ceil(width)
    columns from the left long edge (u = 0) to the right one. Holds the look's colour and bands, maybe a
    second colour over one end (two-tone jackets), a title block, title and author text written along
    the spine with `cv2.putText` (or letters stacked across it), a publisher mark near the bottom,
    cloth / paper grain and sometimes a glossy streak. Shading and edges are added by `paint_book`.
    """
    rows, cols = max(math.ceil(length), 2), max(math.ceil(width), 2)
    texture = np.empty((rows, cols, 3), np.float32)
    texture[:] = look.colour

    def span(v0: float, v1: float) -> slice:  # rows showing v0 <= v < v1
        return slice(int((1.0 - v1) * rows), math.ceil((1.0 - v0) * rows))

    if rng.random() < 0.3:  # two-tone jacket
        split = rng.uniform(0.25, 0.75)
        second = _contrasting(rng, look.colour) if rng.random() < 0.5 else look.colour * rng.uniform(0.4, 0.7)
        texture[span(0.0, split) if rng.random() < 0.5 else span(split, 1.0)] = second
    for start, end, band_colour in look.bands:
        texture[span(start, end)] = band_colour
    ink = look.title_colour if rng.random() < 0.75 else _contrasting(rng, look.colour)
    title_start = rng.uniform(0.3, 0.55)
    title_end = min(title_start + rng.uniform(0.25, 0.5), 0.96)
    if rng.random() < 0.25:  # label block behind the title
        block = _contrasting(rng, look.colour)
        texture[span(title_start - 0.02, title_end + 0.02)] = block
        ink = np.full(3, 20.0) if block.mean() > 110 else np.full(3, 235.0)
    if rng.random() < 0.85:
        if rng.random() < 0.12:
            _stacked_letters(texture, span(title_start, title_end), ink, rng)
        else:
            _text_along(texture, span(title_start, title_end), ink, rng.uniform(0.4, 0.75), rng)
        if rng.random() < 0.6:  # author, smaller, below the title
            _text_along(texture, span(0.1, title_start - 0.03), ink, rng.uniform(0.3, 0.5), rng)
    if rng.random() < 0.5:  # publisher mark: a small block or disc near the bottom
        r0, r1 = int((1.0 - 0.09) * rows), int((1.0 - 0.03) * rows)
        c0, c1 = int(cols * 0.25), max(int(cols * 0.75), int(cols * 0.25) + 1)
        mark = np.zeros((rows, cols), np.uint8)
        if rng.random() < 0.5:
            mark[r0:r1, c0:c1] = 255
        else:
            centre = (cols // 2, (r0 + r1) // 2)
            cv2.circle(mark, centre, max(int(cols * 0.25), 1), 255, -1, cv2.LINE_AA)
        _blend(texture, mark, ink)
    # Cloth / paper: fine per-pixel grain and streaks across the spine.
    grain = rng.normal(0.0, rng.uniform(0.015, 0.05), (rows, cols)) + rng.normal(
        0.0, rng.uniform(0.0, 0.03), (rows, 1)
    )
    if rng.random() < 0.3:  # glossy jacket: a bright streak along the spine
        u = (np.arange(cols) + 0.5) / cols
        streak = np.exp(-(((u - rng.uniform(0.2, 0.8)) / 0.12) ** 2))
        grain = grain + rng.uniform(0.08, 0.25) * streak[None, :]
    texture *= (1.0 + grain)[:, :, None].astype(np.float32)
    return np.clip(texture, 0.0, 255.0)


def _text_along(texture: np.ndarray, rows: slice, ink: np.ndarray, size: float, rng) -> None:
    """Random words written along the spine inside `rows`, letters `size` times the spine width high."""
    start, stop, _ = rows.indices(texture.shape[0])
    span_px, cols = stop - start, texture.shape[1]
    if span_px < 4 or cols < 4:
        return
    font = _FONTS[int(rng.integers(len(_FONTS)))]
    scale = size * cols / 22.0  # the Hershey fonts' capitals are about 22 px high at scale 1
    thickness = max(1, round(scale * rng.uniform(1.0, 2.2)))
    (letter_w, letter_h), _ = cv2.getTextSize("M", font, scale, thickness)
    n = max(int(span_px / max(letter_w * 0.8, 1)), 1)
    words = "".join(
        " " if k and rng.random() < 0.18 else _LETTERS[int(rng.integers(len(_LETTERS)))] for k in range(n)
    )
    # The text is written on a strip lying across the spine (x along the spine), then turned upright:
    # clockwise reads top to bottom (English spines), anticlockwise bottom to top (German, French).
    strip = np.zeros((cols, span_px), np.uint8)
    origin = (int(rng.uniform(0, 0.15) * span_px), (cols + letter_h) // 2)
    cv2.putText(strip, words, origin, font, scale, 255, thickness, cv2.LINE_AA)
    turn = cv2.ROTATE_90_CLOCKWISE if rng.random() < 0.7 else cv2.ROTATE_90_COUNTERCLOCKWISE
    alpha = np.zeros(texture.shape[:2], np.uint8)
    alpha[start:stop] = cv2.rotate(strip, turn)
    _blend(texture, alpha, ink)


def _stacked_letters(texture: np.ndarray, rows: slice, ink: np.ndarray, rng) -> None:
    """Upright letters stacked one under the other inside `rows` (a title read without tilting the head)."""
    start, stop, _ = rows.indices(texture.shape[0])
    cols = texture.shape[1]
    if stop - start < 6 or cols < 6:
        return
    font = _FONTS[int(rng.integers(len(_FONTS)))]
    scale = 0.55 * cols / 22.0
    thickness = max(1, round(scale * 1.5))
    (letter_w, letter_h), _ = cv2.getTextSize("M", font, scale, thickness)
    alpha = np.zeros(texture.shape[:2], np.uint8)
    for y in range(start + letter_h, stop, max(int(letter_h * 1.5), 2)):
        letter = _LETTERS[int(rng.integers(len(_LETTERS)))]
        cv2.putText(alpha, letter, ((cols - letter_w) // 2, y), font, scale, 255, thickness, cv2.LINE_AA)
    _blend(texture, alpha, ink)


def _blend(texture: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> None:
    """texture = texture * (1 - a) + colour * a in place, with a = alpha / 255 (uint8 [L, W])."""
    a = (alpha.astype(np.float32) / 255.0)[:, :, None]
    texture *= 1.0 - a
    texture += a * np.asarray(colour, np.float32)


def wood_texture(rng: np.random.Generator, height: int, width: int, vertical: bool = False) -> np.ndarray:
    """Wood grain as a brightness factor float32 [H, W] around 1: fibres and growth-ring lines.

    The grain runs along x (boards) or, with `vertical`, along y (side panels).
    """
    along, across = (height, width) if vertical else (width, height)
    # Fibres: noise that changes quickly across the grain and slowly along it.
    fibres = rng.normal(0.0, 1.0, (max(across // 2, 2), max(along // 40, 2))).astype(np.float32)
    fibres = cv2.resize(fibres, (along, across), interpolation=cv2.INTER_LINEAR)
    # Growth rings: thin dark lines across the grain whose position drifts slowly along it.
    drift = rng.normal(0.0, 1.0, (max(across // 24, 2), max(along // 80, 2))).astype(np.float32)
    drift = cv2.resize(drift, (along, across), interpolation=cv2.INTER_CUBIC)
    period = rng.uniform(6.0, 18.0) * max(across, along) / 256
    phase = np.arange(across, dtype=np.float32)[:, None] / period + rng.uniform(0.8, 2.0) * drift
    rings = np.abs(np.sin(np.pi * phase)) ** 6
    grain = 1.0 + rng.uniform(0.02, 0.05) * fibres - rng.uniform(0.06, 0.16) * rings
    return (grain.T if vertical else grain).astype(np.float32)


def paint_clutter(
    canvas: np.ndarray, rng: np.random.Generator, box: tuple[int, int, int, int], count: int
) -> None:
    """Out-of-focus background things (pots, plants, boxes, balls) standing on the bottom of `box`.

    Paints only the canvas (in place): clutter is background, never a book or an owner. Shapes are
    round or wider than tall, so they do not look like spines.

    Args:
        box: (x0, y0, x1, y1) integer pixel bounds, exclusive at x1 / y1; things stand on y1.
        count: number of things.
    """
    x0, y0, x1, y1 = box
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, canvas.shape[1]), min(y1, canvas.shape[0])
    h, w = y1 - y0, x1 - x0
    if h < 8 or w < 8:
        return
    patch = canvas[y0:y1, x0:x1].copy()
    alpha = np.zeros((h, w), np.float32)
    for _ in range(count):
        hsv = (rng.random(), rng.uniform(0.05, 0.45), rng.uniform(0.2, 0.85))
        colour = np.array(colorsys.hsv_to_rgb(*hsv)) * 255
        shape = np.zeros((h, w), np.uint8)
        cx, size = int(rng.uniform(0, w)), rng.uniform(0.15, 0.55) * h
        kind = rng.integers(0, 3)
        if kind == 0:  # pot, ball, lamp foot
            axes = (max(int(size * rng.uniform(0.4, 0.8)), 2), max(int(size / 2), 2))
            cv2.ellipse(shape, (cx, h - axes[1]), axes, 0, 0, 360, 255, -1)
        elif kind == 1:  # box or basket, wider than tall
            bw, bh = int(size * rng.uniform(1.5, 2.5)), int(size * rng.uniform(0.4, 0.8))
            cv2.rectangle(shape, (cx - bw // 2, h - bh), (cx + bw // 2, h - 1), 255, -1)
        else:  # plant: leaves fanning out from a point
            for angle in rng.uniform(-150, -30, int(rng.integers(4, 9))):
                leaf = max(int(size * rng.uniform(0.4, 0.8)), 3)
                # each leaf is an ellipse from the base point (cx, h - 1) out along `angle`
                centre = (
                    int(cx + leaf / 2 * math.cos(math.radians(angle))),
                    int(h - 1 + leaf / 2 * math.sin(math.radians(angle))),
                )
                cv2.ellipse(shape, centre, (leaf // 2, max(leaf // 6, 1)), float(angle), 0, 360, 255, -1)
            hsv = (rng.uniform(0.22, 0.4), rng.uniform(0.4, 0.8), rng.uniform(0.25, 0.6))  # leaf green
            colour = np.array(colorsys.hsv_to_rgb(*hsv)) * 255
        inside = shape > 0
        ramp = np.linspace(1.1, 0.8, w, dtype=np.float32)[None, :] if rng.random() < 0.5 else 1.0
        patch[inside] = (colour[None, None, :] * np.broadcast_to(ramp, (h, w))[:, :, None])[inside]
        alpha[inside] = 1.0
    sigma = rng.uniform(0.8, 2.5) * canvas.shape[0] / 256  # behind the books: out of focus
    patch = cv2.GaussianBlur(patch, (0, 0), sigma)
    alpha = cv2.GaussianBlur(alpha, (0, 0), sigma)[:, :, None]
    canvas[y0:y1, x0:x1] = canvas[y0:y1, x0:x1] * (1.0 - alpha) + patch * alpha


def random_homography(rng: np.random.Generator, shape: tuple[int, int], strength: float) -> np.ndarray:
    """A random view of the scene from a phone not square to the shelf: float64 [3, 3].

    Maps output pixel coordinates (x, y, 1) to source pixel coordinates (cv2 convention: pixel (row r,
    col c) is the point (c, r)). The output's corners land inside the source frame, each moved
    inwards by at most `strength` of the image side (a keystone from yaw and pitch plus independent
    jitter), so every output pixel sees the source and no border has to be invented.
    """
    height, width = shape
    inset = rng.uniform(0.0, 0.5, (4, 2))  # per corner TL, TR, BR, BL: (x, y) as fractions of strength
    yaw, pitch = rng.uniform(-1.0, 1.0, 2)
    inset[[0, 3], 1] += max(yaw, 0.0) * 0.5  # left side farther away: shorter in the source
    inset[[1, 2], 1] += max(-yaw, 0.0) * 0.5
    inset[[0, 1], 0] += max(pitch, 0.0) * 0.5  # top farther away (phone tilted up)
    inset[[2, 3], 0] += max(-pitch, 0.0) * 0.5
    inset *= strength
    w, h = width - 1, height - 1
    source = np.array(
        [
            [inset[0, 0] * w, inset[0, 1] * h],
            [(1 - inset[1, 0]) * w, inset[1, 1] * h],
            [(1 - inset[2, 0]) * w, (1 - inset[2, 1]) * h],
            [inset[3, 0] * w, (1 - inset[3, 1]) * h],
        ],
        np.float32,
    )
    frame = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    return cv2.getPerspectiveTransform(frame, source)


def warp_scene(canvas: np.ndarray, owner: np.ndarray, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Resample canvas (bilinear) and owner map (nearest neighbour) through `matrix` (output -> source).

    Args:
        canvas: float32 [H, W, 3]; owner: int32 [H, W]; matrix: float64 [3, 3] from `random_homography`.

    Returns:
        (canvas float32 [H, W, 3], owner int32 [H, W]) of the same size. Each output pixel's owner is
        the source pixel nearest to where it samples, so a mask holds exactly the pixels whose colour
        comes mostly from its book (edge pixels blend neighbours as in any photo).
    """
    height, width = owner.shape
    flags = cv2.WARP_INVERSE_MAP
    warped = cv2.warpPerspective(
        canvas, matrix, (width, height), flags=cv2.INTER_LINEAR | flags, borderMode=cv2.BORDER_REPLICATE
    )
    # Owner ids are small integers, exact in float32; cv2 does not warp int32 images.
    labels = cv2.warpPerspective(
        owner.astype(np.float32),
        matrix,
        (width, height),
        flags=cv2.INTER_NEAREST | flags,
        borderMode=cv2.BORDER_REPLICATE,
    )
    return warped, np.rint(labels).astype(np.int32)


def photo_lighting(canvas: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Room lighting of a phone photo on a float32 [H, W, 3] canvas (0..255); returns a new canvas.

    Uneven illumination (a smooth random gain field), vignetting around a point near the centre, a
    colour cast (white balance: warm / cool and green / magenta), an exposure change, more contrast
    (a phone's tone curve) and sometimes a soft highlight (lamp or window glare) blending towards warm white. `strength` scales all of them
    (0: none, 1: typical). The fields are smooth, so they are computed at 1/8 size and enlarged.
    """
    height, width = canvas.shape[:2]
    small_h, small_w = max(height // 8, 4), max(width // 8, 4)
    coarse = rng.uniform(1.0 - 0.25 * strength, 1.0 + 0.15 * strength, (3, 3)).astype(np.float32)
    gain = cv2.resize(coarse, (small_w, small_h), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:small_h, 0:small_w].astype(np.float32)
    ny, nx = (yy + 0.5) / small_h - 0.5, (xx + 0.5) / small_w - 0.5
    cy, cx = rng.uniform(-0.15, 0.15, 2)
    gain *= 1.0 - rng.uniform(0.1, 0.4) * strength * ((ny - cy) ** 2 + (nx - cx) ** 2) * 2.0
    glare = None
    if rng.random() < 0.5:
        gy, gx = rng.uniform(-0.5, 0.5, 2)
        radius = rng.uniform(0.1, 0.35)
        spot = np.exp(-((ny - gy) ** 2 + (nx - gx) ** 2) / (2 * radius**2))
        glare = (rng.uniform(0.1, 0.35) * strength * spot).astype(np.float32)
    warm, tint = rng.uniform(-1.0, 1.0, 2) * strength
    cast = np.array([1.0 + 0.1 * warm, 1.0 + 0.04 * tint, 1.0 - 0.1 * warm], np.float32)
    gain = cv2.resize(gain * rng.uniform(1.0 - 0.1 * strength, 1.0 + 0.2 * strength), (width, height))
    out = canvas * (gain[:, :, None] * cast)
    # Phone tone curve: more contrast around the image's mean.
    mean = out.mean(axis=(0, 1))
    out = mean + (out - mean) * rng.uniform(1.0, 1.0 + 0.4 * strength)
    if glare is not None:
        glare = cv2.resize(glare, (width, height))[:, :, None]
        out += (np.array([255.0, 245.0, 225.0], np.float32) - out) * glare  # towards warm white
    return out


def camera_finish(
    image: np.ndarray,
    rng: np.random.Generator,
    blur_sigma: tuple[float, float],
    jpeg_quality: tuple[int, int],
) -> np.ndarray:
    """Defocus blur and a JPEG round trip of a uint8 [H, W, 3] RGB image; returns uint8 [H, W, 3] RGB.

    Args:
        blur_sigma: (min, max) Gaussian blur sigma in pixels; below 0.3 no blur.
        jpeg_quality: (min, max) JPEG quality (1..100); (0, 0): no JPEG.
    """
    sigma = rng.uniform(*blur_sigma)
    if sigma >= 0.3:
        image = cv2.GaussianBlur(image, (0, 0), sigma)
    if max(jpeg_quality) > 0:
        quality = int(rng.integers(jpeg_quality[0], jpeg_quality[1], endpoint=True))
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise RuntimeError("cv2 could not encode a JPEG")
        image = cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return image


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
