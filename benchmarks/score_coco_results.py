"""Score COCO results JSON (any model's) with bookseg's own evaluation, on one split of a peer data set.

Runs in the bookseg environment:

    python benchmarks/score_coco_results.py --dataset /work/scratch/yolo/v5_fold0 --split val \
        /work/scratch/peer/v5_fold0/coco_last_val/predictions_coco.json

`--dataset` is a folder written by `benchmarks/yolo_dataset.py`; its `bookseg_split.json` holds the data
config and the images of each split. The ground truth is read again from the original annotations through
bookseg's readers (`load_data` / `load_test_data`), so it is exactly what a bookseg fold run evaluates, and
every image of the split is scored through `bookseg.evaluation.coco_eval.FoldEvaluator`, the code behind a
fold's `mask_ap50`, `box_ap`, ... (COCO AP with pycocotools: crowd regions ignored, maxDets 100, score
threshold none; plus the matterport-style mask AP@0.5). Both models scored this way are compared like for
like.

Results format: a JSON list of COCO results {image_id, category_id, score, segmentation, bbox}:
segmentation a compressed RLE (`counts` str or bytes), an uncompressed RLE or a polygon list, in the pixel
frame of the original image (x right, y down); bbox [x, y, w, h] in pixels (optional: without it the tight
box of the mask is used); category_id = bookseg class id (1 = first class). Image ids are resolved with
the COCO images skeleton beside the results (`images.json`, or `--images-json`): by its
`bookseg_image_id` (written by `yolo_peer.py`), else by `file_name` (the data set's image name, the
bookseg image id, or the photo's base name, e.g. `bookseg predict`'s images.json). Without a skeleton,
image id k is the k-th image of the split (the order of `bookseg_split.json`, which `yolo_peer.py` uses).
An image of the split without results counts as an image without detections.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from yolo_dataset import MANIFEST, load_datasets  # benchmarks/ is not a package: import by path

SHOWN = (("mask_ap50", "mask AP50"), ("mask_ap", "mask AP"), ("box_ap50", "box AP50"), ("box_ap", "box AP"))


def split_records(manifest: dict, split: str) -> list:
    """The split's `ImageRecord`s, read again through bookseg's readers, in the manifest's order."""
    if split not in manifest["splits"]:
        sys.exit(f"--split {split}: the data set has {sorted(manifest['splits'])}")
    dataset, test = load_datasets(manifest["data"])
    if list(dataset.class_names) != list(manifest["class_names"]):
        sys.exit(
            f"classes are now {dataset.class_names}, the data set was written with {manifest['class_names']}"
        )
    source = test if split == "test" else dataset
    if source is None:
        sys.exit("the manifest has a test split but its data config now reads no test set")
    by_id = {str(r.image_id): r for r in source.records}
    records = []
    for entry in manifest["splits"][split]:
        record = by_id.get(entry["image_id"])
        if record is None or (record.width, record.height) != (entry["width"], entry["height"]):
            sys.exit(
                f"image {entry['image_id']!r} of split {split} is missing or resized in {source.source}; "
                "the annotations changed since the data set was written: write it again"
            )
        records.append(record)
    return records


def image_id_map(skeleton: dict | None, manifest_entries: list[dict], records: list) -> dict[int, int]:
    """{results image id: index into `records`}."""
    if skeleton is None:
        return {k + 1: k for k in range(len(records))}
    by_key: dict[str, int] = {}
    basenames: dict[str, list[int]] = defaultdict(list)
    for index, (entry, record) in enumerate(zip(manifest_entries, records)):
        by_key[str(record.image_id)] = index
        by_key.setdefault(entry["file"], index)
        basenames[Path(record.path).name].append(index)
    mapping = {}
    for image in skeleton.get("images", []):
        key = image.get("bookseg_image_id")
        if key is not None and str(key) in by_key:
            index = by_key[str(key)]
        elif str(image.get("file_name")) in by_key:
            index = by_key[str(image["file_name"])]
        else:
            found = basenames.get(Path(str(image.get("file_name", ""))).name, [])
            if len(found) != 1:
                continue  # not an image of this split (or ambiguous); results on it are an error below
            index = found[0]
        mapping[int(image["id"])] = index
    return mapping


def decode(segmentation, height: int, width: int) -> np.ndarray:
    """bool [height, width] mask of a COCO segmentation (compressed / uncompressed RLE or polygons)."""
    from pycocotools import mask as mask_util

    if isinstance(segmentation, dict):
        rle = segmentation
        if isinstance(rle.get("counts"), list):
            rle = mask_util.frPyObjects(rle, height, width)
        if tuple(rle["size"]) != (height, width):
            raise ValueError(f"RLE of size {rle['size']} for a {height}x{width} image")
    else:
        rle = mask_util.merge(mask_util.frPyObjects(segmentation, height, width))
    return mask_util.decode(rle).astype(bool)


