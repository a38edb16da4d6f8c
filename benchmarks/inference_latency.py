"""Inference latency of `MaskRCNN.detect` on single images, BENCH-512 / BENCH-1024 (issue #6).

    python benchmarks/inference_latency.py                # BENCH-512: 2 warm-up + 10 timed images
    python benchmarks/inference_latency.py --size 1024
    python benchmarks/inference_latency.py --quick        # tiny model, 128 px: smoke test only

Times, per single image (batch of 1): the whole `model.detect([image])` call (resize + mold, the
compiled inference graph, NumPy post-processing back to full-size masks), and the compiled graph
alone (the same `tf.function` detect runs, fed an already molded image, ended by copying its outputs
to NumPy). The model has random weights and `detection_min_confidence=0`, so the detection layer
keeps up to 100 boxes per image and the mask head always runs on 100 ROIs, as in the workload.
"""

from __future__ import annotations

import statistics
import time

import common


def parse_args(argv=None):
    parser = common.base_parser(__doc__.splitlines()[0], default_steps=10, default_warmup=2)
    args = parser.parse_args(argv)
    common.resolve_counts(args)
    return args


def inference_gflops(model, config, image_shape, anchors) -> float | None:
    """GFLOPs of one inference-graph call on a batch of one molded image."""
    import tensorflow as tf

    anchors = tf.constant(anchors)

    def graph(images, metas):
        out = model.inference_outputs(
            images, metas, anchors, config.detection_min_confidence, config.detection_max_instances
        )
        return out["detections"], out["mrcnn_mask"]

    return common.count_graph_gflops(
        graph,
        tf.TensorSpec((1, *image_shape), tf.float32),
        tf.TensorSpec((1, config.image_meta_size), tf.float32),
    )


def main(argv=None) -> None:
    args = parse_args(argv)
    import keras
    import tensorflow as tf

    from bookseg.data.images import load_image_rgb
    from bookseg.mrcnn.anchors import anchors_for
    from bookseg.mrcnn.images import mold_inputs
    from bookseg.mrcnn.model import MaskRCNN

    config = common.workload_config_of(args)
    side = common.image_side(args)
    n_images = args.images or max(4, min(args.steps, 8))
    data = common.synthetic_set(n_images, side, seed=args.seed)
    images = [load_image_rgb(record.path) for record in data.records]

    common.print_settings(
        "inference_latency",
        {
            "workload": "quick smoke test (tiny model, not a result)" if args.quick else f"BENCH-{args.size}",
            "image_px": f"{side}x{side}",
            "synthetic_images": f"{n_images} (cycled)",
            "mean_books_per_image": f"{data.mean_instances:.1f}",
            "batch": "1 image per detect call",
            "weights": f"random init (seed {args.seed})",
            "warmup_images": args.warmup,
            "timed_images": args.steps,
            **common.config_settings(config),
            **common.environment_settings(),
        },
    )

    keras.utils.set_random_seed(args.seed)
    model = MaskRCNN(config)
    rss_before = common.current_rss_mib()

    detect, counts = common.Stopwatch(), []
    for index in range(args.warmup + args.steps):
        image = images[index % len(images)]
        start = time.perf_counter()
        result = model.detect([image])[0]
        if index >= args.warmup:
            detect.times.append(time.perf_counter() - start)
            counts.append(len(result["scores"]))

    # The graph alone: the very tf.function detect runs.
    run = model.inference_function(int(config.detection_max_instances))
    molded = [mold_inputs([image], config)[:2] for image in images]
    anchors = anchors_for(config, molded[0][0].shape[1:3])
    anchors_tensor = tf.constant(anchors)
    confidence = tf.constant(config.detection_min_confidence, tf.float32)
    graph = common.Stopwatch()
    for index in range(args.warmup + args.steps):
        molded_image, meta = molded[index % len(molded)]
        start = time.perf_counter()
        detections, masks = run(tf.constant(molded_image), tf.constant(meta), anchors_tensor, confidence)
        detections.numpy(), masks.numpy()
        if index >= args.warmup:
            graph.times.append(time.perf_counter() - start)

    common.print_figure(
        "detect_ms_per_image_mean", 1000 * detect.mean, "ms", "model.detect([image]), whole call"
    )
    common.print_figure("detect_ms_per_image_median", 1000 * detect.median, "ms")
    common.print_figure("graph_ms_per_image_mean", 1000 * graph.mean, "ms", "compiled inference graph alone")
    common.print_figure("graph_ms_per_image_median", 1000 * graph.median, "ms")
    common.print_figure(
        "postprocess_share",
        max(0.0, 1.0 - graph.mean / detect.mean),
        "",
        "1 - graph / detect: molding, copies and mask pasting in Python",
    )
    common.print_figure("detections_per_image_mean", statistics.fmean(counts), "boxes")
    common.print_figure(
        "graph_traces",
        run.experimental_get_tracing_count(),
        "",
        "graph traces over all detect and graph calls; 1 = never retraced",
    )
    common.print_figure("rss_before_timing_mib", rss_before, "MiB")
    common.print_figure("peak_rss_mib", common.peak_rss_mib(), "MiB", "getrusage ru_maxrss, whole process")

    counted = None
    if not args.no_flops:
        counted = inference_gflops(model, config, molded[0][0].shape[1:], anchors)
    reference = None if args.quick else common.reference_gflops("inference_per_image", side)
    common.report_gflops_rate("detect", detect.mean, counted, reference, "image")
    common.report_gflops_rate("graph", graph.mean, counted, reference, "image")
    target = 0.75 * common.TORCHVISION_TARGETS["inference_s_per_image"]
    print(
        f"note: target <= {1000 * target:.0f} ms per image (0.75x torchvision's 1.6 s on the project's 2-core "
        "machine; compare both on one machine)",
        flush=True,
    )
    data.cleanup()


if __name__ == "__main__":
    main()
