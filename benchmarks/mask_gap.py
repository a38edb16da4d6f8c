"""Where a fold model's masks fall behind its boxes, by how much of its box each book fills.

Loads one fold model of an experiment job from MLflow, detects books in that fold's validation
images (the job's own data settings and folds), pairs each annotated book with its best-box
detection (`bookseg.analysis.mask_gap`) and prints a markdown table per fill band. Thin tilted
books fill a small part of their box; upright ones nearly all of it.

    python benchmarks/mask_gap.py --run <parent run id> --fold 0 [--tracking-uri sqlite:///mlflow.db]
"""

from __future__ import annotations

import argparse

import numpy as np

from bookseg.analysis.mask_gap import MaskGap, match_books
from bookseg.data.folds import make_folds, split
from bookseg.data.images import load_image_rgb
from bookseg.experiment.data import load_data
from bookseg.inference.trained_model import load_from_run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="parent (job) run id or a fold's child run id")
    parser.add_argument(
        "--fold", type=int, required=True, help="fold whose model and validation images to use"
    )
    parser.add_argument(
        "--tracking-uri", default=None, help="MLflow store (default: MLFLOW_TRACKING_URI or ./mlflow.db)"
    )
    parser.add_argument("--min-confidence", type=float, default=0.3, help="detections kept (default 0.3)")
    args = parser.parse_args(argv)

    trained = load_from_run(args.run, fold=args.fold, tracking_uri=args.tracking_uri)
    cfg = trained.cfg
    dataset = load_data(cfg)
    folds = make_folds(dataset.records, cfg.cv.k, seed=cfg.cv.seed, stratify=cfg.cv.stratify)
    _, validation = split(dataset.records, folds, args.fold)
    gap = MaskGap()
    for record in validation:
        detection = trained.model.detect([load_image_rgb(record.path)], min_confidence=args.min_confidence)[0]
        gap = gap.extend(match_books(record.masks(), detection["rois"], detection["masks"]))
    found_box = np.mean(gap.box_iou >= 0.5)
    found_mask = np.mean(gap.mask_iou >= 0.5)
    print(f"{trained.source}: {len(validation)} validation images, {len(gap.fill)} books")
    print(f"box found {found_box:.3f}, mask found by the same detection {found_mask:.3f} (IoU >= 0.5)\n")
    print(gap.table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
