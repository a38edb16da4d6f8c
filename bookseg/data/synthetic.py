"""Synthetic bookshelves: the built-in default data set, written as PNG images plus a VIA 2 project.

Each image shows 1-3 shelf compartments with books seen from their spines: upright, slightly
tilted and leaning books, horizontal stacks, objects (boxes, vases, bookends) and sometimes a
book lying flat in front of upright ones, with shadows, a lighting gradient and sensor noise.
Every book is one instance of class "book" whose mask is its *visible* part (occluded pixels
excluded), so masks always match the pixels showing the book; occluders are only accepted when
each book they cover keeps most of its area in one connected piece.

Generation is seeded through one `numpy.random.Generator`: the same seed, image count, size and
style give byte-identical PNG and JSON files. Image i depends only on (seed, i).

`ShelfStyle.photo()` (`STYLES["photo"]`, `data.synthetic.style=photo`) turns on the photo-like options,
for pre-training before fine-tuning on real photos: thinner, taller and more books, domino chains of
leaning books, spines with text strokes, cloth grain and two tones, wood grain, bookcase side panels
with the room beyond, background clutter, a random perspective of the whole image (masks warped with
nearest neighbour), room lighting, defocus and JPEG. They are off in the default style, whose output
is unchanged.

The annotations go through `via_writer.write_via2_project`, so synthetic data travels the same
reader path as user data (`bookseg.data.readers.load_dataset`).
"""

from __future__ import annotations

import colorsys
import dataclasses
import hashlib
import itertools
import json
import math
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from bookseg.data import synthetic_draw as draw
from bookseg.data.records import ImageRecord, Instance
from bookseg.data.via_writer import write_via2_project

# Bump when the generator's output changes, so cached data sets are regenerated.
GENERATOR_VERSION = 1
ANNOTATION_FILE = "via_project.json"
COMPLETE_MARKER = ".complete"
CLASS_NAME = "book"
_OBJECT_BASE_ID = -2  # owner ids of objects are -2, -3, ...; -1 is background; books are >= 0


@dataclass(frozen=True)
class ShelfStyle:
    """How the shelves look; the defaults give 6-25 books per 256 px image.

    Attributes:
        books_per_image: (min, max) books aimed for per image (fewer when the shelves are full).
        empty_rate: share of images with no book at all (negatives; they may hold objects).
        rows: shelf compartments per image, drawn uniformly from this tuple.
        gap_px: (min, max) gap between neighbouring upright books, pixels at 256 px image height.
        touching_rate: share of neighbours standing with no gap (separated only by their edges).
        tilt_rate: share of upright books that lean; max_tilt_deg: their largest tilt.
        stack_rate: chance per compartment of a horizontal stack of 2-5 books lying flat.
        object_rate: chance per compartment of an object standing in front (box, vase, bookend).
        front_book_rate: chance per compartment of a book lying flat in front of upright books.
        min_visible: smallest share of a book an occluder may leave visible.
        noise_sigma: (min, max) standard deviation of the Gaussian noise, in 0..255 grey levels.

    Photo-like options (off by default; `ShelfStyle.photo()` turns them on):
        book_width: (min, max) thickness of upright books as a share of the compartment height.
        book_length: (min, max) height of upright books as a share of the compartment height.
        lean_chain_rate: chance that a tilted book starts a chain of 1-3 more books leaning parallel
            to it, side against side (dominoes).
        spine_detail: share of books whose spine gets text strokes, cloth grain, maybe two tones, a
            title block and a publisher mark (`synthetic_draw.spine_texture`).
        muted_rate: share of books in paper white, cream, black or a greyed colour instead of a random one.
        wood_grain: wood-grain texture on the boards and side panels.
        side_panel_rate: chance of a bookcase side panel on the left, right or both sides, with the
            room beyond it; books stand between the panels.
        clutter_rate: chance per compartment of out-of-focus things standing behind the books.
        perspective: largest inward move of an image corner under the random homography, as a share of
            the image side (0: none); masks are warped with the image.
        lighting: strength of uneven illumination, vignetting, colour cast and glare (0: none).
        blur_sigma: (min, max) sigma in pixels of an extra defocus blur (below 0.3: none).
        jpeg_quality: (min, max) quality of a JPEG round trip; (0, 0): none.
    """

    books_per_image: tuple[int, int] = (6, 25)
    empty_rate: float = 0.05
    rows: tuple[int, ...] = (1, 2, 2, 3)
    gap_px: tuple[float, float] = (1.0, 4.0)
    touching_rate: float = 0.25
    tilt_rate: float = 0.15
    max_tilt_deg: float = 18.0
    stack_rate: float = 0.35
    object_rate: float = 0.3
    front_book_rate: float = 0.12
    min_visible: float = 0.45
    noise_sigma: tuple[float, float] = (2.0, 6.0)
    book_width: tuple[float, float] = (0.09, 0.22)
    book_length: tuple[float, float] = (0.55, 0.95)
    lean_chain_rate: float = 0.0
    spine_detail: float = 0.0
    muted_rate: float = 0.0
    wood_grain: bool = False
    side_panel_rate: float = 0.0
    clutter_rate: float = 0.0
    perspective: float = 0.0
    lighting: float = 0.0
    blur_sigma: tuple[float, float] = (0.0, 0.0)
    jpeg_quality: tuple[int, int] = (0, 0)

    @classmethod
    def photo(cls) -> ShelfStyle:
        """Closer to phone photos of home shelves: packed thin spines with titles, real-looking shelves,
        perspective, lighting and JPEG (about 15-50 books per image)."""
        return cls(
            books_per_image=(15, 50),
            empty_rate=0.02,
            rows=(1, 1, 2, 2, 3),
            gap_px=(0.5, 2.5),
            touching_rate=0.6,
            tilt_rate=0.12,
            max_tilt_deg=35.0,
            stack_rate=0.4,
            object_rate=0.25,
            front_book_rate=0.1,
            noise_sigma=(1.5, 5.0),
            book_width=(0.045, 0.15),
            book_length=(0.6, 0.97),
            lean_chain_rate=0.4,
            spine_detail=0.9,
            muted_rate=0.35,
            wood_grain=True,
            side_panel_rate=0.6,
            clutter_rate=0.5,
            perspective=0.08,
            lighting=1.0,
            blur_sigma=(0.0, 1.0),
            jpeg_quality=(50, 92),
        )