def prediction(record, results: list[dict], num_classes: int) -> dict:
    """`detect`-style prediction dict (coco_eval's module docstring) of one image's results, best first."""
    results = sorted(results, key=lambda r: -float(r["score"]))
    n = len(results)
    masks = np.zeros((record.height, record.width, n), bool)
    rois = np.zeros((n, 4), np.float64)
    for k, result in enumerate(results):
        category = int(result["category_id"])
        if not 1 <= category <= num_classes:
            raise ValueError(f"{record.where()}: category_id {category} outside 1..{num_classes}")
        masks[..., k] = decode(result["segmentation"], record.height, record.width)
        if result.get("bbox") is not None:
            x, y, w, h = (float(v) for v in result["bbox"])
            rois[k] = (y, x, y + h, x + w)
        elif masks[..., k].any():
            ys, xs = np.nonzero(masks[..., k])
            rois[k] = (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1)
    return {
        "rois": rois,
        "class_ids": np.array([int(r["category_id"]) for r in results], np.int32),
        "scores": np.array([float(r["score"]) for r in results], np.float32),
        "masks": masks,
    }


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Score a COCO results JSON on one split of a benchmarks/yolo_dataset.py data set with "
        "bookseg's evaluation (FoldEvaluator: COCO mask/box AP, matterport mask AP@0.5)."
    )
    parser.add_argument(
        "results", type=Path, help="COCO results JSON (e.g. yolo_peer.py's predictions_coco.json)"
    )
    parser.add_argument(
        "--dataset",
        type=Path,
        required=True,
        help="data set folder written by benchmarks/yolo_dataset.py (holds bookseg_split.json)",
    )
    parser.add_argument(
        "--split", default="val", choices=["train", "val", "test"], help="split (default val)"
    )
    parser.add_argument(
        "--images-json",
        type=Path,
        help="COCO images skeleton the results' image ids refer to (default: images.json beside "
        "the results, if any; else ids are 1..N in the split's order)",
    )
    parser.add_argument(
        "--max-detections",
        type=int,
        default=100,
        help="detections kept per image (COCO maxDets, default 100 as bookseg's fold runs)",
    )
    parser.add_argument(
        "--label", help="name of the model in the printed table row (default: results' folder)"
    )
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    from bookseg.evaluation.coco_eval import FoldEvaluator

    manifest_path = args.dataset.expanduser() / MANIFEST
    if not manifest_path.is_file():
        sys.exit(f"--dataset: no {MANIFEST} in {args.dataset} (write it with benchmarks/yolo_dataset.py)")
    manifest = json.loads(manifest_path.read_text())
    records = split_records(manifest, args.split)
    images_json = args.images_json or (args.results.parent / "images.json")
    skeleton = json.loads(images_json.read_text()) if images_json.is_file() else None
    if args.images_json and skeleton is None:
        sys.exit(f"--images-json: no such file {args.images_json}")
    mapping = image_id_map(skeleton, manifest["splits"][args.split], records)
    results = json.loads(args.results.read_text())
    per_image: dict[int, list[dict]] = defaultdict(list)
    unknown = set()
    for result in results:
        index = mapping.get(int(result["image_id"]))
        if index is None:
            unknown.add(int(result["image_id"]))
        else:
            per_image[index].append(result)
    if unknown:
        sys.exit(
            f"{len(unknown)} image ids of the results are not images of split {args.split}, e.g. "
            f"{sorted(unknown)[:5]} (ids resolved with {images_json if skeleton else 'the split order'})"
        )

    class_names = manifest["class_names"]
    evaluator = FoldEvaluator(class_names, max_detections=args.max_detections)
    for index, record in enumerate(records):
        evaluator.add(record, prediction(record, per_image.get(index, []), len(class_names)))
    metrics = evaluator.metrics()

    label = args.label or args.results.parent.name
    print(f"setting results: {args.results}")
    print(f"setting image_ids: {'resolved with ' + str(images_json) if skeleton else '1..N in split order'}")
    print(
        f"setting split: {args.split} ({len(records)} images, {sum(len(r.instances) for r in records)} "
        f"instances; fold {manifest.get('fold')} of {manifest.get('k')}, data {manifest['data'].get('path')})"
    )
    print(f"setting detections: {len(results)} ({len(per_image)} images with at least one)")
    what = {
        "mask_ap": "COCO mask AP@[.5:.95]",
        "mask_ap50": "COCO mask AP@0.5",
        "mask_ap75": "COCO mask AP@0.75",
        "box_ap": "COCO box AP@[.5:.95]",
        "box_ap50": "COCO box AP@0.5",
        "box_ap75": "COCO box AP@0.75",
        "mask_ap50_matterport": "mean per-image mask AP@0.5, matterport style",
    }
    for key, text in what.items():
        value = float(metrics[key])
        print(f"figure {key}: {'nan' if math.isnan(value) else f'{value:.4f}'}  ({text}, bookseg evaluation)")
    print()
    print("| model | split | " + " | ".join(name for _, name in SHOWN) + " |")
    print("|---|---|" + "---|" * len(SHOWN))
    print(f"| {label} | {args.split} | " + " | ".join(f"{float(metrics[k]):.3f}" for k, _ in SHOWN) + " |")


if __name__ == "__main__":
    main()
