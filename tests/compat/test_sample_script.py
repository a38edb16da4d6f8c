"""samples/bookshelf/bookshelf.py end to end: train (heads, then all), `--weights=last`, detect, drawing saved."""

from __future__ import annotations

import ast

from tests.compat.conftest import SAMPLE


def test_sample_trains_resumes_and_draws(sample_run):
    assert sample_run.train_rc == 0 and sample_run.detect_rc == 0
    assert "Training network heads" in sample_run.output and "Fine tune all layers" in sample_run.output
    assert "Re-starting from epoch 2" in sample_run.output  # detect --weights=last found epoch 2
    assert sample_run.figure.stat().st_size > 1000
    assert sample_run.figure.read_bytes()[:4] == b"\x89PNG"


def test_sample_dataset_reads_via_like_the_balloon_sample(sample_run):
    module = sample_run.module
    train, val = module.BookDataset(), module.BookDataset()
    train.load_book(str(sample_run.via), "train")
    val.load_book(str(sample_run.via), "val")
    train.prepare()
    val.prepare()
    assert train.class_names == ["BG", "book"]
    assert train.num_images + val.num_images <= 10 and val.num_images >= 1
    assert not {i["id"] for i in train.image_info} & {i["id"] for i in val.image_info}
    masks, class_ids = train.load_mask(0)
    info = train.image_info[0]
    assert masks.shape == (info["height"], info["width"], len(info["polygons"])) and masks.dtype == bool
    assert (class_ids == 1).all() and masks.any(axis=(0, 1)).all()


def test_sample_imports_only_the_compat_layer():
    """The script is a matterport script apart from its imports: bookseg enters only via bookseg.compat."""
    tree = ast.parse(SAMPLE.read_text())
    top_level = [node for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)]
    bookseg = [
        node.module
        for node in top_level
        if isinstance(node, ast.ImportFrom) and node.module.startswith("bookseg")
    ]
    assert bookseg and all(name.startswith("bookseg.compat") for name in bookseg)
