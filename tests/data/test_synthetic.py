"""Synthetic shelves: reproducible bytes, sensible content, masks matching the pixels, cache reuse."""

import dataclasses
import hashlib
import json
import math
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from bookseg.data import synthetic_draw as draw
from bookseg.data.records import rasterize_polygon
from bookseg.data.synthetic import (
    COMPLETE_MARKER,
    GENERATOR_VERSION,
    STYLES,
    ShelfStyle,
    _leaning_on,
    _style_hash,
    generate_shelves,
    render_shelf,
    style_by_name,
    synthetic_dataset_path,
)


def _digest(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _polygons(entry: dict) -> list[np.ndarray]:
    return [
        np.stack([r["shape_attributes"]["all_points_x"], r["shape_attributes"]["all_points_y"]], axis=1)
        for r in entry["regions"]
    ]


@pytest.fixture(scope="module")
def shelves(tmp_path_factory):
    """24 images at 256 x 256, seed 7: (folder, project dict)."""
    folder = tmp_path_factory.mktemp("shelves")
    path = generate_shelves(folder, 24, seed=7)
    return folder, json.loads(path.read_text())


def test_same_seed_gives_identical_bytes_and_other_seeds_differ(tmp_path):
    first = _digest(generate_shelves(tmp_path / "a", 5, seed=3, image_size=(128, 160)).parent)
    second = _digest(generate_shelves(tmp_path / "b", 5, seed=3, image_size=(128, 160)).parent)
    other = _digest(generate_shelves(tmp_path / "c", 5, seed=4, image_size=(128, 160)).parent)
    assert len(first) == 6 and first == second
    assert all(first[name] != other[name] for name in first)
    # Image i depends only on (seed, i): a longer set starts with the same images.
    longer = _digest(generate_shelves(tmp_path / "d", 7, seed=3, image_size=(128, 160)).parent)
    assert all(longer[f"images/shelf_000{i}.png"] == first[f"images/shelf_000{i}.png"] for i in range(5))


def test_files_and_annotations_are_consistent(shelves):
    folder, project = shelves
    entries = list(project["_via_img_metadata"].values())
    assert len(entries) == 24
    assert project["_via_settings"]["core"]["default_filepath"] == "images/"
    for entry in entries:
        image = cv2.imread(str(folder / "images" / entry["filename"]), cv2.IMREAD_UNCHANGED)
        assert image.shape == (256, 256, 3) and image.dtype == np.uint8
        assert entry["size"] == (folder / "images" / entry["filename"]).stat().st_size
        assert entry["file_attributes"] == {"group": Path(entry["filename"]).stem, "source": "synthetic"}
        assert all(r["region_attributes"] == {"name": "book"} for r in entry["regions"])


def test_book_counts_and_variety(shelves):
    _, project = shelves
    counts, tilts, lying = [], 0, 0
    for entry in project["_via_img_metadata"].values():
        counts.append(len(entry["regions"]))
        for polygon in _polygons(entry):
            _, _, angle = cv2.minAreaRect(polygon.astype(np.float32))
            tilt = min(angle % 90, 90 - angle % 90)
            tilts += tilt > 4
            lying += np.ptp(polygon[:, 0]) > 2 * np.ptp(polygon[:, 1])
    counts = np.array(counts)
    non_empty = counts[counts > 0]
    assert 6 <= np.median(non_empty) <= 25
    assert non_empty.min() >= 1 and counts.max() <= 30
    assert tilts >= 5  # leaning books
    assert lying >= 5  # stacks and books lying in front


def test_visible_masks_are_disjoint_single_pieces():
    style = ShelfStyle()
    generator = np.random.default_rng(11)
    for rng in generator.spawn(6):
        shelf = render_shelf(rng, (256, 256), style)
        union = np.zeros((256, 256), int)
        for mask in shelf.masks:
            union += mask
            parts, _ = cv2.connectedComponents(mask.astype(np.uint8), connectivity=4)
            assert parts - 1 == 1  # one visible piece: its polygon covers all of it
        assert union.max() <= 1  # visible parts never overlap


def test_polygons_rasterise_onto_the_rendered_masks(tmp_path):
    path = generate_shelves(tmp_path, 4, seed=5)
    entries = list(json.loads(path.read_text())["_via_img_metadata"].values())
    for entry, rng in zip(entries, np.random.default_rng(5).spawn(4)):
        shelf = render_shelf(rng, (256, 256), ShelfStyle())
        polygons = _polygons(entry)
        assert len(polygons) == len(shelf.masks)
        for polygon, mask in zip(polygons, shelf.masks):
            drawn = rasterize_polygon(polygon, 256, 256)
            assert (drawn & mask).sum() / (drawn | mask).sum() >= 0.97


def test_occluded_books_store_only_their_visible_part():
    style = ShelfStyle(object_rate=1.0, front_book_rate=1.0, tilt_rate=0.0, stack_rate=0.0)
    notched = 0
    for rng in np.random.default_rng(2).spawn(8):
        shelf = render_shelf(rng, (256, 256), style)
        for mask in shelf.masks:
            points = np.argwhere(mask)[:, ::-1].astype(np.float32)
            (_, _), (w, h), _ = cv2.minAreaRect(points)
            fill = mask.sum() / max((w + 1) * (h + 1), 1)
            notched += fill < 0.85
    assert notched >= 3


def test_books_contrast_with_their_surroundings():
    """Learnability: the mean colour inside each book differs from the ring of pixels around it."""
    differences = []
    for rng in np.random.default_rng(9).spawn(6):
        shelf = render_shelf(rng, (256, 256), ShelfStyle())
        image = shelf.image.astype(np.float32)
        for mask in shelf.masks:
            if mask.sum() < 50:
                continue
            ring = cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool) & ~mask
            differences.append(np.linalg.norm(image[mask].mean(0) - image[ring].mean(0)))
    assert np.median(differences) > 25


