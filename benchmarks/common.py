"""Shared setup of the benchmark scripts (issue #6, workload BENCH-512 / BENCH-1024).

The workload: square synthetic shelf images (`--size` px, about 20 books each), 1 class + background,
ResNet-50 FPN, batch 2, all layers trainable, SGD momentum 0.9 with global clip norm 5, 256 RPN anchors
per image, 2000 / 1000 proposals after NMS (training / inference), 200 ROIs per image in training,
at most 100 detections with no score threshold (so the mask head always runs on 100 boxes).

`--quick` swaps in the tiny model at 128 px with a few steps: it only smoke-tests a script, its figures
are not results.

Every script prints `setting: value` lines first, then `figure <name>: <value> <unit>` lines, so
tests and people can grep them.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

# Run from a checkout without installing: `python benchmarks/<script>.py`.
REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

# Reference work counted on torchvision's maskrcnn_resnet50_fpn at 512 x 512 (issue #6), in GFLOPs
# (one multiply-add = 2 FLOPs). Work grows with the pixel count for the backbone/FPN/RPN; at 1024 px
# the reference is scaled by 4 only for those parts (heads run on the same number of ROIs).
REFERENCE_GFLOPS_512 = {
    "inference_per_image": 229.0,  # backbone 43, FPN 30, RPN 26, box head 28, mask head 103
    "inference_per_image_heads": 28.0 + 103.0,
    "train_per_step_2_images": 797.0,
}
# The per-step training count is not split by part in the issue: at 1024 px it is scaled by the same
# factor as the inference count (an approximation, printed as such).
TORCHVISION_TARGETS = {"train_images_per_s": 0.28, "inference_s_per_image": 1.6}
# About 20 books per image: the default style asks for 6-25 per image; the benchmark narrows it.
BOOKS_PER_IMAGE = (18, 22)


def reference_gflops(kind: str, size: int) -> float:
    """Reference GFLOPs of torchvision's model for `kind` ("inference_per_image" or
    "train_per_step_2_images") at `size` px (exact at 512, scaled estimate at other sizes)."""
    inference = REFERENCE_GFLOPS_512["inference_per_image"]
    heads = REFERENCE_GFLOPS_512["inference_per_image_heads"]
    pixel_factor = (size / 512.0) ** 2
    scaled_inference = heads + (inference - heads) * pixel_factor
    if kind == "inference_per_image":
        return scaled_inference
    if kind == "train_per_step_2_images":
        return REFERENCE_GFLOPS_512[kind] * scaled_inference / inference
    raise ValueError(f"unknown reference kind {kind!r}")


def reference_is_exact(gflops: float) -> bool:
    """True when `gflops` is one of the issue's counts at 512 px (not a scaled estimate)."""
    return gflops in REFERENCE_GFLOPS_512.values()


# --------------------------------------------------------------------------- arguments and settings
def base_parser(
    description: str, *, default_steps: int, default_warmup: int, bookseg_model: bool = True
) -> argparse.ArgumentParser:
    """Arguments every script shares: --size, --quick, --warmup, --steps, --images, --seed, --no-flops,
    and with `bookseg_model` the bookseg model options --precision and --rpn-conv-channels."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--size",
        type=int,
        choices=(512, 1024),
        default=512,
        help="image side in px: BENCH-512 (default) or BENCH-1024",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny model at 128 px and few steps: smoke-tests the script, figures are not results",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help=f"untimed iterations first (tracing, caches); default {default_warmup}, quick 1",
    )
    parser.add_argument(
        "--steps", type=int, default=None, help=f"timed iterations; default {default_steps}, quick 2"
    )
    parser.add_argument(
        "--images",
        type=int,
        default=None,
        help="synthetic images generated (default: enough for warm-up + steps, at least 8)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic images and the model init")
    parser.add_argument(
        "--no-flops",
        action="store_true",
        help="skip counting bookseg's graph FLOPs with the TF profiler (saves a trace)",
    )
    if bookseg_model:
        from bookseg.mrcnn.config import PRECISIONS

        parser.add_argument(
            "--precision",
            choices=PRECISIONS,
            default="float32",
            help="MrcnnConfig.precision: Keras dtype policy of the layers",
        )
        parser.add_argument(
            "--rpn-conv-channels",
            type=int,
            default=512,
            help="width of rpn_conv_shared: 512 as matterport (default), 256 as torchvision",
        )
        parser.add_argument(
            "--backbone",
            choices=("resnet50", "resnet101"),
            default="resnet50",
            help="ResNet of the workload: resnet50 as BENCH-512/1024 (default), resnet101 as matterport's COCO model",
        )
    parser.set_defaults(default_steps=default_steps, default_warmup=default_warmup)
    return parser


def resolve_counts(args) -> None:
    """Fill --warmup / --steps defaults (smaller with --quick) and check them."""
    if args.warmup is None:
        args.warmup = 1 if args.quick else args.default_warmup
    if args.steps is None:
        args.steps = 2 if args.quick else args.default_steps
    if args.warmup < 0 or args.steps < 1:
        raise SystemExit(f"--warmup must be >= 0 and --steps >= 1 (got {args.warmup}, {args.steps})")


def workload_config(
    size: int = 512,
    *,
    quick: bool = False,
    precision: str = "float32",
    rpn_conv_channels: int = 512,
    backbone: str = "resnet50",
):
    """The `MrcnnConfig` of BENCH-<size> (or the tiny smoke-test model at 128 px with `quick`);
    `rpn_conv_channels` and `backbone` apply to the ResNet workload only."""
    from bookseg.mrcnn.config import MrcnnConfig

    if quick:
        return MrcnnConfig(
            precision=precision,
            backbone="tiny",
            tiny_channels=(8, 16, 32, 64),
            image_min_dim=128,
            image_max_dim=128,
            top_down_pyramid_size=32,
            fpn_classif_fc_layers_size=64,
            rpn_conv_channels=32,
            mask_head_channels=16,
            num_classes=2,
            images_per_batch=2,
            rpn_train_anchors_per_image=64,
            pre_nms_limit=1000,
            post_nms_rois_training=200,
            post_nms_rois_inference=100,
            train_rois_per_image=32,
            max_gt_instances=40,
            mini_mask_shape=(28, 28),
            detection_max_instances=40,
            detection_min_confidence=0.0,
        )
    return MrcnnConfig(
        backbone=backbone,
        precision=precision,
        rpn_conv_channels=rpn_conv_channels,
        num_classes=2,
        image_resize_mode="square",
        image_min_dim=size,
        image_max_dim=size,
        images_per_batch=2,
        rpn_train_anchors_per_image=256,
        post_nms_rois_training=2000,
        post_nms_rois_inference=1000,
        train_rois_per_image=200,
        detection_max_instances=100,
        detection_min_confidence=0.0,
    )


def workload_config_of(args):
    """`workload_config` for a script's parsed arguments."""
    return workload_config(
        args.size,
        quick=args.quick,
        precision=args.precision,
        rpn_conv_channels=args.rpn_conv_channels,
        backbone=args.backbone,
    )


