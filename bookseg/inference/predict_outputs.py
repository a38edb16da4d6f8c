"""The files `bookseg predict` writes, fed one image's detections at a time (bounded memory).

Layout of the output folder:

    overlays/<file>.jpg     each book filled, outlined, numbered 1..n with its score
                            (`bookseg.data.viz.draw_instances`)
    predictions_coco.json   COCO results: [{image_id, category_id, segmentation (RLE, counts str),
                            bbox [x, y, w, h], score}], streamed to disk as images are processed
    images.json             COCO dataset skeleton (images, categories, no annotations) the image ids
                            resolve against: `COCO("images.json").loadRes("predictions_coco.json")`
    counts.csv              file, width, height, books (one row per image, written as it is processed)
    via_project.json        VIA 2 project: each detection as a polygon with region attributes
                            `name` (class) and `score`, to open in VIA, correct and train again

`<file>` is the image's path relative to the common folder of all inputs (posix), the same name used in
counts.csv, images.json and the VIA project. Image ids are 1..N in the sorted input order.

Detections whose mask has no pixel are left out of every file (counted); a mask with several parts is
written whole to COCO and the overlay, and as the outline of its largest part to VIA (counted).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

COCO_RESULTS = "predictions_coco.json"
COCO_IMAGES = "images.json"
COUNTS_CSV = "counts.csv"
VIA_PROJECT = "via_project.json"
VIA_PROJECT_NAME = "bookseg_predictions"  # VIA's Project > Save downloads <name>.json
OVERLAYS = "overlays"
CLASS_ATTRIBUTE = "name"
SCORE_ATTRIBUTE = "score"


@dataclass
class WriteStats:
    """Counts of what the writer changed or could not represent exactly."""

    empty_masks_dropped: int = 0
    multipart_masks: int = 0  # VIA holds only the largest part of these
    images: list[tuple[str, int, int, int]] = field(default_factory=list)  # (file, width, height, books)


def overlay_names(files: Sequence[str]) -> list[str]:
    """Overlay path (relative to `overlays/`) per image: the file's relative path with suffix .jpg.

    Two inputs that differ only in their suffix (`a.png`, `a.jpg`) keep the full name (`a.png.jpg`).
    """
    stems = [str(Path(f).with_suffix("")) for f in files]
    seen: dict[str, int] = {}
    for stem in stems:
        seen[stem] = seen.get(stem, 0) + 1
    return [f"{stem}.jpg" if seen[stem] == 1 else f"{f}.jpg" for f, stem in zip(files, stems)]


def output_paths(out_dir: Path, files: Sequence[str]) -> list[Path]:
    """Every path a prediction over `files` writes into `out_dir`."""
    fixed = [out_dir / name for name in (COCO_RESULTS, COCO_IMAGES, COUNTS_CSV, VIA_PROJECT)]
    return fixed + [out_dir / OVERLAYS / name for name in overlay_names(files)]


def check_outputs_free(out_dir: Path, files: Sequence[str], overwrite: bool) -> None:
    """Raise FileExistsError naming existing outputs unless `overwrite`."""
    if overwrite:
        return
    existing = [p for p in output_paths(out_dir, files) if p.exists()]
    if existing:
        shown = ", ".join(str(p) for p in existing[:5])
        more = f" and {len(existing) - 5} more" if len(existing) > 5 else ""
        raise FileExistsError(
            f"{len(existing)} output file(s) exist already: {shown}{more}; pass --overwrite (overwrite=True) "
            "to replace them, or choose another output folder"
        )


def detection_polygon(mask: np.ndarray, roi) -> tuple[np.ndarray | None, int]:
    """Outline of one detection's mask: `via_writer.mask_to_polygon` of its largest part.

    Args:
        mask: bool [H, W], the detection's full-size mask.
        roi: its `detect` box (y1, x1, y2, x2) in pixels, y2/x2 exclusive.

    Returns:
        (polygon, parts): polygon float64 [P, 2] (x, y) in image pixels, pixel (col, row) spanning
        [col, col + 1) x [row, row + 1) (COCO / records.py convention), or None for an empty mask;
        parts = number of separate parts of the mask (only the largest is outlined).
    """
    from bookseg.data.via_writer import mask_to_polygon

    y1, x1, y2, x2 = (int(v) for v in roi)
    # The mask lies inside its box (unmold_detections pastes it there): outline the crop only.
    polygon, parts = mask_to_polygon(mask[y1:y2, x1:x2])
    if polygon is None:  # the whole mask is outside its box: outline the full mask
        return mask_to_polygon(mask)
    return polygon + np.array([x1, y1], np.float64), parts


class PredictionWriter:
    """Streams detections into the output folder; call `add` per image, then `close` (or `abort`).

    Args:
        out_dir: output folder (created).
        class_names: class id k is `class_names[k - 1]`.
        files: relative file name of every input image, in input order (image id = index + 1).
        overwrite: replace existing outputs.
    """

    def __init__(self, out_dir: Path, class_names: Sequence[str], files: Sequence[str], *, overwrite: bool):
        self.out_dir = Path(out_dir)
        self.class_names = list(class_names)
        self.files = list(files)
        self.overwrite = overwrite
        self.stats = WriteStats()
        self._overlays = overlay_names(self.files)
        self._coco_images: list[dict] = []
        self._via_records = []
        self._via_scores: dict[str, list[dict]] = {}
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._results_tmp = self.out_dir / f".{COCO_RESULTS}.tmp{os.getpid()}"
        # Both streams stay open across `add` calls and are closed by `close` / `abort`.
        self._results = open(self._results_tmp, "w", encoding="utf-8")  # noqa: SIM115
        self._results.write("[")
        self._first_result = True
        self._counts = open(self.out_dir / COUNTS_CSV, "w", newline="", encoding="utf-8")  # noqa: SIM115
        self._counts_csv = csv.writer(self._counts)
        self._counts_csv.writerow(["file", "width", "height", "books"])

    def add(self, index: int, path: Path, image: np.ndarray, result: dict) -> int:
        """Write image `index` (its `detect` result) to every output; returns the number of books written.

        Args:
            index: position of the image in `files` (image id = index + 1).
            path: the image file.
            image: uint8 [H, W, 3] RGB as predicted on.
            result: `MaskRCNN.detect` output for the image: rois int32 [n, 4] (y1, x1, y2, x2 px, y2/x2
                exclusive), class_ids int32 [n], scores float32 [n], masks bool [H, W, n].
        """
        from bookseg.data.viz import draw_instances, save_image
        from bookseg.evaluation.coco_eval import predictions_to_coco

        file = self.files[index]
        height, width = image.shape[:2]
        masks = result["masks"]
        if masks.shape[:2] != (height, width):
            raise ValueError(
                f"{path}: prediction masks are {masks.shape[:2]}, the image is {(height, width)}"
            )
        keep = np.flatnonzero(masks.reshape(-1, masks.shape[-1]).any(axis=0)) if masks.shape[-1] else []
        self.stats.empty_masks_dropped += masks.shape[-1] - len(keep)
        rois = np.asarray(result["rois"])[keep]
        class_ids = np.asarray(result["class_ids"])[keep]
        scores = np.asarray(result["scores"])[keep]
        if len(keep) != masks.shape[-1]:
            masks = masks[..., keep]

        labels = [self.class_names[c - 1] for c in class_ids] if len(self.class_names) > 1 else None
        overlay = draw_instances(image, masks, scores=scores, labels=labels)
        save_image(self.out_dir / OVERLAYS / self._overlays[index], overlay, overwrite=self.overwrite)
        del overlay

        image_id = index + 1
        for k in range(len(scores)):  # one instance at a time: never a second full copy of all masks
            one = {
                "rois": rois[k : k + 1],
                "class_ids": class_ids[k : k + 1],
                "scores": scores[k : k + 1],
                "masks": masks[..., k : k + 1],
            }
            for entry in predictions_to_coco([image_id], [one]):
                self._results.write(("" if self._first_result else ",") + json.dumps(entry))
                self._first_result = False
        self._coco_images.append(
            {"id": image_id, "file_name": file, "width": int(width), "height": int(height)}
        )

        self._via_records.append(self._via_record(file, path, width, height, rois, class_ids, masks))
        self._via_scores[file] = [{SCORE_ATTRIBUTE: f"{float(s):.4f}"} for s in scores]

        self._counts_csv.writerow([file, int(width), int(height), len(scores)])
        self._counts.flush()
        self.stats.images.append((file, int(width), int(height), len(scores)))
        return len(scores)

    def _via_record(self, file, path, width, height, rois, class_ids, masks):
        from bookseg.data.records import ImageRecord, Instance

        instances = []
        for k in range(len(class_ids)):
            polygon, parts = detection_polygon(masks[:, :, k], rois[k])
            self.stats.multipart_masks += parts > 1
            instances.append(
                Instance(
                    self.class_names[int(class_ids[k]) - 1], polygon=polygon, region=f"detection {k + 1}"
                )
            )
        return ImageRecord(
            image_id=file,
            path=Path(path).resolve(),
            width=int(width),
            height=int(height),
            instances=instances,
            source="bookseg predict",
        )

    def close(self) -> None:
        """Finish the COCO results and write images.json and the VIA project."""
        from bookseg.data.via_writer import write_via2_project
        from bookseg.evaluation.coco_eval import write_json

        self._results.write("]")
        self._results.close()
        self._counts.close()
        os.replace(self._results_tmp, self.out_dir / COCO_RESULTS)
        categories = [{"id": k + 1, "name": name} for k, name in enumerate(self.class_names)]
        write_json(
            self.out_dir / COCO_IMAGES,
            {
                "info": {"description": "images of bookseg predict; results in " + COCO_RESULTS},
                "images": self._coco_images,
                "annotations": [],
                "categories": categories,
            },
            overwrite=self.overwrite,
        )
        write_via2_project(
            self._via_records,
            self.out_dir / VIA_PROJECT,
            class_attribute=CLASS_ATTRIBUTE,
            project_name=VIA_PROJECT_NAME,
            region_attributes=self._via_scores,
            overwrite=self.overwrite,
        )

    def abort(self) -> None:
        """Close the streams after a failure; the partial COCO results are removed, counts.csv kept."""
        self._results.close()
        self._counts.close()
        self._results_tmp.unlink(missing_ok=True)
