"""Read images the way the annotation tools display them: 8-bit RGB, EXIF orientation applied.

Browsers (hence VIA) and LabelMe show a photo rotated by its EXIF orientation tag, and the
annotated coordinates are in that displayed frame. `cv2.imread(path)` applies the tag but
PIL's `Image.open` and the size in the file header do not, so both functions here read the tag
explicitly and return pixels and sizes in the displayed frame.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

_ORIENTATION_TAG = 0x0112
# Orientations 5-8 turn the stored image by 90 degrees: displayed width = stored height.
_SWAPS_AXES = {5, 6, 7, 8}


class ImageReadError(OSError):
    """An image file exists but cannot be decoded (the message names the file and the reason)."""


def _orientation(image: Image.Image) -> int:
    """EXIF orientation (1-8) of an opened (not decoded) PIL image; 1 when absent or invalid."""
    if image.format == "PNG":
        # PngImageFile.getexif() decodes the whole image to look for a late eXIf chunk; the PNG
        # spec puts eXIf before the image data, where the header parser has already read it.
        exif = Image.Exif()
        raw = image.info.get("exif")
        if raw:
            exif.load(raw)
    else:
        exif = image.getexif()
    value = exif.get(_ORIENTATION_TAG, 1)
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _open_header(path: Path) -> Image.Image:
    try:
        return Image.open(path)
    except FileNotFoundError:
        raise
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise ImageReadError(f"{path}: not a readable image ({err})") from err


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """Displayed size of an image, reading only the file header.

    Returns:
        (width, height) in pixels after EXIF orientation (a portrait photo stored as landscape with
        orientation 6 gives its portrait size).

    Raises:
        FileNotFoundError: no such file.
        ImageReadError: the file is not an image PIL can identify.
    """
    path = Path(path)
    with _open_header(path) as image:
        width, height = image.size
        if _orientation(image) in _SWAPS_AXES:
            width, height = height, width
    return width, height


def image_orientation(path: str | os.PathLike) -> int:
    """EXIF orientation tag of an image file (1 = as stored), reading only the header."""
    with _open_header(Path(path)) as image:
        return _orientation(image)


def apply_orientation(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Turn stored pixels [H, W, ...] into the displayed frame for an EXIF orientation 1-8.

    Same result as `PIL.ImageOps.exif_transpose`.
    """
    ops = {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],  # mirrored left-right
        3: lambda a: a[::-1, ::-1],  # rotated 180
        4: lambda a: a[::-1],  # mirrored top-bottom
        5: lambda a: np.swapaxes(a, 0, 1),  # transposed
        6: lambda a: np.swapaxes(a, 0, 1)[:, ::-1],  # display = stored turned 90 degrees clockwise
        7: lambda a: np.swapaxes(a, 0, 1)[::-1, ::-1],  # transversed
        8: lambda a: np.swapaxes(a, 0, 1)[::-1],  # display = stored turned 90 degrees anticlockwise
    }
    if orientation not in ops:
        raise ValueError(f"EXIF orientation must be 1-8, got {orientation}")
    return np.ascontiguousarray(ops[orientation](pixels))


def _to_uint8(pixels: np.ndarray, path: Path) -> np.ndarray:
    if pixels.dtype == np.uint8:
        return pixels
    if pixels.dtype == np.uint16:
        # Scale the full 16-bit range onto 0..255 (round to nearest), never clip.
        return ((pixels.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    raise ImageReadError(f"{path}: unsupported pixel type {pixels.dtype} (expected 8 or 16 bit)")


def _to_rgb(pixels: np.ndarray, path: Path) -> np.ndarray:
    """cv2 channel layouts (gray, gray+alpha, BGR, BGRA) to RGB; alpha is dropped, not composited."""
    if pixels.ndim == 2:
        return np.repeat(pixels[:, :, None], 3, axis=2)
    channels = pixels.shape[2]
    if channels in (1, 2):
        return np.repeat(pixels[:, :, :1], 3, axis=2)
    if channels in (3, 4):
        return np.ascontiguousarray(pixels[:, :, 2::-1])  # BGR(A) -> RGB
    raise ImageReadError(f"{path}: unsupported number of channels ({channels})")


def load_image_rgb(path: str | os.PathLike) -> np.ndarray:
    """Decode an image as the annotation tools display it.

    Grayscale, palette, gray+alpha and RGBA images become RGB (alpha is dropped); 16-bit images are
    scaled to 8 bit (value * 255 / 65535, rounded); the EXIF orientation tag is applied.

    Returns:
        uint8 [H, W, 3] RGB in the displayed frame; (W, H) equals `image_size(path)`.

    Raises:
        FileNotFoundError: no such file.
        ImageReadError: the file cannot be decoded.
    """
    path = Path(path)
    data = np.fromfile(path, np.uint8)  # cv2.imread cannot open non-ASCII paths on Windows
    # IMREAD_UNCHANGED keeps 16-bit depth and does *not* apply EXIF orientation; we apply it below
    # from the tag PIL reads, so pixels and `image_size` always agree.
    pixels = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if pixels is None:
        raise ImageReadError(f"{path}: cannot decode image ({data.size} bytes)")
    rgb = _to_rgb(_to_uint8(pixels, path), path)
    return apply_orientation(rgb, image_orientation(path))
