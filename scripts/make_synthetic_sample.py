"""Regenerate docs/images/synthetic_sample.jpg: synthetic shelves with their annotated outlines.

The shelves are generated into a temporary folder and read back through `load_dataset`, so the
picture shows exactly what training sees: the top row holds the images, the bottom row the same
images with every book's annotated outline (one colour per book).

    python scripts/make_synthetic_sample.py [--out docs/images/synthetic_sample.jpg] [--seed 0]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import cv2
import numpy as np

from bookseg.data.images import load_image_rgb
from bookseg.data.readers import load_dataset
from bookseg.data.synthetic import generate_shelves
from bookseg.data.viz import draw_instances

ROOT = Path(__file__).resolve().parents[1]
MAX_BYTES = 150_000


def sample_grid(seed: int, picks: list[int], image_size: tuple[int, int]) -> np.ndarray:
    """uint8 [2 * h, len(picks) * w, 3] RGB: images on top, annotated outlines below."""
    with tempfile.TemporaryDirectory() as tmp:
        path = generate_shelves(tmp, max(picks) + 1, seed=seed, image_size=image_size)
        records = load_dataset(path).records
        top, bottom = [], []
        for index in picks:
            record = records[index]
            image = load_image_rgb(record.path)
            top.append(image)
            bottom.append(draw_instances(image, record.masks(), numbered=False, alpha=0.2))
    return np.concatenate([np.concatenate(top, axis=1), np.concatenate(bottom, axis=1)], axis=0)


def write_jpeg(path: Path, image: np.ndarray, max_bytes: int = MAX_BYTES) -> int:
    """Write the best JPEG quality that fits in `max_bytes`; returns the quality used."""
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    for quality in range(90, 40, -5):
        ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok and len(data) <= max_bytes:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data.tobytes())
            return quality
    raise RuntimeError(f"{path}: cannot fit the sample in {max_bytes} bytes")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "synthetic_sample.jpg")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--picks", type=int, nargs="+", default=[2, 4, 6, 9], help="image indices to show")
    args = parser.parse_args(argv)
    grid = sample_grid(args.seed, args.picks, (256, 256))
    quality = write_jpeg(args.out, grid)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes, JPEG quality {quality})")


if __name__ == "__main__":
    main()
