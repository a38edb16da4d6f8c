"""Peer: Ultralytics YOLOv8n-seg trained from scratch on a bookseg fold, for the same wall time.

Runs ONLY in its own virtual environment (Ultralytics is AGPL-3.0: it is never a bookseg dependency and
none of its code is in this repository; this script only calls it):

    python -m venv /path/yolo-venv && /path/yolo-venv/bin/pip install torch==2.14.1 torchvision==0.29.1 \
        ultralytics pycocotools
    # data set of one fold, written in the bookseg env by benchmarks/yolo_dataset.py
    /path/yolo-venv/bin/python benchmarks/yolo_peer.py train --data /work/scratch/yolo/v5_fold0 \
        --out /work/scratch/peer/v5_fold0 --hours 0.5
    /path/yolo-venv/bin/python benchmarks/yolo_peer.py predict --data /work/scratch/yolo/v5_fold0 \
        --weights /work/scratch/peer/v5_fold0/train/weights/last.pt --split test \
        --out /work/scratch/peer/v5_pred

`train` builds `yolov8n-seg.yaml` (architecture only, random init, `pretrained=False`: no weights are
loaded or downloaded), trains it on `images/train` of the data set with a wall-time budget (`--hours`,
Ultralytics' `time` argument: it re-plans the epochs and the learning-rate schedule after each epoch to
end on time, per-epoch validation included) or a number of epochs, then validates last.pt (and best.pt)
on `val` and on `test` when the data set has one, and prints box and mask mAP50 / mAP50-95 per weights
and split as `figure` lines and as a markdown table, with the training wall time and epochs done. Unless
`--no-coco`, it also writes each evaluated model's predictions on val / test as COCO results (see
`predict`), to score with bookseg's own evaluation:

    python benchmarks/score_coco_results.py --dataset /work/scratch/yolo/v5_fold0 --split val \
        /work/scratch/peer/v5_fold0/coco_last_val/predictions_coco.json

`predict` writes, for one weights file and split, `predictions_coco.json` (COCO results: one dict per
detection {image_id, category_id, bbox [x, y, w, h], score, segmentation: compressed RLE with `counts` a
str}) and `images.json` (COCO skeleton: images {id, file_name, width, height, bookseg_image_id} and
categories {id, name}); image ids are 1..N in the split's record order (`bookseg_split.json`), category id =
YOLO class + 1 = bookseg class id. Boxes and masks are in original-image pixels (x right, y down, origin at
the image's top-left corner; masks from `retina_masks=True`, i.e. computed at the photo's own size).

Caveats: Ultralytics' own mAP (printed by `train`) uses its own matching, 101-point interpolation, masks
at the network's input resolution and best-of-IoU assignment; it is not bookseg's COCO AP. best.pt is
chosen by Ultralytics on `val` (fitness = 0.9 mAP50-95 + 0.1 mAP50 of box and mask), so best.pt's val
figures are optimistic; last.pt is what bookseg reports (its final weights). Like-for-like numbers:
score_coco_results.py on the COCO results of last.pt.

Offline: before Ultralytics is imported the script sets YOLO_OFFLINE=1 (no online checks, no analytics),
YOLO_AUTOINSTALL=0 (no pip installs) and YOLO_CONFIG_DIR=<out>/ultralytics_config (a private settings file
with sync, Platform and every logger integration off and datasets/weights/runs dirs inside --out); a
matplotlib DejaVu font is linked there as Arial.ttf so Ultralytics' font check finds a local file instead
of downloading one (it only draws plot labels; plots are off).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MANIFEST = "bookseg_split.json"
METRIC_NAMES = (
    ("box_map50", "box mAP50"),
    ("box_map50_95", "box mAP50-95"),
    ("mask_map50", "mask mAP50"),
    ("mask_map50_95", "mask mAP50-95"),
)


def setting(name: str, value) -> None:
    print(f"setting {name}: {value}", flush=True)


def figure(name: str, value, unit: str = "", what: str = "") -> None:
    text = f"{value:.4f}" if isinstance(value, float) else str(value)
    print(f"figure {name}: {text}{' ' + unit if unit else ''}{f'  ({what})' if what else ''}", flush=True)


def offline_ultralytics(out: Path):
    """Import Ultralytics configured to work offline with its settings inside `out`; returns the module.

    Must run before anything imports ultralytics (its settings and online check are read at import).
    """
    if "ultralytics" in sys.modules:
        raise RuntimeError("offline_ultralytics() must run before ultralytics is imported")
    config_dir = out / "ultralytics_config"
    config_dir.mkdir(parents=True, exist_ok=True)
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_AUTOINSTALL"] = "0"
    os.environ["YOLO_CONFIG_DIR"] = str(config_dir)
    import matplotlib

    # Ultralytics looks for Arial in its config folder and downloads it when missing; a local font
    # (matplotlib ships DejaVu) under that name ends the search. Used only to write plot labels.
    sub_dir = config_dir / "Ultralytics"
    sub_dir.mkdir(exist_ok=True)
    dejavu = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        if dejavu.is_file() and not (sub_dir / name).exists():
            (sub_dir / name).symlink_to(dejavu)

    import ultralytics
    from ultralytics.utils import SETTINGS

    SETTINGS.update(
        {
            "sync": False,
            "api_key": "",
            "clearml": False,
            "comet": False,
            "dvc": False,
            "mlflow": False,
            "raytune": False,
            "tensorboard": False,
            "wandb": False,
            "vscode_msg": False,
            "openvino_msg": False,
            "datasets_dir": str(out / "datasets"),
            "weights_dir": str(out / "weights"),
            "runs_dir": str(out / "runs"),
        }
    )
    return ultralytics


def resolve_data(path: Path) -> tuple[Path, Path, dict | None]:
    """(data set folder, its data.yaml, its bookseg_split.json or None) of --data (a folder or a yaml)."""
    path = path.expanduser().absolute()
    yaml_path = path / "data.yaml" if path.is_dir() else path
    if not yaml_path.is_file():
        sys.exit(f"--data: no data.yaml at {yaml_path} (write one with benchmarks/yolo_dataset.py)")
    manifest_path = yaml_path.parent / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else None
    return yaml_path.parent, yaml_path, manifest


def data_splits(yaml_path: Path) -> list[str]:
    """Split keys among train / val / test that the data.yaml names."""
    keys = [line.split(":", 1)[0].strip() for line in yaml_path.read_text().splitlines() if ":" in line]
    return [s for s in ("train", "val", "test") if s in keys]


def check_out(out: Path) -> Path:
    out = out.expanduser().absolute()
    if out == REPO or REPO in out.parents:
        sys.exit(f"--out {out} is inside the repository {REPO}; write runs elsewhere (e.g. /work/scratch)")
    out.mkdir(parents=True, exist_ok=True)
    return out


def metrics_of(result) -> dict:
    """Box and mask mAP50 / mAP50-95 of an Ultralytics SegmentMetrics."""
    return {
        "box_map50": float(result.box.map50),
        "box_map50_95": float(result.box.map),
        "mask_map50": float(result.seg.map50),
        "mask_map50_95": float(result.seg.map),
    }


def validate(YOLO, weights: Path, yaml_path: Path, split: str, args, out: Path, tag: str) -> dict:
    """Ultralytics validation of `weights` on `split`; prints and returns its metrics."""
    model = YOLO(str(weights))
    result = model.val(
        data=str(yaml_path),
        split=split,
        imgsz=args.imgsz,
        batch=args.batch,
        device=args.device,
        workers=args.workers,
        max_det=args.max_det,
        plots=False,
        project=str(out),
        name=f"val_{tag}_{split}",
        exist_ok=True,
        verbose=False,
    )
    metrics = metrics_of(result)
    for key, label in METRIC_NAMES:
        figure(f"{split}_{tag}_{key}", metrics[key], what=f"Ultralytics {label}, {tag}.pt on {split}")
    return metrics


def write_coco_predictions(
    YOLO,
    weights: Path,
    data_dir: Path,
    manifest: dict,
    split: str,
    out_dir: Path,
    *,
    imgsz: int,
    max_det: int,
    conf: float,
    device: str,
) -> tuple[Path, float]:
    """Predict every image of `split` and write COCO results plus the images skeleton they refer to.

    Image id k (1-based) is the k-th image of the split in bookseg's record order (the manifest's list); the
    category id is YOLO class + 1 (bookseg's class id). Boxes: `bbox` [x, y, w, h] in original pixels
    from Ultralytics' xyxy; masks: `retina_masks=True` (full-size masks, thresholded as Ultralytics does),
    one compressed RLE each (pycocotools, `counts` decoded to str). All detections down to `conf` are kept,
    at most `max_det` per image (bookseg evaluates with score threshold 0 and COCO's 100).

    Returns:
        (folder written, mean prediction time per image in ms).
    """
    import numpy as np

    try:
        from pycocotools import mask as mask_util
    except ImportError:
        sys.exit("pycocotools is needed for COCO results: <yolo-venv>/bin/pip install pycocotools")
    entries = manifest["splits"][split]
    class_names = manifest["class_names"]
    out_dir.mkdir(parents=True, exist_ok=True)
    model = YOLO(str(weights))
    images, results, seconds = [], [], 0.0
    for image_id, entry in enumerate(entries, start=1):
        path = data_dir / "images" / split / entry["file"]
        start = time.perf_counter()
        (r,) = model.predict(
            source=str(path),
            imgsz=imgsz,
            conf=conf,
            max_det=max_det,
            retina_masks=True,
            device=device,
            verbose=False,
            save=False,
        )
        seconds += time.perf_counter() - start
        height, width = (int(v) for v in r.orig_shape)
        if (width, height) != (entry["width"], entry["height"]):
            raise ValueError(
                f"{path}: Ultralytics read it as {width}x{height}, bookseg as "
                f"{entry['width']}x{entry['height']} (EXIF orientation?)"
            )
        images.append(
            {
                "id": image_id,
                "file_name": entry["file"],
                "width": width,
                "height": height,
                "bookseg_image_id": entry["image_id"],
            }
        )
        if r.boxes is None or len(r.boxes) == 0:
            continue
        boxes = r.boxes.xyxy.cpu().numpy().astype(float)
        scores = r.boxes.conf.cpu().numpy().astype(float)
        classes = r.boxes.cls.cpu().numpy().astype(int)
        masks = r.masks.data.cpu().numpy() > 0.5  # [n, H, W]
        if masks.shape[1:] != (height, width):
            raise ValueError(f"{path}: masks are {masks.shape[1:]}, the image {(height, width)}")
        for k in range(len(boxes)):
            rle = mask_util.encode(np.asfortranarray(masks[k, :, :, None].astype(np.uint8)))[0]
            x1, y1, x2, y2 = boxes[k]
            results.append(
                {
                    "image_id": image_id,
                    "category_id": int(classes[k]) + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": float(scores[k]),
                    "segmentation": {
                        "size": [int(s) for s in rle["size"]],
                        "counts": rle["counts"].decode("ascii"),
                    },
                }
            )
    skeleton = {
        "info": {
            "description": f"{split} images of {data_dir} for {weights}; results in predictions_coco.json"
        },
        "images": images,
        "annotations": [],
        "categories": [{"id": k + 1, "name": name} for k, name in enumerate(class_names)],
    }
    (out_dir / "images.json").write_text(json.dumps(skeleton))
    (out_dir / "predictions_coco.json").write_text(json.dumps(results))
    print(
        f"COCO results: {len(results)} detections on {len(images)} {split} images -> "
        f"{out_dir / 'predictions_coco.json'}",
        flush=True,
    )
    return out_dir, 1000.0 * seconds / max(len(entries), 1)


def markdown_table(rows: list[tuple[str, str, dict]]) -> str:
    header = "| weights | split | " + " | ".join(label for _, label in METRIC_NAMES) + " |"
    lines = [header, "|" + "---|" * (2 + len(METRIC_NAMES))]
    for tag, split, metrics in rows:
        lines.append(
            f"| {tag}.pt | {split} | " + " | ".join(f"{metrics[k]:.3f}" for k, _ in METRIC_NAMES) + " |"
        )
    return "\n".join(lines)


def cmd_train(args) -> None:
    out = check_out(args.out)
    data_dir, yaml_path, manifest = resolve_data(args.data)
    run_dir = out / "train"
    if run_dir.exists() and not args.overwrite:
        sys.exit(f"{run_dir} exists; pass --overwrite to train again into it, or choose another --out")
    if not args.model.endswith((".yaml", ".yml")):
        sys.exit(f"--model {args.model}: give a model YAML (architecture only); weights files are not used")
    ultralytics = offline_ultralytics(out)
    from ultralytics import YOLO

    splits = data_splits(yaml_path)
    setting("ultralytics", ultralytics.__version__)
    setting("model", f"{args.model} (architecture only, random init, pretrained=False)")
    setting("data", yaml_path)
    if manifest:
        setting("fold", f"{manifest.get('fold')} of {manifest.get('k')} (folds {manifest.get('folds_file')})")
        for split in splits:
            entries = manifest["splits"].get(split, [])
            setting(f"{split}_images", f"{len(entries)} ({sum(e['instances'] for e in entries)} instances)")
    setting("budget", f"{args.hours} h" if args.hours else f"{args.epochs} epochs")
    for name in ("imgsz", "batch", "device", "seed", "max_det"):
        setting(name, getattr(args, name))
    setting(
        "workers",
        f"{args.workers} for validation; Ultralytics trains on a CPU with 0 (main process) whatever is asked"
        if args.device == "cpu"
        else args.workers,
    )
    setting("val_every_epoch", not args.no_epoch_val)

    model = YOLO(args.model, task="segment")
    train_args = {
        "data": str(yaml_path),
        "imgsz": args.imgsz,
        "batch": args.batch,
        "workers": args.workers,
        "device": args.device,
        "seed": args.seed,
        "deterministic": True,
        "pretrained": False,
        "plots": False,
        "project": str(out),
        "name": "train",
        "exist_ok": True,
        "val": not args.no_epoch_val,
        "cache": args.cache if args.cache else False,
        "max_det": args.max_det,
        "verbose": True,
    }
    if args.hours:
        train_args["time"] = args.hours
    else:
        train_args["epochs"] = args.epochs
    call_start = time.time()
    model.train(**train_args)
    call_seconds = time.time() - call_start
    trainer = model.trainer
    # The window of Ultralytics' time budget: training start to the end of the last epoch (its validation
    # included), without data set scanning, model building before it and the final best.pt validation after.
    train_seconds = trainer.epoch_time_start - trainer.train_time_start
    epochs_done = trainer.epoch - trainer.start_epoch + 1
    weights_dir = Path(trainer.save_dir) / "weights"

    print()
    figure(
        "train_wall_s",
        round(train_seconds, 1),
        "s",
        "training loop, per-epoch validation included: the window --hours budgets",
    )
    figure(
        "train_call_wall_s", round(call_seconds, 1), "s", "whole model.train() call incl. setup and final val"
    )
    figure(
        "epochs_done", epochs_done, what="epochs trained" + (f" within {args.hours} h" if args.hours else "")
    )
    tags = ["last", "best"] if args.eval_weights == "both" else [args.eval_weights]
    rows, coco_dirs = [], []
    for tag in tags:
        weights = weights_dir / f"{tag}.pt"
        if not weights.is_file():
            print(f"no {weights}: skipped", flush=True)
            continue
        for split in [s for s in splits if s != "train"]:
            rows.append((tag, split, validate(YOLO, weights, yaml_path, split, args, out, tag)))
            if not args.no_coco and manifest:
                folder, ms = write_coco_predictions(
                    YOLO,
                    weights,
                    data_dir,
                    manifest,
                    split,
                    out / f"coco_{tag}_{split}",
                    imgsz=args.imgsz,
                    max_det=args.max_det,
                    conf=args.conf,
                    device=args.device,
                )
                figure(
                    f"{split}_{tag}_predict_ms_per_image", round(ms, 1), "ms", "model.predict, retina masks"
                )
                coco_dirs.append((split, folder))
    print("\nUltralytics metrics (its own matching and interpolation; not bookseg's COCO AP):")
    print(markdown_table(rows))
    print(
        f"\ntraining: {train_seconds / 3600:.3f} h ({train_seconds:.0f} s), {epochs_done} epochs, "
        f"imgsz {args.imgsz}, batch {args.batch}; weights in {weights_dir}"
    )
    if coco_dirs:
        print("\nScore with bookseg's COCO evaluation (in the bookseg env):")
        for split, folder in coco_dirs:
            print(
                f"  python benchmarks/score_coco_results.py --dataset {data_dir} --split {split} "
                f"{folder / 'predictions_coco.json'}"
            )
    elif not manifest:
        print(f"(no {MANIFEST} beside data.yaml: COCO results skipped)")


def cmd_predict(args) -> None:
    out = check_out(args.out)
    data_dir, yaml_path, manifest = resolve_data(args.data)
    if manifest is None:
        sys.exit(
            f"--data: no {MANIFEST} beside {yaml_path} (write the data set with benchmarks/yolo_dataset.py)"
        )
    if args.split not in manifest["splits"]:
        sys.exit(f"--split {args.split}: the data set has {sorted(manifest['splits'])}")
    offline_ultralytics(out)
    from ultralytics import YOLO

    weights = args.weights.expanduser().absolute()
    folder, ms = write_coco_predictions(
        YOLO,
        weights,
        data_dir,
        manifest,
        args.split,
        out,
        imgsz=args.imgsz,
        max_det=args.max_det,
        conf=args.conf,
        device=args.device,
    )
    figure(f"{args.split}_predict_ms_per_image", round(ms, 1), "ms", "model.predict, retina masks")
    print(
        f"score: python benchmarks/score_coco_results.py --dataset {data_dir} --split {args.split} "
        f"{folder / 'predictions_coco.json'}"
    )


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Ultralytics YOLOv8n-seg from scratch on a bookseg fold (run in the separate yolo venv). "
        "Data sets come from benchmarks/yolo_dataset.py."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument(
            "--data",
            type=Path,
            required=True,
            help="data set folder written by benchmarks/yolo_dataset.py (or its data.yaml)",
        )
        p.add_argument("--out", type=Path, required=True, help="output folder (outside the repository)")
        p.add_argument("--imgsz", type=int, default=512, help="network input size in px (default 512)")
        p.add_argument("--device", default="cpu", help="torch device (default cpu)")
        p.add_argument(
            "--max-det",
            type=int,
            default=100,
            help="detections kept per image in validation and predictions (default 100, COCO's maxDets)",
        )
        p.add_argument(
            "--conf",
            type=float,
            default=0.001,
            help="score threshold of the COCO predictions (default 0.001, Ultralytics' val default)",
        )

    train = sub.add_parser(
        "train",
        help="train from scratch, validate, write COCO predictions",
        description="Train yolov8n-seg from scratch within a time or epoch budget, validate "
        "last.pt / best.pt on val and test, print metrics, write COCO results.",
    )
    common(train)
    budget = train.add_mutually_exclusive_group(required=True)
    budget.add_argument(
        "--hours",
        type=float,
        help="wall-time budget in hours (Ultralytics `time`; e.g. bookseg's fold training time)",
    )
    budget.add_argument("--epochs", type=int, help="train this many epochs instead of a time budget")
    train.add_argument(
        "--model",
        default="yolov8n-seg.yaml",
        help="Ultralytics model YAML, built with random weights (default yolov8n-seg.yaml)",
    )
    train.add_argument("--batch", type=int, default=8, help="batch size (default 8)")
    train.add_argument(
        "--workers",
        type=int,
        default=2,
        help="data loader workers (default 2; Ultralytics 8.4 uses 0 when training on a CPU)",
    )
    train.add_argument("--seed", type=int, default=0, help="random seed (default 0; deterministic=True)")
    train.add_argument(
        "--cache",
        choices=["ram", "disk"],
        default=None,
        help="cache decoded images (default: read from disk every time, as bookseg does)",
    )
    train.add_argument(
        "--no-epoch-val",
        action="store_true",
        help="validate only after the last epoch (Ultralytics val=False); default: every epoch",
    )
    train.add_argument(
        "--eval-weights",
        choices=["last", "best", "both"],
        default="both",
        help="weights to validate and predict with (default both; last.pt is the comparable one)",
    )
    train.add_argument("--no-coco", action="store_true", help="do not write COCO results of val / test")
    train.add_argument("--overwrite", action="store_true", help="train again into an existing <out>/train")
    train.set_defaults(func=cmd_train)

    predict = sub.add_parser(
        "predict",
        help="write COCO results of a weights file on one split",
        description="Predict a split of the data set and write predictions_coco.json and "
        "images.json into --out (score them with benchmarks/score_coco_results.py).",
    )
    common(predict)
    predict.add_argument(
        "--weights", type=Path, required=True, help="a .pt file, e.g. <train out>/train/weights/last.pt"
    )
    predict.add_argument(
        "--split", default="val", choices=["train", "val", "test"], help="split (default val)"
    )
    predict.set_defaults(func=cmd_predict)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
