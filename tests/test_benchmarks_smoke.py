"""Smoke tests of the benchmark scripts (issue #6): each runs with --quick and prints its figures.

These check that the scripts work and report what they promise (settings and figure lines with
sane values), not how fast bookseg is: --quick uses the tiny model at 128 px for 2 steps.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
FIGURE = re.compile(r"^figure (\S+): (\S+)", re.MULTILINE)


def run_quick(script: str, *extra: str) -> tuple[str, dict[str, float]]:
    """Run `benchmarks/<script> --quick` and return its stdout and its figures by name."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--quick", *extra],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    figures = {name: float(value) for name, value in FIGURE.findall(proc.stdout)}
    return proc.stdout, figures


def check_positive(figures: dict, names) -> None:
    for name in names:
        assert name in figures, f"missing figure {name}; got {sorted(figures)}"
        assert math.isfinite(figures[name]) and figures[name] > 0, f"{name} = {figures[name]}"


def test_train_throughput_quick_prints_throughput_wait_memory_and_flops():
    stdout, figures = run_quick("train_throughput.py", "--compare-cached", "--precision", "mixed_bfloat16")
    assert "setting workload: quick smoke test" in stdout
    assert "setting config.precision: mixed_bfloat16" in stdout
    assert figures["train_step_traces"] == 1
    assert "setting timed_steps: 2" in stdout
    assert "setting config.images_per_batch: 2" in stdout
    check_positive(
        figures,
        [
            "train_images_per_s",
            "train_step_s_mean",
            "peak_rss_mib",
            "train_images_per_s_cached_batch",
            "train_step_counted_gflops",
            "train_step_gflops_per_s_counted",
        ],
    )
    assert 0.0 <= figures["input_wait_share"] < 1.0
    # images/s and the mean step time describe the same timed steps (batch of 2).
    assert figures["train_images_per_s"] == pytest.approx(2 / figures["train_step_s_mean"], rel=0.01)
    assert figures["peak_rss_mib"] >= figures["rss_before_timing_mib"]
    # Forward + backward of the tiny model at 128 px: more than 0.1 and less than 100 GFLOPs.
    assert 0.1 < figures["train_step_counted_gflops"] < 100


def test_inference_latency_quick_prints_latency_and_flops():
    stdout, figures = run_quick("inference_latency.py")
    assert "setting batch: 1 image per detect call" in stdout
    assert "setting config.precision: float32" in stdout
    assert figures["graph_traces"] == 1
    assert "setting config.detection_min_confidence: 0.0" in stdout
    check_positive(
        figures,
        [
            "detect_ms_per_image_mean",
            "graph_ms_per_image_mean",
            "peak_rss_mib",
            "detect_counted_gflops",
            "detections_per_image_mean",
        ],
    )
    # The graph alone is part of what detect does (allow timer noise on a busy machine).
    assert figures["graph_ms_per_image_median"] <= 1.5 * figures["detect_ms_per_image_median"]
    assert figures["detections_per_image_mean"] <= 40  # the quick model's detection_max_instances
    assert 0.0 <= figures["postprocess_share"] < 1.0


def test_input_pipeline_quick_prints_stage_costs_and_rates():
    stdout, figures = run_quick("input_pipeline.py")
    assert "setting augmentation: heavy" in stdout
    stages = ["image_load", "mask_rasterise", "augmentation", "resize_pad", "boxes_mini_masks", "rpn_targets"]
    check_positive(
        figures,
        [f"stage_{name}_ms" for name in stages]
        + [
            "stage_whole_example_ms",
            "dataset_examples_per_s_augmented",
            "dataset_examples_per_s_plain",
            "headroom_vs_needed",
            "peak_rss_mib",
        ],
    )
    assert figures["stage_sum_ms"] == pytest.approx(
        sum(figures[f"stage_{name}_ms"] for name in stages), rel=0.01
    )


def test_common_workload_matches_the_issue():
    spec = importlib.util.spec_from_file_location("bookseg_benchmarks_common", BENCHMARKS / "common.py")
    common = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = common  # dataclasses look their module up there
    spec.loader.exec_module(common)
    config = common.workload_config(512)
    assert config.image_shape == (512, 512, 3)
    assert (config.backbone, config.num_classes, config.images_per_batch) == ("resnet50", 2, 2)
    assert (
        config.rpn_train_anchors_per_image,
        config.post_nms_rois_training,
        config.post_nms_rois_inference,
        config.train_rois_per_image,
    ) == (256, 2000, 1000, 200)
    assert (config.detection_max_instances, config.detection_min_confidence) == (100, 0.0)
    assert common.workload_config(1024).image_shape == (1024, 1024, 3)
    assert common.reference_gflops("inference_per_image", 512) == 229.0
    assert common.reference_gflops("train_per_step_2_images", 512) == 797.0
    # At 1024 px the backbone/FPN/RPN work (229 - 131 GFLOPs) grows 4x, the heads' does not.
    assert common.reference_gflops("inference_per_image", 1024) == pytest.approx(131 + 4 * 98)


def test_mask_gap_scores_a_fold_model_on_its_validation_books(smoke_sweep):
    from tests.conftest import cli_env

    parent = smoke_sweep.parents[0]
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / "mask_gap.py"), "--run", parent.info.run_id, "--fold", "1"],
        cwd=smoke_sweep.root,
        env=cli_env(smoke_sweep.root, smoke_sweep.uri),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    books = int(re.search(r"validation images, (\d+) books", proc.stdout).group(1))
    assert books > 0
    band_rows = re.findall(r"^\| (\d\.\d-\d\.\d) \| (\d+) \|", proc.stdout, re.MULTILINE)
    assert [band for band, _ in band_rows] == ["0.0-0.4", "0.4-0.6", "0.6-0.8", "0.8-1.0"]
    assert sum(int(count) for _, count in band_rows) == books


def test_grid_estimate_counts_the_sweep_presets_and_divides_the_work_by_the_gpus():
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / "grid_estimate.py"), "--step-gflops", "4300", "--gpu-tflops", "8"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert (
        "4 anchors x 5 augmentation x 3 optimizer = 60 points, x 5 folds = 300 fold trainings" in proc.stdout
    )
    # 300 folds x 170,000 steps x 4.3 TFLOP / 8 TFLOP/s = 317 days on one GPU; heads steps at a third: 193
    assert "| 8 | 0.537 | 193-317 | 24-40 | 6-10 |" in proc.stdout
