"""The PyTorch baseline of issue #6: torchvision's Mask R-CNN R50-FPN on the same workload.

    # in a separate venv (torch is not a bookseg dependency); the script imports bookseg's data code
    python -m venv /tmp/tv && /tmp/tv/bin/pip install torch==2.14.1 torchvision==0.29.1 \
        numpy pillow opencv-python-headless pycocotools pyyaml
    /tmp/tv/bin/python benchmarks/torchvision_baseline.py --what train      # images/s, input wait, peak RSS
    /tmp/tv/bin/python benchmarks/torchvision_baseline.py --what inference  # ms per image, peak RSS
    /tmp/tv/bin/python benchmarks/torchvision_baseline.py --quick           # 128 px, 2 steps: smoke test

Builds `maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=2)` with BENCH-<size>
settings: images kept at <size> px (min_size = max_size = size), 256 RPN anchors per image, 2000 / 1000
proposals after NMS (training / inference), 200 ROIs per image, at most 100 detections with score
threshold 0, batch 2, all layers trainable (torchvision trains every backbone stage when no
pretrained weights are given), SGD momentum 0.9 with global gradient-norm clipping at 5. The images
are the same seeded synthetic shelves as the bookseg scripts, fed by a `DataLoader` (random horizontal
flip, `--workers` processes); the wait in `next()` is timed apart from the step.

Differences to keep in mind: without pretrained weights torchvision uses ordinary BatchNorm (batch
statistics) where bookseg freezes BN (`norm="frozen_bn"`); torchvision's RPN keeps 2000 (training) /
1000 (inference) boxes per pyramid level before NMS, bookseg 6000 over all levels.
"""

from __future__ import annotations

import os
import statistics
import time

import common


def parse_args(argv=None):
    parser = common.base_parser(
        __doc__.splitlines()[0], default_steps=10, default_warmup=3, bookseg_model=False
    )
    parser.add_argument("--what", choices=("train", "inference", "both"), default="both")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader worker processes (training)")
    args = parser.parse_args(argv)
    common.resolve_counts(args)
    return args


def import_torch():
    try:
        import torch
        import torchvision
    except ImportError as error:
        raise SystemExit(
            f"torchvision_baseline.py needs torch and torchvision ({error}). Install the versions of the "
            "issue's figures in a separate venv: pip install torch==2.14.1 torchvision==0.29.1 numpy pillow "
            "opencv-python-headless pycocotools pyyaml (see this script's docstring)"
        ) from error
    return torch, torchvision


def build_model(size: int, quick: bool):
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    settings = {
        "min_size": size,
        "max_size": size,
        "rpn_batch_size_per_image": 64 if quick else 256,
        "rpn_post_nms_top_n_train": 200 if quick else 2000,
        "rpn_post_nms_top_n_test": 100 if quick else 1000,
        "box_batch_size_per_image": 32 if quick else 200,
        "box_detections_per_img": 40 if quick else 100,
        "box_score_thresh": 0.0,
    }
    return maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=2, **settings), settings