# Named presets, selected in the Hydra config by `data.synthetic.style`.
STYLES: dict[str, ShelfStyle] = {"default": ShelfStyle(), "photo": ShelfStyle.photo()}
# Fields of the first generator version; fields added later enter the style hash only when set.
_FIRST_FIELDS = (
    "books_per_image",
    "empty_rate",
    "rows",
    "gap_px",
    "touching_rate",
    "tilt_rate",
    "max_tilt_deg",
    "stack_rate",
    "object_rate",
    "front_book_rate",
    "min_visible",
    "noise_sigma",
)


def style_by_name(name: str) -> ShelfStyle:
    """The preset `name` of `STYLES`; ValueError naming the known ones otherwise."""
    try:
        return STYLES[name]
    except KeyError:
        raise ValueError(f"unknown synthetic style {name!r}: use one of {', '.join(STYLES)}") from None


@dataclass
class ShelfImage:
    """One rendered image: uint8 [H, W, 3] RGB and bool [H, W] visible masks, one per book."""

    image: np.ndarray
    masks: list[np.ndarray]


def generate_shelves(
    out_dir: str | os.PathLike,
    n_images: int,
    *,
    seed: int = 0,
    image_size: tuple[int, int] = (256, 256),
    style: ShelfStyle | None = None,
    overwrite: bool = False,
) -> Path:
    """Write `n_images` synthetic shelves to `out_dir/images/*.png` and `out_dir/via_project.json`.

    Args:
        out_dir: destination folder (created).
        n_images: number of images (>= 1).
        seed: seed of the one `numpy.random.Generator` everything is drawn from.
        image_size: (height, width) in pixels.
        style: layout and appearance parameters (default `ShelfStyle()`).
        overwrite: replace existing files; otherwise existing outputs are an error.

    Returns:
        Path of the VIA 2 project file. Each image has file attributes `group` (its own stem: every
        image is its own fold group) and `source` ("synthetic").
    """
    if n_images < 1:
        raise ValueError(f"n_images must be >= 1, got {n_images}")
    height, width = (int(v) for v in image_size)
    if min(height, width) < 32:
        raise ValueError(f"image_size must be at least 32x32 pixels, got {image_size}")
    style = style or ShelfStyle()
    out_dir = Path(out_dir)
    json_path = out_dir / ANNOTATION_FILE
    images_dir = out_dir / "images"
    names = [f"shelf_{i:0{max(4, len(str(n_images - 1)))}d}.png" for i in range(n_images)]
    if not overwrite:
        existing = [p for p in [json_path, *(images_dir / n for n in names)] if p.exists()]
        if existing:
            raise FileExistsError(f"{existing[0]}: exists; refusing to overwrite (pass overwrite=True)")
    images_dir.mkdir(parents=True, exist_ok=True)

    records = []
    for name, rng in zip(names, np.random.default_rng(seed).spawn(n_images)):
        shelf = render_shelf(rng, (height, width), style)
        image_path = images_dir / name
        if not cv2.imwrite(str(image_path), cv2.cvtColor(shelf.image, cv2.COLOR_RGB2BGR)):
            raise OSError(f"{image_path}: could not write the image")
        stem = Path(name).stem
        instances = [
            Instance(CLASS_NAME, mask=mask, region=f"book {k}") for k, mask in enumerate(shelf.masks)
        ]
        records.append(
            ImageRecord(
                image_id=name,
                path=image_path.resolve(),
                width=width,
                height=height,
                instances=instances,
                group=stem,
                source="synthetic",
                attributes={"group": stem, "source": "synthetic"},
            )
        )
    return write_via2_project(
        records, json_path, project_name="synthetic_shelves", overwrite=overwrite, simplify_tolerance=0.5
    )