def test_empty_shelves_are_negatives(tmp_path):
    path = generate_shelves(tmp_path, 3, seed=1, style=ShelfStyle(empty_rate=1.0))
    entries = json.loads(path.read_text())["_via_img_metadata"].values()
    assert [e["regions"] for e in entries] == [[], [], []]


def test_sixty_images_take_a_few_seconds(tmp_path):
    start = time.perf_counter()
    generate_shelves(tmp_path, 60, seed=0)
    assert time.perf_counter() - start < 15  # about 1.5 s alone on 2 cores; margin for parallel tests
    assert len(list((tmp_path / "images").glob("*.png"))) == 60


def test_refuses_to_overwrite(tmp_path):
    generate_shelves(tmp_path, 2, seed=0, image_size=(64, 64))
    before = _digest(tmp_path)
    with pytest.raises(FileExistsError, match="overwrite"):
        generate_shelves(tmp_path, 2, seed=1, image_size=(64, 64))
    assert _digest(tmp_path) == before
    generate_shelves(tmp_path, 2, seed=1, image_size=(64, 64), overwrite=True)
    assert _digest(tmp_path) != before


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="n_images"):
        generate_shelves(tmp_path, 0)
    with pytest.raises(ValueError, match="32x32"):
        generate_shelves(tmp_path, 1, image_size=(16, 64))


def test_cache_generates_once_and_reuses(tmp_path):
    path = synthetic_dataset_path(tmp_path, 3, seed=2, image_size=(96, 128))
    assert path == tmp_path / "synthetic-3-2-96x128" / "via_project.json"
    marker = json.loads((path.parent / COMPLETE_MARKER).read_text())
    assert marker["generator_version"] == GENERATOR_VERSION and marker["image_size"] == [96, 128]
    stamp = path.stat().st_mtime_ns
    assert synthetic_dataset_path(tmp_path, 3, seed=2, image_size=(96, 128)) == path
    assert path.stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == ["synthetic-3-2-96x128"]  # no temporary leftovers
    # A set from another generator version is replaced by a fresh one.
    (path.parent / COMPLETE_MARKER).write_text(json.dumps({**marker, "generator_version": -1}))
    assert synthetic_dataset_path(tmp_path, 3, seed=2, image_size=(96, 128)) == path
    assert json.loads((path.parent / COMPLETE_MARKER).read_text()) == marker
    # A non-default style gets its own folder.
    other = synthetic_dataset_path(
        tmp_path, 3, seed=2, image_size=(96, 128), style=ShelfStyle(empty_rate=1.0)
    )
    assert other.parent.name.startswith("synthetic-3-2-96x128-") and other != path


def test_cache_never_deletes_a_folder_it_did_not_make(tmp_path):
    foreign = tmp_path / "synthetic-2-0-64x64"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="marker"):
        synthetic_dataset_path(tmp_path, 2, seed=0, image_size=(64, 64))
    assert (foreign / "notes.txt").read_text() == "mine"


def test_synthetic_set_loads_through_the_reader(tmp_path):
    from bookseg.data.readers import load_dataset

    path = generate_shelves(tmp_path, 4, seed=7, image_size=(128, 128))
    project = json.loads(path.read_text())
    dataset = load_dataset(path)

    assert dataset.class_names == ["book"]
    assert len(dataset.records) == 4
    expected = sum(len(e["regions"]) for e in project["_via_img_metadata"].values())
    assert sum(len(r.instances) for r in dataset.records) == expected
    assert not dataset.report.errors
    for record in dataset.records:
        assert Path(record.path).parent == (tmp_path / "images").resolve()
        assert record.attributes["group"] == Path(record.path).stem


