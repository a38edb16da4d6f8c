"""The real photos shipped in `data/` load cleanly, and every `data/...` path the README uses exists."""

import re
from pathlib import Path

import pytest

from bookseg.data.readers import load_dataset

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("path", "images", "books"),
    [
        ("data/open_shelves_sample/via_project.json", 24, 512),
        ("data/bookshelf_v5/train/annotations.json", 96, 1006),
        ("data/bookshelf_v5/valid/annotations.json", 23, 45),
    ],
)
def test_shipped_sample_loads_without_errors(path, images, books):
    dataset = load_dataset(ROOT / path)
    assert len(dataset.records) == images
    assert sum(len(r.instances) for r in dataset.records) == books
    assert dataset.class_names == ["book"]
    assert all(r.path.is_file() for r in dataset.records)


def test_every_data_path_in_the_readme_exists():
    paths = set(re.findall(r"\bdata/[\w./-]+\.json", (ROOT / "README.md").read_text()))
    assert paths, "the README names no shipped data file"
    assert [p for p in sorted(paths) if not (ROOT / p).is_file()] == []
