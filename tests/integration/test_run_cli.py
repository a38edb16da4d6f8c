"""`python -m bookseg.run` end to end through the real CLI, checked through the MLflow client."""

import ast
import signal
import time
from pathlib import Path

import pytest

from bookseg.mrcnn.config import LOSS_NAMES
from bookseg.tracking.hydra_callbacks import sweep_table
from tests.integration.conftest import CliRunner

FOLD_METRICS = ("mask_ap", "mask_ap50", "mask_ap75", "box_ap", "box_ap50", "mask_ap50_matterport")


def _artifact_paths(client, run_id, path=""):
    out = []
    for item in client.list_artifacts(run_id, path):
        out.extend(_artifact_paths(client, run_id, item.path) if item.is_dir else [item.path])
    return out


def test_sweep_logs_one_parent_run_per_point_with_nested_fold_runs(smoke_sweep):
    assert "mean±std" in smoke_sweep.stdout
    # One table of all points at the end (the two cv.k=1 points fail validation), and the hint once.
    assert "sweep: 4 points, cv/mask_ap50_mean (mean ± std over folds), best first" in smoke_sweep.stdout
    assert smoke_sweep.stdout.count("  FAILED ") == 2
    assert smoke_sweep.stdout.count("mlflow ui --backend-store-uri") == 1
    client = smoke_sweep.client()
    scales = [ast.literal_eval(p.data.params["anchors.scales"]) for p in smoke_sweep.parents]
    assert scales == [[32, 64, 128, 256, 512], [16, 32, 64, 128, 256]]
    assert [p.data.params["anchors.name"] for p in smoke_sweep.parents] == ["default", "small"]
    for parent in smoke_sweep.parents:
        assert parent.data.params["model.backbone"] == "tiny"
        assert parent.data.params["cv.k"] == "2"
        assert parent.data.params["tags"] == '["smoke"]'  # JSON, as MLflow's compare page shows lists
        assert "+experiment=smoke" in parent.data.tags["bookseg.overrides"]
        sha = parent.data.tags["mlflow.source.git.commit"]
        assert len(sha) == 40 or sha == "unknown"
        assert parent.data.tags["bookseg.data_fingerprint"]
        for name in FOLD_METRICS:
            assert 0.0 <= parent.data.metrics[f"cv/{name}_mean"] <= 1.0
            assert parent.data.metrics[f"cv/{name}_std"] >= 0.0
        artifacts = _artifact_paths(client, parent.info.run_id)
        expected = {"config.yaml", "folds.json", "results.txt", "class_names.json", "hydra/overrides.yaml"}
        assert expected <= set(artifacts)

        children = smoke_sweep.children[parent.info.run_id]
        assert sorted(children) == [0, 1]
        for child in children.values():
            assert child.info.status == "FINISHED"
            for name in FOLD_METRICS:
                assert 0.0 <= child.data.metrics[name] <= 1.0
            for name in ("loss",) + LOSS_NAMES:
                for split in ("train", "val"):
                    history = client.get_metric_history(child.info.run_id, f"{split}/{name}")
                    assert [m.step for m in history] == [1, 2], (split, name)
            artifacts = _artifact_paths(client, child.info.run_id)
            assert "loss_curves.png" in artifacts
            assert any(a.startswith("overlays/") and a.endswith(".jpg") for a in artifacts)
            assert any(a.startswith("weights/") and a.endswith(".weights.h5") for a in artifacts)
            assert any(a.startswith("tensorboard/") for a in artifacts)


def test_failed_sweep_points_are_recorded_and_the_sweep_goes_on(smoke_sweep):
    assert len(smoke_sweep.failed) == 2  # cv.k=1 with each anchor set
    for run in smoke_sweep.failed:
        assert "cv.k=1" in run.data.tags["bookseg.overrides"]
        assert "k >= 2" in run.data.tags["bookseg.error"]


def test_killed_run_resumes_without_duplicates(cli):
    proc = cli.popen("+experiment=smoke")
    # Kill once fold 1 has written its first checkpoint (fold 0 is then finished).
    _kill_after(cli, proc, "*/attempt0/fold1/checkpoints/mask_rcnn_*.weights.h5")

    second = cli.run("+experiment=smoke")
    assert "fold 0: already finished" in second.stdout
    assert "fold 1: resuming from" in second.stdout

    parents, children = cli.runs()
    assert len(parents) == 1 and len(children) == 2
    assert parents[0].info.status == "FINISHED"
    client = cli.client()
    for child in children:
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "train/loss")]
        assert steps == [1, 2], steps
    fold0 = next(c for c in children if c.data.tags["fold"] == "0")
    # fold 0's final metrics were logged once, in the first process
    assert len(client.get_metric_history(fold0.info.run_id, "mask_ap50")) == 1


# A job that learns in about a minute: tiny model on 256 px shelves, AdamW, spine-shaped anchors.
LEARNING_OVERRIDES = (
    "+experiment=smoke",
    "model=tiny",
    "optimizer=adamw",
    "anchors=spines",
    "stages=scratch",
    "stages.schedule.0.learning_rate=0.003",
    "stages.schedule.0.epochs=12",
    "stages.steps_per_epoch=20",
    "data.synthetic.n_images=16",
    "data.synthetic.height=256",
    "data.synthetic.width=256",
    "model.image_min_dim=256",
    "model.image_max_dim=256",
    "eval.max_images=null",
)


def _kill_after(cli, proc, pattern: str, timeout: float = 900) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if list(Path(cli.root, "outputs", "runs").glob(pattern)):
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_resumed_run_matches_an_uninterrupted_one(cli, tmp_path_factory):
    reference = CliRunner(tmp_path_factory.mktemp("reference"))
    reference.run(*LEARNING_OVERRIDES)
    (ref_parent,), _ = reference.runs()

    proc = cli.popen(*LEARNING_OVERRIDES)
    _kill_after(cli, proc, "*/attempt0/fold1/checkpoints/mask_rcnn_0006.weights.h5")
    cli.run(*LEARNING_OVERRIDES)
    (parent,), children = cli.runs()
    assert len(children) == 2
    for name in ("mask_ap50", "box_ap50"):
        ref = ref_parent.data.metrics[f"cv/{name}_mean"]
        assert ref > 0.3, f"the reference run did not learn ({name}={ref:.3f}): the comparison would be empty"
        assert abs(parent.data.metrics[f"cv/{name}_mean"] - ref) < 0.15, name


def test_sweep_table_ranks_points_and_shows_failures():
    points = [
        {
            "overrides": "anchors=small",
            "run_id": "aaaaaaaaaa",
            "metric": "cv/mask_ap50_mean",
            "mean": 0.5,
            "std": 0.1,
            "error": None,
        },
        {
            "overrides": "anchors=bad",
            "run_id": None,
            "metric": "cv/mask_ap50_mean",
            "mean": None,
            "std": None,
            "error": "ConfigError: invalid config",
        },
        {
            "overrides": "anchors=default",
            "run_id": "bbbbbbbbbb",
            "metric": "cv/mask_ap50_mean",
            "mean": 0.75,
            "std": 0.05,
            "error": None,
        },
    ]
    lines = sweep_table(points).splitlines()
    assert lines[0] == "sweep: 3 points, cv/mask_ap50_mean (mean ± std over folds), best first"
    assert lines[2].split() == ["0.750", "±", "0.050", "bbbbbbbb", "anchors=default"]
    assert lines[3].split() == ["0.500", "±", "0.100", "aaaaaaaa", "anchors=small"]
    assert lines[4].split()[:2] == ["FAILED", "anchors=bad"] and "ConfigError" in lines[4]
