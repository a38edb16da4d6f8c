"""Outline the books in new photos with a trained model, in bounded memory (what `bookseg predict` runs).

    from bookseg.inference.predict import predict_paths
    from bookseg.inference.trained_model import load_from_run
    trained = load_from_run(run_id)
    summary = predict_paths(trained.model, trained.class_names, ["photos/"], "predictions/")

Images are read, detected and written in chunks (`batch_size` images, fewer when they are large), and
each image's full-size masks are turned into its outputs and dropped before the next chunk is read; so
memory does not grow with the number of photos. What is written: see `bookseg.inference.predict_outputs`.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bookseg.inference.predict_outputs import (
    COCO_IMAGES,
    COCO_RESULTS,
    COUNTS_CSV,
    OVERLAYS,
    VIA_PROJECT,
    VIA_PROJECT_NAME,
    PredictionWriter,
    check_outputs_free,
)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# A chunk holds at most this many input pixels (besides `batch_size` images): a 12 MP photo goes alone.
CHUNK_PIXELS = 8_000_000


@dataclass
class PredictSummary:
    """What `predict_paths` did.

    Attributes:
        out_dir: the output folder.
        images: (file, width, height, books) per predicted image, in input order (as counts.csv).
        skipped: (path, reason) of inputs that could not be read (left out of every output).
        empty_masks_dropped: detections left out because their mask has no pixel.
        multipart_masks: masks with several parts (VIA holds the outline of the largest part only).
        images_root: common folder of the inputs; file names are relative to it (VIA's images folder).
    """

    out_dir: Path
    images_root: Path | None = None
    images: list[tuple[str, int, int, int]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    empty_masks_dropped: int = 0
    multipart_masks: int = 0

    @property
    def n_images(self) -> int:
        return len(self.images)

    @property
    def n_books(self) -> int:
        return sum(row[3] for row in self.images)

    def text(self) -> str:
        """Short human-readable report (printed by the CLI)."""
        lines = [f"{self.n_books} books in {self.n_images} images -> {self.out_dir}"]
        lines.append(f"  {OVERLAYS}/  {COCO_RESULTS} (+ {COCO_IMAGES})  {COUNTS_CSV}  {VIA_PROJECT}")
        if self.empty_masks_dropped:
            lines.append(f"  {self.empty_masks_dropped} detection(s) with an empty mask left out")
        if self.multipart_masks:
            lines.append(
                f"  {self.multipart_masks} mask(s) in several parts: VIA outlines their largest part"
            )
        if self.skipped:
            lines.append(f"  {len(self.skipped)} image(s) could not be read and were skipped:")
            lines += [f"    {path}: {reason}" for path, reason in self.skipped]
        if self.n_books == 0 and self.images:
            lines.append(
                "The model found no book in these images: nothing to correct. Check the model's "
                "metrics, or lower --min-confidence."
            )
        elif self.images_root is not None:
            lines.append(
                f"Correct the outlines: open {self.out_dir / VIA_PROJECT} in VIA 2 (Project > Load), fix them, "
                f"then Project > Save, which downloads {VIA_PROJECT_NAME}.json (usually into your Downloads "
                "folder). Train on that file, not on this folder's unchanged copy:\n"
                f"  python -m bookseg.run data=via data.path=<Downloads>/{VIA_PROJECT_NAME}.json\n"
                f"  (the project names its image folder, {self.images_root}, so no data.images_dir is needed)"
            )
        return "\n".join(lines)


def find_images(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Image files named by `paths`: files as given, folders searched recursively (`IMAGE_EXTENSIONS`,
    any letter case, hidden files and folders skipped). Sorted, without duplicates, absolute.

    Raises:
        FileNotFoundError: a path does not exist.
        ValueError: a file given explicitly is not an image by its extension, or no image was found.
    """
    found: set[Path] = set()
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                found.update(
                    Path(root, f).resolve()
                    for f in files
                    if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)
                )
        elif path.is_file():
            if not path.name.lower().endswith(IMAGE_EXTENSIONS):
                raise ValueError(f"{path}: not an image file (extensions: {', '.join(IMAGE_EXTENSIONS)})")
            found.add(path.resolve())
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    if not found:
        raise ValueError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in {[str(p) for p in paths]}")
    return sorted(found)