# --- photo-like style -------------------------------------------------------------------------------


def test_default_style_output_is_unchanged(tmp_path):
    """The photo options are off by default: pixels, polygons and style hash are those of the generator
    before they were added (hashes computed with that version)."""
    folder = generate_shelves(tmp_path, 3, seed=3, image_size=(128, 160)).parent
    project = json.loads((folder / "via_project.json").read_text())
    pixels_and_regions = hashlib.sha256()
    for entry in project["_via_img_metadata"].values():
        # Decoded pixels, not PNG bytes, so another libpng / zlib build does not matter.
        pixels_and_regions.update(cv2.imread(str(folder / "images" / entry["filename"])).tobytes())
        pixels_and_regions.update(json.dumps(entry["regions"], sort_keys=True).encode())
    assert pixels_and_regions.hexdigest() == (
        "a18e7bba05c58d72d290eae5c24e6e788f698581e34d939bd36188a760667aa3"
    )
    rendered = hashlib.sha256()
    for rng in np.random.default_rng(21).spawn(3):
        shelf = render_shelf(rng, (96, 128), ShelfStyle())
        rendered.update(shelf.image.tobytes())
        for mask in shelf.masks:
            rendered.update(np.packbits(mask).tobytes())
    assert rendered.hexdigest() == "496b51cdeef4792f6636db6f4607ea18dc116e0df769588f91707c6a95aee1dc"
    # Cached sets keep their folder and marker: new options enter the style hash only when set.
    assert _style_hash(ShelfStyle()) == "54b06af4"
    assert _style_hash(ShelfStyle(empty_rate=1.0)) == "2249dc16"
    assert STYLES["default"] == ShelfStyle() and style_by_name("photo") == ShelfStyle.photo()


def test_photo_style_is_deterministic_per_seed(tmp_path):
    style = ShelfStyle.photo()
    first = _digest(generate_shelves(tmp_path / "a", 2, seed=4, image_size=(128, 160), style=style).parent)
    second = _digest(generate_shelves(tmp_path / "b", 2, seed=4, image_size=(128, 160), style=style).parent)
    other = _digest(generate_shelves(tmp_path / "c", 2, seed=5, image_size=(128, 160), style=style).parent)
    assert first == second
    assert all(first[name] != other[name] for name in first)


def test_photo_masks_are_disjoint_single_pieces_inside_the_image():
    for size in ((192, 192), (160, 224)):
        for rng in np.random.default_rng(13).spawn(5):
            shelf = render_shelf(rng, size, ShelfStyle.photo())
            assert shelf.image.shape == (*size, 3) and shelf.image.dtype == np.uint8
            union = np.zeros(size, int)
            for mask in shelf.masks:
                assert mask.shape == size and mask.any()
                union += mask
                parts, _ = cv2.connectedComponents(mask.astype(np.uint8), connectivity=4)
                assert parts - 1 == 1
            assert union.max() <= 1