class ShelfDataset:
    """torch-style dataset of (image float [3, H, W] in 0..1, target dict) with a random flip."""

    def __init__(self, records):
        self.records = records

    def __len__(self):
        return len(self.records)

    def __getitem__(self, index):
        import numpy as np
        import torch

        from bookseg.data.images import load_image_rgb
        from bookseg.data.records import boxes_from_masks

        record = self.records[index]
        image, masks = load_image_rgb(record.path), record.masks()
        if torch.rand(()).item() < 0.5:  # torch's RNG: seeded per worker from torch.manual_seed
            image, masks = image[:, ::-1], masks[:, ::-1]
        boxes = boxes_from_masks(np.ascontiguousarray(masks))[:, [1, 0, 3, 2]]  # -> x1, y1, x2, y2
        target = {
            "boxes": torch.as_tensor(boxes, dtype=torch.float32),
            "labels": torch.ones(len(boxes), dtype=torch.int64),
            "masks": torch.as_tensor(np.ascontiguousarray(masks.transpose(2, 0, 1)), dtype=torch.uint8),
        }
        return torch.as_tensor(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255.0, target


def endless(loader):
    while True:
        yield from loader


def measure_training(torch, model, data, args) -> None:
    loader = torch.utils.data.DataLoader(
        ShelfDataset(data.records),
        batch_size=2,
        shuffle=True,
        num_workers=args.workers,
        collate_fn=lambda items: tuple(zip(*items)),
        persistent_workers=args.workers > 0,
    )
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    batches = endless(loader)
    waits, steps = common.Stopwatch(), common.Stopwatch()
    for index in range(args.warmup + args.steps):
        start = time.perf_counter()
        images, targets = next(batches)
        got = time.perf_counter()
        losses = model(list(images), list(targets))
        loss = sum(losses.values())
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        done = time.perf_counter()
        if index >= args.warmup:
            waits.times.append(got - start)
            steps.times.append(done - got)
    total = waits.total + steps.total
    common.print_figure("train_images_per_s", 2 * args.steps / total, "images/s")
    common.print_figure("train_step_s_mean", total / args.steps, "s", "input wait + step")
    common.print_figure("input_wait_share", waits.total / total, "", "time in next() / total step time")
    if not args.quick:
        reference = common.reference_gflops("train_per_step_2_images", common.image_side(args))
        common.print_figure("train_step_gflops_per_s_reference", reference * args.steps / total, "GFLOP/s")


def measure_inference(torch, model, data, args) -> None:
    from bookseg.data.images import load_image_rgb

    model.eval()
    images = [torch.as_tensor(load_image_rgb(r.path)).permute(2, 0, 1).float() / 255.0 for r in data.records]
    watch, counts = common.Stopwatch(), []
    with torch.inference_mode():
        for index in range(args.warmup + args.steps):
            start = time.perf_counter()
            output = model([images[index % len(images)]])[0]
            if index >= args.warmup:
                watch.times.append(time.perf_counter() - start)
                counts.append(len(output["scores"]))
        counted = None
        if not args.no_flops:
            from torch.utils.flop_counter import FlopCounterMode

            counter = FlopCounterMode(display=False)
            with counter:
                model([images[0]])
            counted = counter.get_total_flops() / 1e9
    common.print_figure("detect_ms_per_image_mean", 1000 * watch.mean, "ms", "model([image]) in eval mode")
    common.print_figure("detect_ms_per_image_median", 1000 * watch.median, "ms")
    common.print_figure("detections_per_image_mean", statistics.fmean(counts), "boxes")
    reference = (
        None if args.quick else common.reference_gflops("inference_per_image", common.image_side(args))
    )
    common.report_gflops_rate(
        "detect",
        watch.mean,
        counted,
        reference,
        "image",
        counted_by="torchvision model, torch.utils.flop_counter",
    )


def main(argv=None) -> None:
    args = parse_args(argv)
    torch, torchvision = import_torch()
    torch.manual_seed(args.seed)
    torch.set_num_threads(os.cpu_count() or 1)
    side = common.image_side(args)
    data = common.synthetic_set(args.images or 8, side, seed=args.seed)
    model, settings = build_model(side, args.quick)
    common.print_settings(
        "torchvision_baseline",
        {
            "workload": "quick smoke test (not a result)" if args.quick else f"BENCH-{args.size}",
            "image_px": f"{side}x{side}",
            "mean_books_per_image": f"{data.mean_instances:.1f}",
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "threads": torch.get_num_threads(),
            "model": "maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=2)",
            **{f"model.{name}": value for name, value in settings.items()},
            "optimizer": "SGD lr 0.001 momentum 0.9, clip_grad_norm_ 5",
            "batch": "2 (training), 1 (inference)",
            "warmup": args.warmup,
            "steps": args.steps,
            "workers": args.workers,
        },
    )
    if args.what in ("train", "both"):
        measure_training(torch, model, data, args)
    if args.what in ("inference", "both"):
        measure_inference(torch, model, data, args)
    common.print_figure("peak_rss_mib", common.peak_rss_mib(), "MiB", "getrusage ru_maxrss, this process")
    data.cleanup()


if __name__ == "__main__":
    main()