def synthetic_dataset_path(
    cache_dir: str | os.PathLike,
    n_images: int,
    seed: int = 0,
    image_size: tuple[int, int] = (256, 256),
    style: ShelfStyle | None = None,
) -> Path:
    """VIA project of a cached synthetic data set, generated on first use.

    The set lives in `cache_dir/synthetic-<n>-<seed>-<h>x<w>/` (plus a style hash when `style` is not
    the default). It is generated in a private temporary folder and renamed into place with the
    completion marker already written, so concurrent callers (parallel sweep jobs) never see a
    half-written set. A set made by another generator version is replaced.

    Returns:
        Path of the set's `via_project.json`.
    """
    style = style or ShelfStyle()
    height, width = (int(v) for v in image_size)
    name = f"synthetic-{n_images}-{seed}-{height}x{width}"
    if _style_hash(style) != _style_hash(ShelfStyle()):  # compares values, so lists from YAML match tuples
        name += "-" + _style_hash(style)
    cache_dir = Path(cache_dir)
    final = cache_dir / name
    expected = {
        "generator_version": GENERATOR_VERSION,
        "n_images": n_images,
        "seed": seed,
        "image_size": [height, width],
        "style": _style_hash(style),
    }
    marker = final / COMPLETE_MARKER
    if final.exists():
        if not marker.is_file():
            raise FileExistsError(
                f"{final}: exists but has no {COMPLETE_MARKER} marker, so it was not made by this cache; "
                "move or delete it"
            )
        if json.loads(marker.read_text()) == expected:
            return final / ANNOTATION_FILE
        # An older generator version made it: replace it (it is ours: it carries our marker).
        stale = cache_dir / f".stale-{name}-{uuid.uuid4().hex[:8]}"
        try:
            os.rename(final, stale)
        except OSError:
            pass  # another process moved it first
        shutil.rmtree(stale, ignore_errors=True)

    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache_dir / f".tmp-{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        generate_shelves(tmp, n_images, seed=seed, image_size=(height, width), style=style)
        (tmp / COMPLETE_MARKER).write_text(json.dumps(expected))
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / COMPLETE_MARKER).is_file():
                raise
            # Another process finished the same set first; its files are identical.
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final / ANNOTATION_FILE