def image_side(args) -> int:
    return 128 if args.quick else int(args.size)


def print_settings(title: str, settings: dict) -> None:
    """Print the workload settings as `setting <name>: <value>` lines."""
    print(f"== {title}", flush=True)
    for name, value in settings.items():
        print(f"setting {name}: {value}", flush=True)


def config_settings(config) -> dict:
    """The workload fields of an `MrcnnConfig` worth printing."""
    names = (
        "backbone",
        "precision",
        "rpn_conv_channels",
        "image_max_dim",
        "num_classes",
        "images_per_batch",
        "rpn_train_anchors_per_image",
        "pre_nms_limit",
        "post_nms_rois_training",
        "post_nms_rois_inference",
        "train_rois_per_image",
        "detection_max_instances",
        "detection_min_confidence",
        "norm",
        "mask_shape",
        "mini_mask_shape",
    )
    return {f"config.{name}": getattr(config, name) for name in names}


def environment_settings() -> dict:
    import tensorflow as tf

    return {
        "cpus": os.cpu_count(),
        "tensorflow": tf.__version__,
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads() or "default",
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads() or "default",
    }


def print_figure(name: str, value, unit: str = "", note: str = "") -> None:
    """Print one result line: `figure <name>: <value> <unit>  (<note>)`."""
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    line = f"figure {name}: {text}"
    if unit:
        line += f" {unit}"
    if note:
        line += f"  ({note})"
    print(line, flush=True)


# --------------------------------------------------------------------------- synthetic data
@dataclass
class SyntheticSet:
    """A generated benchmark set: its records, class names and folder (deleted by `cleanup`)."""

    records: list
    class_names: list[str]
    folder: Path
    _tmp: tempfile.TemporaryDirectory

    @property
    def mean_instances(self) -> float:
        return statistics.fmean(len(r.instances) for r in self.records)

    def cleanup(self) -> None:
        self._tmp.cleanup()


def synthetic_set(n_images: int, size: int, seed: int = 0) -> SyntheticSet:
    """Generate `n_images` square shelf images of `size` px with about 20 books each, in a temp dir,
    and read them back through the ordinary loader (`load_dataset`)."""
    from bookseg.data.readers import load_dataset
    from bookseg.data.synthetic import ShelfStyle, generate_shelves

    tmp = tempfile.TemporaryDirectory(prefix="bookseg-bench-")
    folder = Path(tmp.name)
    style = ShelfStyle(books_per_image=BOOKS_PER_IMAGE, empty_rate=0.0)
    project = generate_shelves(folder, n_images, seed=seed, image_size=(size, size), style=style)
    dataset = load_dataset(project)
    return SyntheticSet(list(dataset.records), list(dataset.class_names), folder, tmp)


