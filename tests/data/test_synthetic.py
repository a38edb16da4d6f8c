"""Synthetic shelves: reproducible bytes, sensible content, masks matching the pixels, cache reuse."""

import hashlib
import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from bookseg.data.records import rasterize_polygon
from bookseg.data.synthetic import (
    COMPLETE_MARKER,
    GENERATOR_VERSION,
    ShelfStyle,
    generate_shelves,
    render_shelf,
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