def render_shelf(rng: np.random.Generator, image_size: tuple[int, int], style: ShelfStyle) -> ShelfImage:
    """Draw one shelf image and the visible mask of every book on it (in drawing order)."""
    height, width = image_size
    n_rows = int(rng.choice(style.rows))
    pitch = height / (n_rows + rng.uniform(0.0, 0.35))
    thickness = pitch * rng.uniform(0.06, 0.1)
    first_top = -rng.uniform(0.0, 0.35) * pitch
    boards = [(first_top + k * pitch, thickness) for k in range(n_rows + 2)]
    boards = [b for b in boards if b[0] < height]
    compartments = [
        (top + t, next_top)  # (ceiling y, floor y)
        for (top, t), (next_top, _) in itertools.pairwise(boards)
        if next_top <= height - 1 and next_top - (top + t) > 0.4 * pitch
    ]
    canvas, back, wood = draw.paint_background(rng, height, width, boards)
    # Photo-like options draw from rng only when set, so the default style's draws are unchanged.
    if style.wood_grain:
        grain = draw.wood_texture(rng, height, width)
        for top, t in boards:
            y0, y1 = max(round(top), 0), min(round(top + t), height)
            if y1 > y0:  # a board above the image has y1 < 0, which would slice from the end
                canvas[y0:y1] *= grain[y0:y1, :, None]
    left, right = 0.0, width
    if style.side_panel_rate and rng.random() < style.side_panel_rate:
        left, right = _side_panels(canvas, rng, wood, style.wood_grain)
    if style.clutter_rate:
        for ceiling, floor in compartments:
            if rng.random() < style.clutter_rate:
                box = (round(left), round(ceiling), round(right), round(floor))
                draw.paint_clutter(canvas, rng, box, int(rng.integers(1, 4)))
    owner = np.full((height, width), -1, np.int32)
    scene = _Scene(canvas, owner, back, rng, style, shadow=_shadow_params(rng, pitch))

    n_books = (
        0 if rng.random() < style.empty_rate else int(rng.integers(*style.books_per_image, endpoint=True))
    )
    quotas = (
        rng.multinomial(n_books, np.full(len(compartments), 1 / len(compartments))) if compartments else []
    )
    for (ceiling, floor), quota in zip(compartments, quotas):
        scene.fill_compartment(ceiling, floor, int(quota), right, left)
    for ceiling, floor in compartments:
        scene.add_front_items(ceiling, floor, right, books=n_books > 0, left=left)

    if style.perspective > 0:
        canvas, owner = _perspective(canvas, owner, scene.n_books, rng, style.perspective)
    if style.lighting > 0:
        canvas = draw.photo_lighting(canvas, rng, style.lighting)
    image = draw.finish_image(canvas, rng, float(rng.uniform(*style.noise_sigma)))
    if max(style.blur_sigma) > 0 or max(style.jpeg_quality) > 0:
        image = draw.camera_finish(image, rng, style.blur_sigma, style.jpeg_quality)
    masks = [owner == k for k in range(scene.n_books)]
    return ShelfImage(image, [m for m in masks if m.any()])


def _side_panels(canvas: np.ndarray, rng: np.random.Generator, wood: np.ndarray, grain: bool):
    """Paint the bookcase's side panel(s) and the room beyond them; returns the free x range (left, right).

    Args:
        canvas: float32 [H, W, 3] RGB, painted in place.
        wood: RGB float [3], the boards' colour (the panels are of the same wood).
        grain: give the panels a vertical wood grain.
    """
    height, width = canvas.shape[:2]
    left, right = 0.0, width
    side = rng.integers(0, 3)  # 0 left, 1 right, 2 both
    for on_left in [s for s, use in ((True, side != 1), (False, side != 0)) if use]:
        beyond = rng.uniform(0.0, 0.15) * width  # room visible beside the bookcase
        thickness = rng.uniform(0.025, 0.06) * width
        inner = thickness * rng.uniform(0.3, 0.8)  # the panel's inner face, seen at a slant, in shadow
        if on_left:
            room, panel = (0, round(beyond)), (round(beyond), round(beyond + thickness))
            face = (panel[1], round(beyond + thickness + inner))
            left = float(face[1])
        else:
            room = (round(width - beyond), width)
            panel = (round(width - beyond - thickness), room[0])
            face = (round(width - beyond - thickness - inner), panel[0])
            right = float(face[0])
        if room[1] > room[0]:
            wall = np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.0, 0.25), rng.uniform(0.5, 0.95)))
            canvas[:, room[0] : room[1]] = wall * 255.0 * rng.uniform(0.7, 1.0)
            draw.paint_clutter(canvas, rng, (room[0], 0, room[1], height), int(rng.integers(1, 4)))
        colour = wood * rng.uniform(0.95, 1.1)
        canvas[:, panel[0] : panel[1]] = colour
        canvas[:, face[0] : face[1]] = colour * rng.uniform(0.5, 0.75)
        if grain:
            x0, x1 = min(panel[0], face[0]), max(panel[1], face[1])
            if x1 > x0:
                canvas[:, x0:x1] *= draw.wood_texture(rng, height, x1 - x0, vertical=True)[:, :, None]
    return left, right


