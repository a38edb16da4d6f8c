"""How long a tuning grid takes on 1, 8 and 32 GPUs, from a counted training step and an assumed GPU rate.

The seed's grid (docs/scaling.md): every anchors x augmentation x optimizer preset of the sweeps
(conf/sweep/anchors.yaml, augmentation.yaml, the three optimizers), 5 folds each, ResNet-101 at 1024 px,
matterport's schedule of heads 100 / 4+ 60 / all 10 epochs of 1,000 steps of 2 images. The work of one step is
measured (`train_throughput.py --size 1024 --backbone resnet101` counts it); the GPU's sustained rate is an
assumption you pass (no GPU was measured here). A heads-only step trains no backbone: it is counted at a
full step (upper bound) and at a third of one, the forward pass (lower bound).

    python benchmarks/grid_estimate.py --step-gflops 4295 --gpu-tflops 8 --gpu-tflops 80
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

CONF = Path(__file__).resolve().parents[1] / "conf"
FOLDS = 5
SCHEDULE = (("heads", 100), ("4+", 60), ("all", 10))  # matterport's stages, epochs each
STEPS_PER_EPOCH = 1000  # matterport's STEPS_PER_EPOCH; 2 images per step (IMAGES_PER_GPU)
HEADS_STEP_SHARE = 1 / 3  # lower bound of a heads-only step's cost: the forward pass


def full_step_equivalents(schedule=SCHEDULE, heads_share: float = 1.0) -> float:
    """Training steps of one fold, a heads-only step counted as `heads_share` of a full one."""
    return sum(
        epochs * STEPS_PER_EPOCH * (heads_share if layers == "heads" else 1.0) for layers, epochs in schedule
    )


def grid() -> dict[str, int]:
    """Choices per swept group: the anchors and augmentation sweep presets' lists, every optimizer preset."""
    counts = {}
    for group in ("anchors", "augmentation"):
        params = yaml.safe_load((CONF / "sweep" / f"{group}.yaml").read_text())["hydra"]["sweeper"]["params"]
        counts[group] = len(str(params[group]).split(","))
    counts["optimizer"] = len(list((CONF / "optimizer").glob("*.yaml")))
    return counts


def trainings(folds: int = FOLDS) -> int:
    """Fold trainings in the grid: its points times its folds."""
    points = 1
    for count in grid().values():
        points *= count
    return points * folds


def grid_days(step_gflops: float, gpu_tflops: float, gpus: int, heads_share: float) -> float:
    """Days for the whole grid with `gpus` GPUs, each training one fold at a time (points in parallel)."""
    seconds_per_step = step_gflops / (gpu_tflops * 1000.0)
    fold_seconds = full_step_equivalents(heads_share=heads_share) * seconds_per_step
    return trainings() * fold_seconds / gpus / 86400.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--step-gflops", type=float, required=True, help="work of one 2-image training step")
    parser.add_argument(
        "--gpu-tflops",
        type=float,
        action="append",
        required=True,
        help="sustained TFLOP/s of one GPU (repeatable)",
    )
    args = parser.parse_args(argv)
    sizes = " x ".join(f"{count} {group}" for group, count in grid().items())
    print(f"grid: {sizes} = {trainings() // FOLDS} points, x {FOLDS} folds = {trainings()} fold trainings")
    print(
        f"one fold: {full_step_equivalents():,.0f} steps; {full_step_equivalents(heads_share=HEADS_STEP_SHARE):,.0f}"
        " full-step equivalents with heads-only steps at a third"
    )
    print("| sustained TFLOP/s per GPU | s per step | 1 GPU, days | 8 GPUs, days | 32 GPUs, days |")
    print("|---|---|---|---|---|")
    for rate in args.gpu_tflops:
        cells = [
            f"{grid_days(args.step_gflops, rate, gpus, HEADS_STEP_SHARE):,.0f}-"
            f"{grid_days(args.step_gflops, rate, gpus, 1.0):,.0f}"
            for gpus in (1, 8, 32)
        ]
        print(f"| {rate:g} | {args.step_gflops / (rate * 1000):.3f} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
