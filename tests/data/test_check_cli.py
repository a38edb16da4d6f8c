"""`bookseg data check`: statistics and problems, through `main()` and `python -m bookseg`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bookseg.cli import main

from ._fixtures_readers import BOOKSHELF, OPEN_SHELVES, shape, square, via2_entry, write_via2_dataset

REPO = Path(__file__).resolve().parents[2]


def test_python_m_bookseg_data_check_open_shelves():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "bookseg", "data", "check", str(OPEN_SHELVES.parent)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "format: via2_project" in out
    assert "images: 482\n" in out and "instances: 9678\n" in out
    assert "images without instances: 0" in out
    assert "  book: 9678" in out
    assert "warning points_outside_image: 1337 in 311 images" in out
    assert "0 errors" in out


def test_main_prints_statistics_of_bookshelf_valid(capsys):
    assert main(["data", "check", str(BOOKSHELF / "valid")]) == 0
    out = capsys.readouterr().out
    assert "format: coco" in out and "images: 23" in out and "instances: 45" in out
    assert "instances per image: min 1 / median 2 / mean 1.96 / max 4" in out  # README: 1 to 4 books an image


def test_box_statistics_on_a_known_data_set(tmp_path, capsys):
    # two 10 x 40 (w x h) books and one 20 x 20 box in 64 x 48 images, plus one empty image
    entries = [
        via2_entry(
            "a.png",
            [shape("rect", {"kind": "book"}, x=1, y=1, width=10, height=40), square(30, 5, 20, kind="box")],
        ),
        via2_entry("b.png", [shape("rect", {"kind": "book"}, x=40, y=2, width=10, height=40)]),
        via2_entry("c.png", []),
    ]
    path = write_via2_dataset(tmp_path, entries)
    assert main(["data", "check", str(path), "--class-attribute", "kind"]) == 0
    out = capsys.readouterr().out
    assert "images: 3\n" in out and "instances: 3\n" in out
    assert "images without instances: 1" in out
    assert "classes (2): book, box\n  book: 2\n  box: 1" in out
    assert (
        "box size sqrt(w*h), px:        min 20.0  p5 20.0  p25 20.0  p50 20.0  p75 20.0  p95 20.0  max 20.0"
        in out
    )
    assert "box size / longer image side:  min 0.312" in out  # 20 / 64
    assert "box aspect ratio h/w:          min 1.00" in out and "max 4.00" in out
    assert "note image_without_instances: 1 in 1 images" in out


def test_errors_give_exit_code_1_and_are_all_printed(tmp_path, capsys):
    entries = [
        via2_entry("a.png", [square(1, 1, 8), shape("blob")]),
        via2_entry("gone.png", [square(1, 1, 8)]),
    ]
    path = write_via2_dataset(tmp_path, entries)
    (tmp_path / "gone.png").unlink()
    assert main(["data", "check", str(path)]) == 1
    out = capsys.readouterr().out
    assert "images: 1\n" in out  # the usable image is still described
    assert "2 errors" in out
    assert f'{path}: image "a.png", region 1 (blob): unknown shape' in out
    assert f'{path}: image "gone.png": image file not found' in out


def test_unreadable_path_and_images_dir_option(tmp_path, capsys):
    assert main(["data", "check", str(tmp_path / "missing.json")]) == 1
    assert "no such file or folder" in capsys.readouterr().out
    path = write_via2_dataset(tmp_path / "pics", [via2_entry("a.png", [square(1, 1, 8)])])
    moved = tmp_path / "ann" / "project.json"
    moved.parent.mkdir()
    path.rename(moved)
    assert main(["data", "check", str(moved)]) == 1
    capsys.readouterr()
    assert main(["data", "check", str(moved), "--images-dir", str(tmp_path / "pics")]) == 0


def test_cli_requires_a_subcommand(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["data"])
    assert caught.value.code == 2