def _perspective(
    canvas: np.ndarray, owner: np.ndarray, n_books: int, rng: np.random.Generator, strength: float
):
    """Canvas float32 [H, W, 3] and owner map int32 [H, W] seen through a random homography.

    Up to 4 homographies (`draw.random_homography`), each weaker than the one before, are tried; the
    first under which every book either leaves the frame or keeps one 4-connected piece holding at least
    a third of its area (scaled by the zoom) is used, so the crop leaves no slivers. If none qualifies,
    the scene is returned unwarped.
    """
    height, width = owner.shape
    before = np.bincount(owner[owner >= 0], minlength=n_books)
    frame = np.array([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], np.float32)
    for attempt in range(4):
        matrix = draw.random_homography(rng, (height, width), strength * 0.6**attempt)
        quad = cv2.perspectiveTransform(frame[None], matrix)[0]
        zoom = cv2.contourArea(frame) / max(cv2.contourArea(quad), 1.0)
        warped, labels = draw.warp_scene(canvas, owner, matrix)
        after = np.bincount(labels[labels >= 0], minlength=n_books)
        if all(
            after[k] == 0 or (3 * after[k] >= before[k] * zoom and _one_piece(labels == k))
            for k in range(n_books)
        ):
            return warped, labels
    return canvas, owner


