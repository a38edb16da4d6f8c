"""Input pipeline alone on BENCH-512 / BENCH-1024 (issue #6): can it keep up with training?

    python benchmarks/input_pipeline.py                   # 2 warm-up + 10 timed batches, augmentation "heavy"
    python benchmarks/input_pipeline.py --augmentation hflip --size 1024
    python benchmarks/input_pipeline.py --quick           # 128 px, 2 batches: smoke test only

Two measurements, no model:
1. Per-stage cost of building one training example, single-threaded, in the order
   `bookseg.mrcnn.inputs.load_training_example` runs them: image load (PNG decode), mask
   rasterisation (polygons -> bool masks), augmentation, resize + pad (image and masks), boxes and
   mini masks, RPN targets; plus the whole `load_training_example` call for comparison.
2. Examples/s of `make_dataset` (parallel map over all cores, prefetch), with and without the
   augmentation, after warm-up batches.

The pipeline keeps up when its examples/s is well above the training images/s it must feed (given
by --needed-images-per-s); during training it shares the cores with the model, so the real margin
is smaller: `train_throughput.py` measures the wait inside training.
"""

from __future__ import annotations

import time

import common

STAGES = ("image_load", "mask_rasterise", "augmentation", "resize_pad", "boxes_mini_masks", "rpn_targets")


def parse_args(argv=None):
    parser = common.base_parser(__doc__.splitlines()[0], default_steps=10, default_warmup=2)
    parser.add_argument(
        "--augmentation",
        default="heavy",
        help="preset in conf/augmentation (default heavy, the costliest; 'none' = off)",
    )
    parser.add_argument(
        "--needed-images-per-s",
        type=float,
        default=1.25 * common.TORCHVISION_TARGETS["train_images_per_s"],
        help="training rate the pipeline must sustain (default: the issue's target)",
    )
    args = parser.parse_args(argv)
    common.resolve_counts(args)
    return args


def stage_costs(records, config, class_names, augment, n_examples: int, seed: int) -> dict:
    """Seconds per stage (lists, one entry per example) building `n_examples` examples in one thread."""
    import numpy as np

    from bookseg.data.images import load_image_rgb
    from bookseg.data.records import boxes_from_masks
    from bookseg.mrcnn import images as im
    from bookseg.mrcnn.anchors import pixel_anchors_for
    from bookseg.mrcnn.inputs import load_training_example
    from bookseg.mrcnn.rpn_targets import build_rpn_targets

    ids = {name: i + 1 for i, name in enumerate(class_names)}
    watches = {name: common.Stopwatch() for name in (*STAGES, "whole_example")}
    anchors = None
    for index in range(n_examples):
        record = records[index % len(records)]
        rng = np.random.default_rng([seed, index])
        with watches["image_load"]:
            image = load_image_rgb(record.path)
        with watches["mask_rasterise"]:
            masks = record.masks()
        class_ids = np.asarray([ids[inst.class_name] for inst in record.instances], np.int32)
        with watches["augmentation"]:
            if augment is not None:
                result = augment(image, masks, class_ids, rng=rng)
                image, masks, class_ids = result.image, result.masks, result.class_ids
        with watches["resize_pad"]:
            image, _, scale, padding = im.resize_image(image, config, training=True)
            masks = im.resize_masks(masks, scale, padding)
        with watches["boxes_mini_masks"]:
            boxes = boxes_from_masks(masks)
            kept = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            boxes, masks, class_ids = boxes[kept], masks[:, :, kept], class_ids[kept]
            if config.use_mini_mask:
                im.minimize_masks(boxes, masks, config.mini_mask_shape)
        if anchors is None:
            anchors = pixel_anchors_for(config, image.shape[:2])  # cached by the pipeline: not timed
        with watches["rpn_targets"]:
            build_rpn_targets(anchors, class_ids, boxes, config, rng)
        with watches["whole_example"]:
            load_training_example(record, config, ids, augment=augment, rng=rng, image_index=index)
    return watches


def dataset_rate(records, config, class_names, augment, warmup: int, steps: int, seed: int) -> float:
    """Examples/s of `make_dataset` over `steps` batches after `warmup` batches."""
    from bookseg.mrcnn.inputs import make_dataset

    iterator = iter(
        make_dataset(records, config, class_names, augment=augment, shuffle=True, seed=seed, repeat=True)
    )
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    for _ in range(steps):
        batch = next(iterator)
    batch["input_image"].numpy()
    return steps * int(config.images_per_batch) / (time.perf_counter() - start)


def main(argv=None) -> None:
    args = parse_args(argv)
    config = common.workload_config_of(args)
    side = common.image_side(args)
    n_images = args.images or 8
    data = common.synthetic_set(n_images, side, seed=args.seed)
    augment = common.load_augmentation(args.augmentation, args.seed)
    examples = (args.warmup + args.steps) * int(config.images_per_batch)

    common.print_settings(
        "input_pipeline",
        {
            "workload": "quick smoke test (tiny model settings, not a result)"
            if args.quick
            else f"BENCH-{args.size}",
            "image_px": f"{side}x{side}",
            "synthetic_images": f"{n_images} (cycled)",
            "mean_books_per_image": f"{data.mean_instances:.1f}",
            "augmentation": f"{args.augmentation} ({augment!r})",
            "stage_examples": f"{args.steps * int(config.images_per_batch)} timed, single thread",
            "warmup_batches": args.warmup,
            "timed_batches": args.steps,
            "needed_images_per_s": f"{args.needed_images_per_s:.3f}",
            **common.config_settings(config),
            **common.environment_settings(),
        },
    )

    watches = stage_costs(data.records, config, data.class_names, augment, examples, args.seed)
    skip = args.warmup * int(config.images_per_batch)  # first examples warm caches (imports, anchors)
    stage_total = 0.0
    for name in (*STAGES, "whole_example"):
        times = watches[name].times[skip:]
        mean_ms = 1000 * sum(times) / len(times)
        if name != "whole_example":
            stage_total += mean_ms
        common.print_figure(
            f"stage_{name}_ms",
            mean_ms,
            "ms per example",
            "load_training_example end to end" if name == "whole_example" else "",
        )
    common.print_figure("stage_sum_ms", stage_total, "ms per example", "sum of the stages above")

    with_augmentation = dataset_rate(
        data.records, config, data.class_names, augment, args.warmup, args.steps, args.seed
    )
    without = dataset_rate(data.records, config, data.class_names, None, args.warmup, args.steps, args.seed)
    common.print_figure(
        "dataset_examples_per_s_augmented",
        with_augmentation,
        "examples/s",
        f"make_dataset, augmentation {args.augmentation}",
    )
    common.print_figure(
        "dataset_examples_per_s_plain", without, "examples/s", "make_dataset, no augmentation"
    )
    common.print_figure(
        "headroom_vs_needed",
        with_augmentation / args.needed_images_per_s,
        "x",
        "augmented examples/s / needed training images/s (> 1: keeps up, pipeline alone)",
    )
    common.print_figure("peak_rss_mib", common.peak_rss_mib(), "MiB", "getrusage ru_maxrss, whole process")
    data.cleanup()


if __name__ == "__main__":
    main()