def test_warp_moves_masks_with_the_pixels():
    """Warped with one homography, a red book on a blue wall stays red exactly where its mask is."""
    canvas = np.empty((120, 160, 3), np.float32)
    canvas[:] = (20, 40, 200)
    owner = np.full((120, 160), -1, np.int32)
    polygons = [[(10, 20), (40, 20), (40, 110), (10, 110)], [(60, 30), (75, 25), (100, 100), (85, 105)]]
    for k, corners in enumerate(polygons):
        colour, rng = np.array([220.0, 30.0, 30.0]), np.random.default_rng(0)
        draw.paint_polygon(canvas, owner, k, np.array(corners, float), colour, rng, shading=0)
    for seed in range(4):
        matrix = draw.random_homography(np.random.default_rng(seed), owner.shape, 0.15)
        warped, labels = draw.warp_scene(canvas, owner, matrix)
        assert not np.array_equal(labels, owner)  # it did move
        books = labels >= 0
        red = warped[..., 0] > warped[..., 2]
        inner = cv2.erode(books.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        outer = ~cv2.dilate(books.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        assert red[inner].all() and not red[outer].any()
        assert (red & books).sum() / (red | books).sum() > 0.95  # edge pixels blend, as in a photo


def test_photo_masks_match_the_drawn_books_through_perspective_and_lighting(monkeypatch):
    """Plain green books on a grey wall, photo style with perspective and lighting: the masks cover the
    green pixels (colour cast, vignetting and glare change brightness, not which pixels are green)."""
    green = np.array([20.0, 200.0, 20.0])
    paint_background = draw.paint_background

    def grey_background(rng, height, width, boards):
        canvas, back, _ = paint_background(rng, height, width, boards)
        canvas[:] = 128.0
        return canvas, back, np.full(3, 128.0)

    monkeypatch.setattr(draw, "paint_background", grey_background)
    monkeypatch.setattr(draw, "random_colour", lambda rng, avoid, distance: green.copy())
    monkeypatch.setattr(
        draw, "random_spine_look", lambda rng, colour, width: draw.SpineLook(colour, edge_px=0, rounding=0)
    )
    warp_scene, warps = draw.warp_scene, []

    def counted_warp(*args):
        warps.append(1)
        return warp_scene(*args)

    monkeypatch.setattr(draw, "warp_scene", counted_warp)

    style = dataclasses.replace(
        ShelfStyle.photo(),
        spine_detail=0.0,
        muted_rate=0.0,
        clutter_rate=0.0,
        side_panel_rate=0.0,
        object_rate=0.0,
        front_book_rate=0.0,
        empty_rate=0.0,
        blur_sigma=(0.0, 0.0),
        jpeg_quality=(0, 0),
        perspective=0.12,
    )
    kernel = np.ones((5, 5), np.uint8)
    for rng in np.random.default_rng(17).spawn(4):
        shelf = render_shelf(rng, (160, 160), style)
        image = shelf.image.astype(int)
        is_green = image[..., 1] - np.maximum(image[..., 0], image[..., 2]) > 60
        books = np.any(shelf.masks, axis=0)
        inner = cv2.erode(books.astype(np.uint8), kernel).astype(bool)
        outer = ~cv2.dilate(books.astype(np.uint8), kernel).astype(bool)
        assert is_green[inner].mean() > 0.99 and is_green[outer].mean() < 0.01
        assert (is_green & books).sum() / (is_green | books).sum() > 0.85
    assert len(warps) >= 4


def test_photo_style_differs_from_default_and_has_its_own_cache(tmp_path):
    shelves = {
        name: [render_shelf(rng, (128, 128), STYLES[name]) for rng in np.random.default_rng(8).spawn(6)]
        for name in ("default", "photo")
    }
    assert all(not np.array_equal(a.image, b.image) for a, b in zip(shelves["default"], shelves["photo"]))
    books = {name: np.mean([len(shelf.masks) for shelf in images]) for name, images in shelves.items()}
    assert books["photo"] > books["default"]  # more, thinner books
    plain = synthetic_dataset_path(tmp_path, 2, seed=0, image_size=(64, 64))
    photo = synthetic_dataset_path(tmp_path, 2, seed=0, image_size=(64, 64), style=ShelfStyle.photo())
    assert plain.parent.name == "synthetic-2-0-64x64"
    assert photo.parent.name == f"synthetic-2-0-64x64-{_style_hash(ShelfStyle.photo())}"


def test_books_in_a_leaning_chain_touch_side_to_side():
    floor = 100.0
    for angle in (math.radians(25.0), math.radians(-30.0)):
        first = draw.BookGeometry((50.0, 60.0), 12.0, 70.0, angle)
        second = _leaning_on(first, 9.0, 80.0, angle, floor)
        assert second.corners()[:, 1].max() == pytest.approx(floor)  # stands on the board
        # The left side of the second lies on the line of the right side of the first.
        a, b = first.corners()[1], first.corners()[2]
        for point in (second.corners()[0], second.corners()[3]):
            cross = (b[0] - a[0]) * (point[1] - a[1]) - (b[1] - a[1]) * (point[0] - a[0])
            assert abs(cross) / math.dist(a, b) < 1e-6


def _compose(overrides):
    from hydra import compose, initialize_config_dir

    from bookseg.config.schema import register_configs

    register_configs()
    conf = Path(__file__).resolve().parents[2] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def test_config_selects_the_style_and_rejects_unknown_ones(tmp_path):
    from bookseg.config.validate import ConfigError, validate
    from bookseg.experiment.data import load_data

    cfg = _compose(
        [
            "data.synthetic.style=photo",
            f"data.cache_dir={tmp_path}",
            "data.synthetic.n_images=2",
            "data.synthetic.height=64",
            "data.synthetic.width=64",
        ]
    )
    validate(cfg)
    dataset = load_data(cfg)
    assert len(dataset.records) == 2
    folder = Path(dataset.records[0].path).parents[1]
    assert folder.name == f"synthetic-2-0-64x64-{_style_hash(ShelfStyle.photo())}"
    with pytest.raises(ConfigError, match=r"data.synthetic.style='glossy': use one of default, photo"):
        validate(_compose(["data.synthetic.style=glossy"]))
    with pytest.raises(ValueError, match="unknown synthetic style 'glossy'"):
        style_by_name("glossy")
