"""Image loading: every pixel layout becomes uint8 RGB in the displayed (EXIF-rotated) frame."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from bookseg.data.images import ImageReadError, apply_orientation, image_size, load_image_rgb
from bookseg.data.records import rasterize_polygon


def _pattern(height: int, width: int) -> np.ndarray:
    """uint8 [H, W, 3] of 8x8 blocks in distinct colours (survives JPEG, shows any flip or turn)."""
    rng = np.random.default_rng(3)
    blocks = (rng.integers(0, 8, (height // 8, width // 8, 3)) * 32).astype(np.uint8)
    return np.kron(blocks, np.ones((8, 8, 1), np.uint8))


def test_grayscale_rgba_palette_and_bilevel(tmp_path):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(gray, "L").save(tmp_path / "gray.png")
    rgba = np.dstack([gray, gray // 2, 255 - gray, np.full_like(gray, 7)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    rgb = np.dstack([gray, 255 - gray, gray // 3])
    Image.fromarray(rgb, "RGB").quantize(colors=256, method=Image.Quantize.MAXCOVERAGE).save(
        tmp_path / "palette.png"
    )
    Image.fromarray(gray > 100).save(tmp_path / "bilevel.png")

    loaded = load_image_rgb(tmp_path / "gray.png")
    assert loaded.dtype == np.uint8 and loaded.shape == (3, 4, 3)
    np.testing.assert_array_equal(loaded, np.dstack([gray] * 3))
    np.testing.assert_array_equal(load_image_rgb(tmp_path / "rgba.png"), rgba[:, :, :3])  # alpha dropped
    expected_palette = np.asarray(Image.open(tmp_path / "palette.png").convert("RGB"))
    np.testing.assert_array_equal(load_image_rgb(tmp_path / "palette.png"), expected_palette)
    np.testing.assert_array_equal(
        load_image_rgb(tmp_path / "bilevel.png")[:, :, 1], np.where(gray > 100, 255, 0)
    )


def test_16_bit_images_are_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 32768, 65535]], np.uint16)
    cv2.imwrite(str(tmp_path / "gray16.png"), values)
    bgr = np.dstack([values, values // 2, np.full_like(values, 65535)])  # 32767 -> 127.498 -> 127
    cv2.imwrite(str(tmp_path / "color16.png"), bgr)
    np.testing.assert_array_equal(load_image_rgb(tmp_path / "gray16.png")[0, :, 0], [0, 1, 128, 255])
    color = load_image_rgb(tmp_path / "color16.png")
    assert color.dtype == np.uint8
    np.testing.assert_array_equal(color[0], [[255, 0, 0], [255, 0, 1], [255, 64, 128], [255, 127, 255]])


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_matches_pil_transpose(tmp_path, orientation):
    stored = _pattern(24, 40)
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.png"
    image.save(path, exif=exif)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    loaded = load_image_rgb(path)
    np.testing.assert_array_equal(loaded, expected)
    assert image_size(path) == (loaded.shape[1], loaded.shape[0])
    np.testing.assert_array_equal(apply_orientation(stored, orientation), expected)


def test_exif_rotated_jpeg_masks_align_with_pixels(tmp_path):
    # What the annotator sees: a 48 x 80 (W x H) portrait photo with a bright book at x 8..24, y 40..72.
    displayed = np.full((80, 48, 3), 20, np.uint8)
    displayed[40:72, 8:24] = 230
    # The camera stores it landscape, with orientation 6 ("turn 90 degrees clockwise to display").
    stored = np.rot90(displayed, k=1)  # anticlockwise: undoes the display rotation
    image = Image.fromarray(np.ascontiguousarray(stored))
    exif = image.getexif()
    exif[0x0112] = 6
    path = tmp_path / "portrait.jpg"
    image.save(path, exif=exif, quality=95)
    assert Image.open(path).size == (80, 48)  # header size, unrotated
    assert image_size(path) == (48, 80)
    loaded = load_image_rgb(path)
    assert loaded.shape == (80, 48, 3) and loaded.dtype == np.uint8
    book = np.array([[8, 40], [24, 40], [24, 72], [8, 72]], float)  # polygon in the displayed frame
    mask = rasterize_polygon(book, 80, 48)
    assert mask.sum() == 16 * 32
    assert loaded[mask].min() > 200 and loaded[~mask].max() < 60


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        image_size(tmp_path / "nope.jpg")
    with pytest.raises(FileNotFoundError):
        load_image_rgb(tmp_path / "nope.jpg")
    (tmp_path / "text.jpg").write_text("not an image")
    with pytest.raises(ImageReadError, match="text.jpg"):
        image_size(tmp_path / "text.jpg")
    with pytest.raises(ImageReadError, match="cannot decode"):
        load_image_rgb(tmp_path / "text.jpg")
