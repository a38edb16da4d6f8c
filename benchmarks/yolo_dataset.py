"""Write one bookseg cross-validation fold as an Ultralytics (YOLO) segmentation data set.

Runs in the bookseg environment. The peer study trains Ultralytics YOLOv8n-seg (in its own venv,
`benchmarks/yolo_peer.py`) on exactly the images bookseg trained and validated a fold on:

    # the fold of a bookseg job: its folds.json (and, with no data overrides, its config.yaml's data section)
    python benchmarks/yolo_dataset.py --folds outputs/runs/<key>/attempt0/folds.json --fold 0 \
        --out /work/scratch/yolo/v5_fold0
    # the data config given as to `python -m bookseg.run` (Hydra overrides), folds made here
    python benchmarks/yolo_dataset.py data=coco data.path=../shared/data/bookshelf_v5/train/annotations.json \
        data.test.path=../shared/data/bookshelf_v5/valid/annotations.json \
        --fold 0 --out /work/scratch/yolo/v5_fold0

Data: the positional arguments are the `data.*` / `cv.*` overrides of `python -m bookseg.run` (`data=via`,
`data.path=...`, `'data.group_regex="^(.*)\\.rf\\."'`, `data.test.path=...`, `cv=k5`, ...); they are composed
into bookseg's config and read by bookseg's own code (`bookseg.experiment.data.load_data` /
`load_test_data`, i.e. `bookseg.data.readers.load_dataset` plus fold groups), so instances, clipping and
validation are exactly what bookseg trains on. Without overrides the data section of the `config.yaml` beside
`--folds` is used (every bookseg job writes one). Folds: `--folds` (a job's `folds.json`, see
`bookseg.data.folds.load_folds`; fold `--fold` is validation, the others training, as
`bookseg.data.folds.split`); without it the split is made here with `bookseg.data.folds.make_folds` and
the config's `cv.k`, `cv.seed` and `cv.stratify` (bookseg's defaults: k=3, seed 0), which gives the same
folds as a bookseg run of that config.

Output (`--out`, outside the repository):

    images/{train,val,test}/<name>   symlinks to the original photos (test only with data.test.path)
    labels/{train,val,test}/<stem>.txt
                                     one line per instance: `class x1 y1 x2 y2 ...`, class = bookseg class
                                     id - 1 (0 = first class), then the polygon's vertices normalised by the
                                     image size: x = pixel x / width, y = pixel y / height, in [0, 1] (10
                                     significant digits). bookseg polygons are pixel coordinates (x right,
                                     y down, origin at the image's top-left corner, the convention of
                                     bookseg/data/records.py), already clipped to the image by bookseg's
                                     validation; an empty file is a photo without books (a background image
                                     for Ultralytics).
    data.yaml                        Ultralytics data set file (path, train, val, [test], names)
    bookseg_split.json               manifest: the absolute data config, folds file, fold, class names and per
                                     split the images in bookseg's record order ({image_id, file, path, width,
                                     height, instances}); `yolo_peer.py predict` and `score_coco_results.py`
                                     read it
    folds.json                       only when the split was made here (bookseg's folds format)

Instances given as a mask (COCO RLE, COCO multi-polygon objects, LabelMe masks) become the outer polygon of
their largest connected part (OpenCV `findContours`, RETR_EXTERNAL): holes and smaller parts are dropped and
counted. Crowd regions (COCO `iscrowd`) are not written: bookseg never trains on them as positives and its
evaluation ignores them; YOLO has no crowd notion. The counts of both are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
MANIFEST = "bookseg_split.json"
SPLITS = ("train", "val", "test")
# Keys of `data` and `data.test` that hold paths (made absolute in the manifest).
_PATH_KEYS = ("path", "images_dir")


def compose_config(overrides: list[str]):
    """bookseg's composed config (`conf/config.yaml`) with Hydra `overrides`, as `python -m bookseg.run` has.

    The synthetic data's cache folder is resolved the way the runner resolves it (`$BOOKSEG_CACHE`, else
    `./.cache/bookseg` in the current folder), since no Hydra run is active here.
    """
    from omegaconf import OmegaConf

    from bookseg.inference.trained_model import default_config

    cfg = default_config(overrides)
    if OmegaConf.is_interpolation(cfg.data, "cache_dir"):
        cfg.data.cache_dir = os.environ.get("BOOKSEG_CACHE") or str(Path.cwd() / ".cache" / "bookseg")
    return cfg


def absolute_data_config(data) -> dict:
    """The `data` config section as a plain dict with every path made absolute (relative to the current
    folder, as the runner reads them: `hydra.job.chdir` is false)."""
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(data, resolve=True)

    def absolute(section: dict) -> None:
        for key in _PATH_KEYS:
            if section.get(key):
                section[key] = os.path.abspath(Path(section[key]).expanduser())

    absolute(plain)
    absolute(plain.get("test") or {})
    if plain.get("cache_dir"):
        plain["cache_dir"] = os.path.abspath(Path(plain["cache_dir"]).expanduser())
    return plain


def load_datasets(data: dict):
    """(training Dataset with fold groups set, test Dataset or None) of an absolute data config dict."""
    from omegaconf import OmegaConf

    from bookseg.experiment.data import load_data, load_test_data

    cfg = OmegaConf.create({"data": data})
    dataset = load_data(cfg)
    return dataset, load_test_data(cfg, dataset)


def mask_outer_polygon(mask: np.ndarray) -> tuple[np.ndarray | None, dict]:
    """Outer polygon of a bool [H, W] mask's largest connected part, in bookseg pixel coordinates.

    `cv2.findContours` traces the centres of the boundary pixels (pixel (row i, column j) at integer (j, i));
    bookseg puts pixel centres at (j + 0.5, i + 0.5), so the contour is shifted by +0.5 and rasterises back
    to that part under bookseg's pixel-centre rule (records.py). A part too thin to give a polygon with area
    (one pixel, one row or column) becomes its pixel-edge bounding rectangle.

    Returns:
        (float64 [P, 2] (x, y) or None for an empty mask, info {parts, pixels_dropped, holes, box_fallback}).
    """
    mask_u8 = np.ascontiguousarray(mask, dtype=np.uint8)
    info = {"parts": 0, "pixels_dropped": 0, "holes": False, "box_fallback": False}
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask_u8, connectivity=8)
    if count <= 1:
        return None, info
    areas = stats[1:, cv2.CC_STAT_AREA]
    largest = 1 + int(np.argmax(areas))
    info["parts"] = count - 1
    info["pixels_dropped"] = int(areas.sum() - areas[largest - 1])
    part = (labels == largest).astype(np.uint8)
    contours, _ = cv2.findContours(part, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    contour = max(contours, key=lambda c: (cv2.contourArea(c), len(c)))
    polygon = contour.reshape(-1, 2).astype(np.float64) + 0.5
    filled = cv2.drawContours(np.zeros_like(part), [contour], -1, 1, thickness=cv2.FILLED)
    info["holes"] = bool((filled & (1 - part)).any())
    if len(polygon) < 3 or cv2.contourArea(contour) <= 0:
        x, y = stats[largest, cv2.CC_STAT_LEFT], stats[largest, cv2.CC_STAT_TOP]
        w, h = stats[largest, cv2.CC_STAT_WIDTH], stats[largest, cv2.CC_STAT_HEIGHT]
        polygon = np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], np.float64)
        info["box_fallback"] = True
    return polygon, info


def yolo_line(class_index: int, polygon: np.ndarray, width: int, height: int) -> str:
    """`class x1 y1 x2 y2 ...` with (x, y) = pixel (x, y) / (width, height), clipped to [0, 1].

    10 significant digits: a vertex on a pixel centre (x.5) stays exactly there for the usual image sizes,
    so the label rasterises to bookseg's mask under bookseg's rule (6 decimals would move such edges).
    """
    normalised = np.clip(np.asarray(polygon, np.float64) / (float(width), float(height)), 0.0, 1.0)
    return " ".join([str(int(class_index)), *(f"{v:.10g}" for v in normalised.reshape(-1))])


def _link_names(records) -> list[str]:
    """File name of each record's symlink: the photo's own name, prefixed with its index when two photos of a
    split share a stem (Ultralytics finds a label by the image's stem)."""
    stems: dict[str, int] = {}
    for record in records:
        stem = Path(record.path).stem
        stems[stem] = stems.get(stem, 0) + 1
    return [
        Path(r.path).name if stems[Path(r.path).stem] == 1 else f"{i:05d}_{Path(r.path).name}"
        for i, r in enumerate(records)
    ]


def write_split(out: Path, split: str, records, class_names: list[str]) -> tuple[list[dict], dict]:
    """Write `images/<split>` symlinks and `labels/<split>` files; returns (manifest entries, counts)."""
    class_index = {name: k for k, name in enumerate(class_names)}
    image_dir, label_dir = out / "images" / split, out / "labels" / split
    image_dir.mkdir(parents=True)
    label_dir.mkdir(parents=True)
    counts = {
        "images": len(records),
        "images_without_books": 0,
        "instances": 0,
        "from_polygon": 0,
        "from_mask": 0,
        "mask_multipart": 0,
        "mask_pixels_dropped": 0,
        "mask_holes": 0,
        "mask_box_fallback": 0,
        "crowd_skipped": 0,
        "duplicates": 0,
    }
    entries = []
    for record, name in zip(records, _link_names(records)):
        os.symlink(Path(record.path).resolve(), image_dir / name)
        lines = []
        for inst in record.instances:
            if inst.iscrowd:
                counts["crowd_skipped"] += 1
                continue
            if inst.polygon is not None:
                polygon = inst.polygon
                counts["from_polygon"] += 1
            else:
                polygon, info = mask_outer_polygon(inst.mask)
                if polygon is None:
                    continue  # validation never keeps an empty mask; defensive
                counts["from_mask"] += 1
                counts["mask_multipart"] += info["parts"] > 1
                counts["mask_pixels_dropped"] += info["pixels_dropped"]
                counts["mask_holes"] += info["holes"]
                counts["mask_box_fallback"] += info["box_fallback"]
            lines.append(yolo_line(class_index[inst.class_name], polygon, record.width, record.height))
        (label_dir / (Path(name).stem + ".txt")).write_text("".join(line + "\n" for line in lines))
        counts["instances"] += len(lines)
        counts["duplicates"] += len(lines) - len(set(lines))
        counts["images_without_books"] += not lines
        entries.append(
            {
                "image_id": str(record.image_id),
                "file": name,
                "path": str(Path(record.path).resolve()),
                "width": int(record.width),
                "height": int(record.height),
                "instances": len(lines),
            }
        )
    return entries, counts


def data_yaml(out: Path, splits: list[str], class_names: list[str]) -> str:
    """Ultralytics data set YAML (strings JSON-quoted, which YAML reads as the same strings)."""
    lines = [
        "# Ultralytics segmentation data set written by bookseg benchmarks/yolo_dataset.py",
        f"path: {json.dumps(str(out))}",
    ]
    lines += [f"{split}: images/{split}" for split in splits]
    lines.append("names:")
    lines += [f"  {k}: {json.dumps(name)}" for k, name in enumerate(class_names)]
    return "\n".join(lines) + "\n"


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out == REPO or REPO in out.parents:
        sys.exit(
            f"--out {out} is inside the repository {REPO}; write data sets elsewhere (e.g. /work/scratch)"
        )
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            sys.exit(
                f"--out {out} is not empty; pass --overwrite to replace a data set written by this script"
            )
        if not (out / MANIFEST).exists():
            sys.exit(f"--out {out} holds no {MANIFEST}: not a data set of this script, not touched")
        for name in ("images", "labels"):
            if (out / name).exists():
                shutil.rmtree(out / name)
        for name in ("data.yaml", MANIFEST, "folds.json"):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def _config_beside(folds_path: Path):
    path = folds_path.parent / "config.yaml"
    if not path.is_file():
        return None
    from omegaconf import OmegaConf

    return OmegaConf.load(path)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Write one bookseg CV fold (plus the optional test set) as an Ultralytics segmentation "
        "data set: images/ symlinks, labels/ normalised polygons, data.yaml.",
        epilog="Example: python benchmarks/yolo_dataset.py data=coco "
        "data.path=../shared/data/bookshelf_v5/train/annotations.json "
        "data.test.path=../shared/data/bookshelf_v5/valid/annotations.json "
        "--folds outputs/runs/<key>/attempt0/folds.json --fold 0 --out /work/scratch/yolo/v5_fold0",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        help="bookseg config overrides as given to `python -m bookseg.run`, e.g. data=coco "
        "data.path=PATH data.test.path=PATH 'data.group_regex=\"^(.*)\\.rf\\.\"' (default: the "
        "data section of the config.yaml beside --folds, else bookseg's synthetic data)",
    )
    parser.add_argument(
        "--folds",
        type=Path,
        help="folds.json of a bookseg job (outputs/runs/<key>/attempt0/folds.json) or its folder; "
        "default: make the split here with make_folds and the config's cv.k / cv.seed",
    )
    parser.add_argument("--fold", type=int, default=0, help="validation fold index (default 0)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (outside the repository)")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace a data set this script wrote into --out before"
    )
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    from omegaconf import OmegaConf

    from bookseg.data.folds import load_folds, make_folds, save_folds, split

    out = args.out.expanduser().absolute()
    folds_path = None
    if args.folds is not None:
        folds_path = args.folds.expanduser().absolute()
        if folds_path.is_dir():
            folds_path = folds_path / "folds.json"
        if not folds_path.is_file():
            sys.exit(f"--folds: no such file {folds_path}")
    job_cfg = _config_beside(folds_path) if folds_path else None
    if args.overrides or job_cfg is None:
        cfg = compose_config(list(args.overrides))
        config_from = "overrides: " + " ".join(args.overrides) if args.overrides else "bookseg defaults"
    else:
        cfg = OmegaConf.merge(
            compose_config([]), {key: job_cfg[key] for key in ("data", "cv") if key in job_cfg}
        )
        config_from = f"data section of {folds_path.parent / 'config.yaml'}"
    data = absolute_data_config(cfg.data)
    if job_cfg is not None and args.overrides:
        job_data = absolute_data_config(job_cfg.data)
        differ = [
            k
            for k in ("kind", "path", "images_dir", "group_regex", "group_attribute")
            if job_data.get(k) != data.get(k)
        ]
        differ += [
            "test." + k for k in _PATH_KEYS if (job_data.get("test") or {}).get(k) != data["test"].get(k)
        ]
        if differ:
            print(
                "WARNING: the job's config.yaml beside --folds differs from the overrides in "
                + ", ".join(differ),
                file=sys.stderr,
            )

    _prepare_out(out, args.overwrite)
    dataset, test = load_datasets(data)
    print(
        f"data: {dataset.source} ({dataset.format}), {len(dataset.records)} images, "
        f"{dataset.num_instances} instances, classes {dataset.class_names}  [{config_from}]"
    )
    if test is not None:
        print(
            f"test: {test.source} ({test.format}), {len(test.records)} images, {test.num_instances} instances"
        )

    meta = {"fold": args.fold, "folds_made_here": folds_path is None}
    if folds_path is not None:
        folds_data = load_folds(folds_path)
        folds = folds_data["folds"]
        meta.update(
            folds_file=str(folds_path),
            k=folds_data["k"],
            seed=folds_data.get("seed"),
            group_by=folds_data.get("group_by"),
        )
        print(
            f"folds: {folds_path} (k={folds_data['k']}, seed={folds_data.get('seed')}, "
            f"groups by {folds_data.get('group_by')})"
        )
    else:
        k, seed, stratify = int(cfg.cv.k), int(cfg.cv.seed), bool(cfg.cv.stratify)
        folds = make_folds(dataset.records, k, seed=seed, stratify=stratify)
        group_by = data.get("group_regex") or data.get("group_attribute") or "image"
        save_folds(
            folds,
            out / "folds.json",
            {
                "k": k,
                "seed": seed,
                "group_by": group_by,
                "groups": {r.image_id: r.group for r in dataset.records},
            },
        )
        meta.update(folds_file=str(out / "folds.json"), k=k, seed=seed, group_by=group_by)
        print(
            f"folds: made here with bookseg.data.folds.make_folds (k={k}, seed={seed}, stratify={stratify}, "
            f"groups by {group_by}), the split a bookseg run of this config makes; "
            f"saved to {out / 'folds.json'}"
        )
    train, val = split(dataset.records, folds, args.fold)
    parts = {"train": train, "val": val}
    if test is not None:
        parts["test"] = test.records

    manifest_splits, all_counts = {}, {}
    for name, records in parts.items():
        manifest_splits[name], all_counts[name] = write_split(out, name, records, dataset.class_names)
    (out / "data.yaml").write_text(data_yaml(out, list(parts), dataset.class_names))
    manifest = {
        "written_by": "benchmarks/yolo_dataset.py",
        "coordinates": "labels: class, then x / width, y / height of bookseg's pixel polygon vertices",
        "data": data,
        "cv": OmegaConf.to_container(cfg.cv, resolve=True),
        **meta,
        "class_names": list(dataset.class_names),
        "splits": manifest_splits,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")

    print(f"fold {args.fold} of {meta['k']}: written to {out}")
    for name, c in all_counts.items():
        extra = ""
        if c["from_mask"]:
            extra += (
                f"; {c['from_mask']} from masks ({c['mask_multipart']} with several parts: "
                f"{c['mask_pixels_dropped']} px of smaller parts dropped; {c['mask_holes']} with holes "
                f"filled; {c['mask_box_fallback']} too thin, written as their box)"
            )
        if c["crowd_skipped"]:
            extra += f"; {c['crowd_skipped']} crowd regions not written"
        if c["duplicates"]:
            extra += (
                f"; {c['duplicates']} exact repeats of another instance of their image (kept, as bookseg "
                "keeps them; Ultralytics drops repeated label lines when it reads the set)"
            )
        print(
            f"split {name}: {c['images']} images ({c['images_without_books']} without books), "
            f"{c['instances']} instances{extra}"
        )
    print(f"data.yaml: {out / 'data.yaml'}")


if __name__ == "__main__":
    main()