def _one_piece(mask: np.ndarray) -> bool:
    """True when the bool [H, W] mask is one 4-connected piece (checked inside its bounding box)."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    crop = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    parts, _ = cv2.connectedComponents(crop.view(np.uint8), connectivity=4)
    return parts == 2


class _Scene:
    """Painter state for one image: canvas, owner map and the pixel count of each book when drawn."""

    def __init__(self, canvas, owner, back, rng, style: ShelfStyle, shadow):
        self.canvas, self.owner, self.back, self.rng, self.style = canvas, owner, back, rng, style
        self.shadow_offset, self.shadow_strength = shadow
        self.full_area: list[int] = []
        self.n_objects = 0
        self.last_colour = back

    @property
    def n_books(self) -> int:
        return len(self.full_area)

    def fill_compartment(
        self, ceiling: float, floor: float, quota: int, right: float, left: float = 0.0
    ) -> None:
        """Stand `quota` books (some tilted, maybe one stack) on the board at `floor`, between x = left and
        x = right (the image width, or a side panel)."""
        rng, style = self.rng, self.style
        room = floor - ceiling
        scale = self.canvas.shape[0] / 256
        stack_at = int(rng.integers(0, quota)) if quota >= 2 and rng.random() < style.stack_rate else -1
        # Lay out in a local x frame first, then shift the run to a random free position.
        items, x, placed = [], 0.0, 0
        chain, previous = 0, None  # books still to lean side by side on the previous one (dominoes)
        while placed < quota:
            gap = 0.0 if rng.random() < style.touching_rate else rng.uniform(*style.gap_px) * scale
            x += gap if items else 0.0
            if placed == stack_at:
                stack_at, chain = -1, 0
                stack, x = self._stack(x, floor, room, quota - placed)
                items.extend(stack)
                placed += len(stack)
                continue
            book_width = max(room * rng.uniform(*style.book_width), 6.0)
            length = room * rng.uniform(*style.book_length)
            tilt = rng.uniform(-1.5, 1.5)
            if chain:
                chain -= 1
                angle = previous.angle + math.radians(tilt) * 0.5
                geometry = _leaning_on(previous, book_width, length, angle, floor)
                x = max(x, geometry.center[0] + geometry.half_extent()[0])
            else:
                if rng.random() < style.tilt_rate:
                    tilt = rng.choice([-1, 1]) * rng.uniform(6.0, style.max_tilt_deg)
                    if style.lean_chain_rate and rng.random() < style.lean_chain_rate:
                        chain = int(rng.integers(1, 4))
                angle = math.radians(tilt)
                half_w, half_h = draw.BookGeometry((0, 0), book_width, length, angle).half_extent()
                geometry = draw.BookGeometry((x + half_w, floor - half_h), book_width, length, angle)
                x += 2 * half_w
            previous = geometry
            items.append(geometry)
            placed += 1
        shift = left + rng.uniform(0, max(right - left - x, 0.0))
        # Against a side panel no book may stick out; at the image border up to 40% of one may.
        overhang = 0.4 if right >= self.canvas.shape[1] else 0.0
        for geometry in items:
            cx, cy = geometry.center
            geometry = dataclasses.replace(geometry, center=(cx + shift, cy))
            half_w = geometry.half_extent()[0]
            if cx + shift + half_w - right > overhang * 2 * half_w:
                break  # mostly outside the frame: the run ends at the image border
            self._paint_book(geometry)

    def add_front_items(
        self, ceiling: float, floor: float, right: float, books: bool, left: float = 0.0
    ) -> None:
        """Objects (and, if `books`, flat books) standing in front of the books of one compartment, centred
        between x = left and x = right."""
        rng, style = self.rng, self.style
        room = floor - ceiling
        if rng.random() < style.object_rate:
            for _ in range(6):
                polygon = _object_polygon(rng, rng.uniform(left, right), floor, room)
                if self._may_cover(polygon):
                    self._paint_object(polygon)
                    break
        if books and rng.random() < style.front_book_rate:
            for _ in range(6):
                length = room * rng.uniform(0.4, 0.8)
                thickness = max(room * rng.uniform(0.08, 0.14), 6.0)
                angle = math.radians(rng.choice([-90.0, 90.0]) + rng.uniform(-2, 2))
                geometry = draw.BookGeometry((rng.uniform(left, right), 0), thickness, length, angle)
                geometry = dataclasses.replace(
                    geometry, center=(geometry.center[0], floor - geometry.half_extent()[1])
                )
                if self._may_cover(geometry.corners()):
                    self._paint_book(geometry)
                    break

    def _stack(self, x: float, floor: float, room: float, remaining: int):
        """A pile of 2-5 books lying flat starting at local x; returns (geometries, new x)."""
        rng = self.rng
        count = int(min(rng.integers(2, 6), remaining))
        length = room * rng.uniform(0.45, 0.85)
        items, bottom, right = [], floor, x
        for _ in range(count):
            thickness = max(room * rng.uniform(0.07, 0.15), 6.0)
            book_length = length * rng.uniform(0.85, 1.0)
            angle = math.radians(rng.choice([-90.0, 90.0]) + rng.uniform(-2, 2))
            half_w, half_h = draw.BookGeometry((0, 0), thickness, book_length, angle).half_extent()
            if floor - (bottom - 2 * half_h) > 0.92 * room:
                break
            left = x + rng.uniform(0, 0.1) * length
            items.append(draw.BookGeometry((left + half_w, bottom - half_h), thickness, book_length, angle))
            bottom -= 2 * half_h
            right = max(right, left + 2 * half_w)
        return items, right

    def _paint_book(self, geometry: draw.BookGeometry) -> None:
        rng = self.rng
        colour = draw.random_colour(rng, [self.back, self.last_colour], 70.0)
        if self.style.muted_rate and rng.random() < self.style.muted_rate:
            colour = draw.muted_colour(rng, colour)
        self.last_colour = colour
        look = draw.random_spine_look(rng, colour, geometry.width)
        if self.style.spine_detail and rng.random() < self.style.spine_detail:
            texture = draw.spine_texture(rng, look, geometry.width, geometry.length)
            look = dataclasses.replace(look, texture=texture)
        corners = geometry.corners()
        draw.cast_shadow(self.canvas, corners, self.shadow_offset, self.shadow_strength)
        book_id = self.n_books
        draw.paint_book(self.canvas, self.owner, book_id, geometry, look, rng)
        self.full_area.append(int(np.count_nonzero(self.owner == book_id)))

    def _paint_object(self, polygon: np.ndarray) -> None:
        colour = draw.random_colour(self.rng, [self.back], 60.0)
        draw.cast_shadow(self.canvas, polygon, self.shadow_offset, self.shadow_strength)
        draw.paint_polygon(
            self.canvas, self.owner, _OBJECT_BASE_ID - self.n_objects, polygon, colour, self.rng
        )
        self.n_objects += 1

    def _may_cover(self, polygon: np.ndarray) -> bool:
        """True when every book under `polygon` keeps `min_visible` of its area in one 4-connected piece."""
        cover = draw.polygon_mask(polygon, self.owner.shape)
        if not cover.any():
            return False
        for book_id in np.unique(self.owner[cover]):
            if book_id < 0:
                continue
            visible = (self.owner == book_id) & ~cover
            if visible.sum() < self.style.min_visible * self.full_area[book_id]:
                return False
            parts, _ = cv2.connectedComponents(visible.astype(np.uint8), connectivity=4)
            if parts - 1 != 1:
                return False
        return True


def _leaning_on(
    previous: draw.BookGeometry, width: float, length: float, angle: float, floor: float
) -> draw.BookGeometry:
    """A book at `angle` standing on `floor` whose left long side lies along the right long side of
    `previous` (both sides meet the floor at the same x), its lowest corner on the floor."""

    def floor_x(corner: np.ndarray, tilt: float, y: float) -> float:
        # x where the long side through `corner` (direction (sin, -cos)) crosses the line at height y
        return float(corner[0] + (corner[1] - y) / math.cos(tilt) * math.sin(tilt))

    target = floor_x(previous.corners()[1], previous.angle, floor)  # previous's right side at the floor
    shape = draw.BookGeometry((0.0, 0.0), width, length, angle).corners()
    lowest = float(shape[:, 1].max())
    left = floor_x(shape[0], angle, lowest)  # this book's left side at its own lowest point
    return draw.BookGeometry((target - left, floor - lowest), width, length, angle)


def _object_polygon(rng: np.random.Generator, x: float, floor: float, room: float) -> np.ndarray:
    """A box, vase or bookend standing on the board at `floor`, centred near x; float [P, 2] (x, y)."""
    kind = rng.integers(0, 3)
    width = room * rng.uniform(0.15, 0.35)
    height = room * rng.uniform(0.2, 0.55)
    if kind == 0:  # box
        return np.array(
            [
                [x - width / 2, floor],
                [x + width / 2, floor],
                [x + width / 2, floor - height],
                [x - width / 2, floor - height],
            ]
        )
    if kind == 1:  # vase: round body, narrow neck, small lip; outline from its half-width profile
        s = np.linspace(0.0, 1.0, 16)
        half = width / 2 * np.where(s < 0.75, 0.55 + 0.45 * np.sin(np.pi * s / 0.75), 0.3)
        half[-1] = width / 2 * 0.4
        right = np.stack([x + half, floor - s * height], 1)
        left = np.stack([x - half[::-1], floor - s[::-1] * height], 1)
        return np.concatenate([right, left])
    # bookend: an L seen from the front
    foot = width * 0.9
    return np.array(
        [
            [x - width / 2, floor],
            [x - width / 2 + foot, floor],
            [x - width / 2 + foot, floor - height * 0.12],
            [x - width / 2 + width * 0.2, floor - height * 0.12],
            [x - width / 2 + width * 0.2, floor - height],
            [x - width / 2, floor - height],
        ]
    )


def _plain(values: dict) -> dict:
    """JSON-equal form: tuples become lists, so values from YAML compare equal to the presets'."""
    return json.loads(json.dumps(values))


def _shadow_params(rng: np.random.Generator, pitch: float) -> tuple[tuple[float, float], float]:
    direction = rng.choice([-1.0, 1.0])
    reach = pitch * rng.uniform(0.015, 0.04)
    return (direction * reach, reach * 0.5), float(rng.uniform(0.15, 0.35))


def _style_hash(style: ShelfStyle) -> str:
    values, defaults = _plain(dataclasses.asdict(style)), _plain(dataclasses.asdict(ShelfStyle()))
    # Options added after the first version count only when set, so the default style and every older
    # style keep their hash, cache folder and marker.
    values = {k: v for k, v in values.items() if k in _FIRST_FIELDS or v != defaults[k]}
    text = json.dumps(values, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:8]
