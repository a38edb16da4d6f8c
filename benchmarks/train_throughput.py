"""Steady-state training throughput on BENCH-512 / BENCH-1024 (issue #6).

    python benchmarks/train_throughput.py                 # BENCH-512: 3 warm-up + 10 timed steps
    python benchmarks/train_throughput.py --size 1024
    python benchmarks/train_throughput.py --compare-cached   # also time the same steps on one cached batch
    python benchmarks/train_throughput.py --quick         # tiny model, 128 px, 2 steps: smoke test only

How it times: a direct loop over `bookseg.mrcnn.inputs.make_dataset` (the training pipeline, with
the augmentation preset given by --augmentation) calling `MaskRCNN.train_step` compiled once with
`tf.function` (what `model.fit` runs per step, minus Keras' callbacks and progress bar). Each step
is split into the wait in the iterator's `next()` (input pipeline) and the step itself (ended by
reading the loss, so the step has finished). Figures: images/s over the timed steps, the share of
step time spent waiting on input, peak RSS, and achieved GFLOP/s.
"""

from __future__ import annotations

import time

import common


def parse_args(argv=None):
    parser = common.base_parser(__doc__.splitlines()[0], default_steps=10, default_warmup=3)
    parser.add_argument(
        "--augmentation",
        default="hflip",
        help="preset in conf/augmentation (default hflip, the runner's default; 'none' = off)",
    )
    parser.add_argument(
        "--compare-cached",
        action="store_true",
        help="also time the same number of steps on one in-memory batch (no input pipeline)",
    )
    args = parser.parse_args(argv)
    common.resolve_counts(args)
    return args


def training_gflops(model, batch) -> float | None:
    """GFLOPs of one training step's forward and backward pass (optimizer update not counted)."""
    import tensorflow as tf

    def forward_backward(inputs):
        with tf.GradientTape() as tape:
            named = model.mrcnn_losses(inputs, training=True)
            total = model.total_loss(named, model.l2_loss())
        gradients = tape.gradient(total, model.trainable_variables)
        return total, [g for g in gradients if g is not None]

    specs = {name: tf.TensorSpec(value.shape, tf.as_dtype(value.dtype)) for name, value in batch.items()}
    return common.count_graph_gflops(forward_backward, specs)


def timed_steps(step, next_batch, warmup: int, steps: int):
    """Run warm-up + timed steps; return (input waits, step times) of the timed ones, seconds."""
    waits, computes = common.Stopwatch(), common.Stopwatch()
    for index in range(warmup + steps):
        timed = index >= warmup
        start = time.perf_counter()
        batch = next_batch()
        got = time.perf_counter()
        logs = step(batch)
        float(logs["loss"])  # blocks until the step has finished
        done = time.perf_counter()
        if timed:
            waits.times.append(got - start)
            computes.times.append(done - got)
    return waits, computes


def main(argv=None) -> None:
    args = parse_args(argv)
    import tensorflow as tf

    from bookseg.mrcnn.inputs import make_dataset

    config = common.workload_config_of(args)
    side = common.image_side(args)
    batch_size = int(config.images_per_batch)
    n_images = args.images or max(8, batch_size * 2)
    generation_start = time.perf_counter()
    data = common.synthetic_set(n_images, side, seed=args.seed)
    generation = time.perf_counter() - generation_start
    augment = common.load_augmentation(args.augmentation, args.seed)

    common.print_settings(
        "train_throughput",
        {
            "workload": "quick smoke test (tiny model, not a result)" if args.quick else f"BENCH-{args.size}",
            "image_px": f"{side}x{side}",
            "synthetic_images": n_images,
            "mean_books_per_image": f"{data.mean_instances:.1f}",
            "augmentation": args.augmentation,
            "trainable": "all layers (set_trainable 'all')",
            "optimizer": "SGD lr 0.001 momentum 0.9 global_clipnorm 5",
            "timing": "direct loop: next(make_dataset iterator) timed apart from tf.function(model.train_step)",
            "warmup_steps": args.warmup,
            "timed_steps": args.steps,
            **common.config_settings(config),
            **common.environment_settings(),
        },
    )
    print(f"note: generated {n_images} images in {generation:.1f} s", flush=True)

    model = common.build_training_model(config, seed=args.seed)
    step = tf.function(model.train_step, jit_compile=False, reduce_retracing=True)
    dataset = make_dataset(
        data.records, config, data.class_names, augment=augment, shuffle=True, seed=args.seed, repeat=True
    )
    iterator = iter(dataset)
    rss_before = common.current_rss_mib()
    waits, computes = timed_steps(step, lambda: next(iterator), args.warmup, args.steps)

    total = waits.total + computes.total
    images = args.steps * batch_size
    seconds_per_step = total / args.steps
    common.print_figure("train_images_per_s", images / total, "images/s", f"{images} images in {total:.2f} s")
    common.print_figure("train_step_s_mean", seconds_per_step, "s", "input wait + step")
    common.print_figure("train_step_s_median", computes.median, "s", "step alone, median")
    common.print_figure("input_wait_share", waits.total / total, "", "time in next() / total step time")
    common.print_figure("input_wait_s_max", max(waits.times), "s")
    common.print_figure(
        "train_step_traces",
        step.experimental_get_tracing_count(),
        "",
        "graph traces over warm-up + timed steps; 1 = never retraced",
    )
    common.print_figure("rss_before_timing_mib", rss_before, "MiB")
    common.print_figure("peak_rss_mib", common.peak_rss_mib(), "MiB", "getrusage ru_maxrss, whole process")

    if args.compare_cached:
        cached = {
            name: tf.constant(value)
            for name, value in common.synthetic_batch(
                data.records, config, data.class_names, args.seed
            ).items()
        }
        _, cached_steps = timed_steps(step, lambda: cached, 1, args.steps)
        common.print_figure(
            "train_images_per_s_cached_batch",
            images / cached_steps.total,
            "images/s",
            "same steps on one in-memory batch, no pipeline running",
        )
        common.print_figure(
            "pipeline_slowdown_share", 1.0 - cached_steps.total / total, "", "1 - cached time / pipeline time"
        )

    counted = None
    if not args.no_flops:
        batch = next(iterator)
        counted = training_gflops(model, {name: value.numpy() for name, value in batch.items()})
    reference = None if args.quick else common.reference_gflops("train_per_step_2_images", side)
    common.report_gflops_rate("train_step", seconds_per_step, counted, reference, "step")
    target = 1.25 * common.TORCHVISION_TARGETS["train_images_per_s"]
    print(
        f"note: target >= {target:.2f} images/s (1.25x torchvision's 0.28 on the project's 2-core machine; "
        "compare both on one machine) and input wait < 5%",
        flush=True,
    )
    data.cleanup()


if __name__ == "__main__":
    main()