def common_folder(images: Sequence[Path]) -> Path:
    """The deepest folder holding all `images` (absolute paths)."""
    return Path(os.path.commonpath([p.parent for p in images]))


def relative_names(images: Sequence[Path]) -> list[str]:
    """Posix path of each image relative to `common_folder(images)`."""
    root = common_folder(images)
    return [p.relative_to(root).as_posix() for p in images]


def predict_paths(
    model,
    class_names: Sequence[str],
    paths: Iterable[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    min_confidence: float | None = None,
    max_instances: int | None = None,
    batch_size: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> PredictSummary:
    """Detect books in every image of `paths` and write overlays, COCO results, counts and a VIA project.

    Args:
        model: a `MaskRCNN` (anything with its `detect` method and `config`).
        class_names: class id k is `class_names[k - 1]`.
        paths: image files and folders (searched recursively, see `find_images`).
        out_dir: output folder (created).
        min_confidence: minimum detection score (default: the model config's `detection_min_confidence`).
        max_instances: maximum books per image (default: the model config's `detection_max_instances`).
        batch_size: images per `detect` call (default `config.images_per_batch`); a chunk also stops at
            `CHUNK_PIXELS` input pixels.
        overwrite: replace existing output files; without it any existing output is an error (checked
            before anything is computed).
        progress: show a tqdm progress bar on stderr.

    Returns:
        `PredictSummary`. Unreadable images are skipped with a warning naming each, listed in `skipped`.

    Raises:
        FileExistsError: outputs exist and `overwrite` is False.
        FileNotFoundError, ValueError: see `find_images`.
    """
    from tqdm import tqdm

    from bookseg.data.images import load_image_rgb

    images = find_images(paths)
    files = relative_names(images)
    out_dir = Path(out_dir)
    check_outputs_free(out_dir, files, overwrite)
    if batch_size is None:
        batch_size = max(1, int(getattr(model.config, "images_per_batch", 1)))
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")

    summary = PredictSummary(out_dir=out_dir, images_root=common_folder(images))
    writer = PredictionWriter(out_dir, class_names, files, overwrite=overwrite)
    bar = tqdm(total=len(images), unit="image", desc="predict", disable=not progress, file=sys.stderr)
    try:
        chunk: list[tuple[int, Path, object]] = []
        pixels = 0
        for index, path in enumerate(images):
            try:
                image = load_image_rgb(path)
            except OSError as error:  # ImageReadError is an OSError
                summary.skipped.append((str(path), str(error)))
                warnings.warn(f"{path}: cannot read the image, skipped ({error})", stacklevel=2)
                bar.update(1)
                continue
            if chunk and pixels + image.shape[0] * image.shape[1] > CHUNK_PIXELS:
                _run_chunk(model, chunk, writer, min_confidence, max_instances, bar)
                chunk, pixels = [], 0
            chunk.append((index, path, image))
            pixels += image.shape[0] * image.shape[1]
            if len(chunk) >= batch_size:
                _run_chunk(model, chunk, writer, min_confidence, max_instances, bar)
                chunk, pixels = [], 0
        if chunk:
            _run_chunk(model, chunk, writer, min_confidence, max_instances, bar)
    except BaseException:
        writer.abort()
        raise
    finally:
        bar.close()
    writer.close()
    summary.images = writer.stats.images
    summary.empty_masks_dropped = writer.stats.empty_masks_dropped
    summary.multipart_masks = writer.stats.multipart_masks
    return summary


def _run_chunk(model, chunk, writer: PredictionWriter, min_confidence, max_instances, bar) -> None:
    results = model.detect(
        [image for _, _, image in chunk], min_confidence=min_confidence, max_instances=max_instances
    )
    for (index, path, image), result in zip(chunk, results):
        writer.add(index, path, image, result)
        bar.update(1)
    chunk.clear()  # drop the images and their full-size masks before the next chunk is read