def load_augmentation(name: str, seed: int):
    """The `Augmenter` of preset `conf/augmentation/<name>.yaml` (None for an empty preset like "none")."""
    from omegaconf import OmegaConf

    from bookseg.data.augment import build_augmentation

    path = REPO_ROOT / "conf" / "augmentation" / f"{name}.yaml"
    if not path.is_file():
        presets = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise SystemExit(f"--augmentation {name!r}: no {path}; presets: {presets}")
    return build_augmentation(OmegaConf.load(path).transforms, seed=seed)


def synthetic_batch(records, config, class_names, seed: int = 0) -> dict:
    """One training batch (dict of NumPy arrays keyed by the model's input names) built in-process
    from the first `images_per_batch` records, without tf.data (for cached-batch timings)."""
    import numpy as np

    from bookseg.mrcnn.inputs import INPUT_NAMES, load_training_example

    ids = {name: i + 1 for i, name in enumerate(class_names)}
    examples = [
        load_training_example(record, config, ids, rng=np.random.default_rng([seed, k]), image_index=k)
        for k, record in enumerate(records[: config.images_per_batch])
    ]
    return {name: np.stack([example[name] for example in examples]) for name in INPUT_NAMES}


# --------------------------------------------------------------------------- model
def build_training_model(config, seed: int = 0):
    """A `MaskRCNN` with every layer trainable, compiled with SGD (momentum 0.9, global clip norm 5)."""
    import keras

    from bookseg.mrcnn.model import MaskRCNN
    from bookseg.mrcnn.training import OptimizerSpec, make_optimizer, set_trainable

    keras.utils.set_random_seed(seed)
    model = MaskRCNN(config)
    set_trainable(model, "all")
    spec = OptimizerSpec(name="sgd", momentum=0.9, clipnorm=5.0)
    model.compile(optimizer=make_optimizer(spec, 0.001, model.norm_scales()), jit_compile=False)
    return model


# --------------------------------------------------------------------------- timing and memory
class Stopwatch:
    """Collects durations (seconds) of repeated timed blocks: `with watch: ...`."""

    def __init__(self):
        self.times: list[float] = []
        self._start = 0.0

    def __enter__(self):
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.times.append(time.perf_counter() - self._start)
        return False

    @property
    def total(self) -> float:
        return sum(self.times)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.times) if self.times else float("nan")

    @property
    def median(self) -> float:
        return statistics.median(self.times) if self.times else float("nan")


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (`getrusage` ru_maxrss, KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mib() -> float:
    """Current resident set size, MiB (from /proc/self/status; NaN where that does not exist)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


# --------------------------------------------------------------------------- FLOP counting
def count_graph_gflops(function, *args) -> float | None:
    """GFLOPs of one call of `function(*args)`, counted by the TF profiler on its frozen graph.

    `function` is traced to a concrete function, its variables are folded into constants and
    `tf.compat.v1.profiler` sums the registered float-op statistics (Conv2D, MatMul, ... with
    static shapes; one multiply-add = 2 FLOPs). Ops without statistics or with unknown shapes
    count as 0; the backward ops of a "valid" convolution are overcounted (benchmarks/README.md,
    "Where the training work goes"). Returns None when the graph cannot be profiled.
    """
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    try:
        concrete = tf.function(function).get_concrete_function(*args)
        frozen = convert_variables_to_constants_v2(concrete)
        options = (
            tf.compat.v1.profiler.ProfileOptionBuilder(
                tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
            )
            .with_empty_output()
            .build()
        )
        profile = tf.compat.v1.profiler.profile(
            graph=frozen.graph, run_meta=tf.compat.v1.RunMetadata(), cmd="op", options=options
        )
    except Exception as error:  # noqa: BLE001 - counting is optional, the timing stands without it
        print(f"note: FLOP counting failed ({type(error).__name__}: {str(error)[:200]})", flush=True)
        return None
    return profile.total_float_ops / 1e9


def report_gflops_rate(
    name: str,
    seconds_per_unit: float,
    counted: float | None,
    reference: float | None,
    unit: str,
    counted_by: str = "bookseg graph, tf.compat.v1.profiler; see benchmarks/README.md",
) -> None:
    """Print achieved GFLOP/s against the reference count (None: not applicable, e.g. --quick) and,
    when available, against the counted one."""
    if reference is None:
        print("note: no reference FLOP count for the quick (tiny) model", flush=True)
    else:
        print_figure(
            f"{name}_reference_gflops",
            reference,
            f"GFLOPs per {unit}",
            "torchvision R50-FPN count from issue #6"
            + ("" if reference_is_exact(reference) else ", scaled to this size"),
        )
        print_figure(
            f"{name}_gflops_per_s_reference",
            reference / seconds_per_unit,
            "GFLOP/s",
            "reference work / measured time",
        )
    if counted is not None:
        print_figure(f"{name}_counted_gflops", counted, f"GFLOPs per {unit}", counted_by)
        print_figure(
            f"{name}_gflops_per_s_counted",
            counted / seconds_per_unit,
            "GFLOP/s",
            "counted work / measured time",
        )
