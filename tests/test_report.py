"""`bookseg report`: table logic on runs logged directly into MLflow, and a report of a real 2-point sweep."""

from __future__ import annotations

import ast
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from bookseg.analysis.report import build_report, format_mean_std
from bookseg.analysis.report_plots import mean_curve
from bookseg.analysis.report_runs import best_run
from bookseg.cli import main

REPO = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _log_parent(client, experiment_id, name, start, params, summary, folds, status="FINISHED", tags=None):
    """A parent run with `cv/` metrics and one child run per entry of `folds` ({metric: value} plus
    'train/loss' / 'val/loss' lists, one value per epoch)."""
    parent = client.create_run(experiment_id, run_name=name, start_time=start, tags=tags or {})
    pid = parent.info.run_id
    for key, value in params.items():
        client.log_param(pid, key, value)
    for key, value in summary.items():
        client.log_metric(pid, key, value)
    for i, fold in enumerate(folds):
        child = client.create_run(
            experiment_id,
            run_name=f"fold{i}",
            start_time=start + 1 + i,
            tags={"mlflow.parentRunId": pid, "fold": str(i)},
        )
        for key, value in fold.items():
            if isinstance(value, list):
                for epoch, v in enumerate(value, 1):
                    client.log_metric(child.info.run_id, key, v, step=epoch)
            else:
                client.log_metric(child.info.run_id, key, value)
        client.set_terminated(child.info.run_id, "FINISHED")
    client.set_terminated(pid, status)
    return pid


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """sqlite store with experiment bookseg/unit: runs A and B (different anchors.scales) and a FAILED C."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("bookseg/unit")
    common = {"model.backbone": "tiny", "cv.k": "2"}
    a = _log_parent(
        client,
        exp,
        "A anchors=default",
        1_000,
        {**common, "anchors.scales": "[32, 64, 128, 256, 512]", "tracking.overlays": "1"},
        {
            "cv/mask_ap50_mean": 0.5,
            "cv/mask_ap50_std": 0.1,
            "cv/mask_ap_mean": 0.3,
            "cv/mask_ap_std": 0.05,
            "cv/n_folds": 2,
        },
        [
            {"mask_ap50": 0.4, "mask_ap": 0.25, "train/loss": [2.0, 1.0], "val/loss": [2.5, 1.5]},
            {"mask_ap50": 0.6, "mask_ap": 0.35, "train/loss": [4.0, 3.0], "val/loss": [4.5, 3.5]},
        ],
    )
    b = _log_parent(
        client,
        exp,
        "B anchors=small",
        2_000,
        {**common, "anchors.scales": "[16, 32, 64, 128, 256]", "tracking.overlays": "4"},
        {
            "cv/mask_ap50_mean": 0.7,
            "cv/mask_ap50_std": 0.0,
            "cv/mask_ap_mean": 0.4,
            "cv/mask_ap_std": 0.0341,
            "cv/n_folds": 2,
        },
        [
            {"mask_ap50": 0.7, "mask_ap": 0.4, "train/loss": [1.0], "val/loss": [1.2]},
            {"mask_ap50": 0.7, "mask_ap": 0.4, "train/loss": [1.0], "val/loss": [1.2]},
        ],
    )
    c = _log_parent(
        client,
        exp,
        "failed: model.image_max_dim=100",
        3_000,
        {},
        {},
        [],
        status="FAILED",
        tags={"bookseg.error": "ConfigError: model.image_max_dim=100 is not divisible by 64"},
    )
    return {"uri": uri, "client": client, "a": a, "b": b, "c": c}


def test_table_rows_differences_mean_std_best_and_failed_runs(logged, tmp_path):
    report = build_report("bookseg/unit", tracking_uri=logged["uri"], out=tmp_path / "unit")
    assert report.folder == tmp_path / "unit" and report.note == ""
    assert [r.name for r in report.runs] == ["A anchors=default", "B anchors=small"]
    assert report.differing_params == ["anchors.scales"]  # tracking.* differ too but are not config
    assert report.metrics == ["mask_ap50", "mask_ap"]
    assert report.best_run_id == logged["b"]

    text = (tmp_path / "unit" / "report.md").read_text()
    assert text == report.markdown
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert table[0] == "| # | run | `anchors.scales` | folds | mask_ap50 | mask_ap |"
    rows = table[2:]
    assert len(rows) == 2
    assert (
        rows[0] == "| 1 | A anchors=default | [32, 64, 128, 256, 512] | 2 | 0.500 ± 0.100 | 0.300 ± 0.050 |"
    )
    assert rows[1] == (
        "| 2 | **B anchors=small** (best) | [16, 32, 64, 128, 256] | 2 | **0.700 ± 0.000** | 0.400 ± 0.034 |"
    )
    assert [s.status for s in report.skipped] == ["FAILED"]
    failed = text.split("## Not compared")[1]
    assert logged["c"] in failed and "not divisible by 64" in failed
    assert f"run `{logged['b']}`" in text

    assert [p.name for p in report.plots] == ["metrics.png", "loss_curves.png"]
    for plot in report.plots:
        assert plot.read_bytes()[:8] == PNG_MAGIC and plot.stat().st_size > 5_000
        assert f"]({plot.name})" in text


def test_fold_values_and_fold_mean_loss_curves(logged, tmp_path):
    report = build_report("bookseg/unit", tracking_uri=logged["uri"], out=tmp_path / "r")
    a = report.runs[0]
    assert [m["mask_ap50"] for m in a.fold_metrics] == [0.4, 0.6]
    epochs, mean = mean_curve(a.loss_history["train/loss"])
    assert epochs.tolist() == [1, 2] and mean.tolist() == [3.0, 2.0]
    epochs, mean = mean_curve(a.loss_history["val/loss"])
    assert mean.tolist() == [3.5, 2.5]
    # A fold missing an epoch (or logging NaN) is left out of that epoch's mean.
    assert mean_curve([[(1, 2.0), (2, 1.0)], [(1, 4.0), (2, math.nan)]])[1].tolist() == [3.0, 1.0]


def test_existing_report_is_never_replaced_silently(logged, tmp_path):
    out = tmp_path / "rep"
    build_report("bookseg/unit", tracking_uri=logged["uri"], out=out)
    (out / "report.md").write_text("edited by hand")
    second = build_report("bookseg/unit", tracking_uri=logged["uri"], out=out)
    assert second.folder == tmp_path / "rep_2" and "already holds a report" in second.note
    assert (out / "report.md").read_text() == "edited by hand"
    third = build_report("bookseg/unit", tracking_uri=logged["uri"], out=out)
    assert third.folder == tmp_path / "rep_3"
    replaced = build_report("bookseg/unit", tracking_uri=logged["uri"], out=out, overwrite=True)
    assert replaced.folder == out and replaced.note == ""
    assert (out / "report.md").read_text() == replaced.markdown and "| 2 |" in replaced.markdown


def test_selected_runs_and_clear_errors(logged, tmp_path):
    only_a = build_report(runs=[logged["a"]], tracking_uri=logged["uri"], out=tmp_path / "a")
    assert [r.run_id for r in only_a.runs] == [logged["a"]] and only_a.differing_params == []
    assert "Only one finished run" in only_a.markdown

    child = logged["client"].search_runs(
        [logged["client"].get_experiment_by_name("bookseg/unit").experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{logged['a']}'",
    )[0]
    with pytest.raises(ValueError, match="is a fold run of parent"):
        build_report(runs=[child.info.run_id], tracking_uri=logged["uri"], out=tmp_path / "x")
    with pytest.raises(ValueError, match="no MLflow experiment 'bookseg/nope'.*bookseg/unit"):
        build_report("bookseg/nope", tracking_uri=logged["uri"], out=tmp_path / "x")
    with pytest.raises(ValueError, match="no finished parent run"):
        build_report(runs=[logged["c"]], tracking_uri=logged["uri"], out=tmp_path / "x")


def test_number_formatting_and_best_run_rules():
    assert format_mean_std(0.51234, 0.0341) == "0.512 ± 0.034"
    assert format_mean_std(0.5, math.nan) == "0.500"
    assert format_mean_std(math.nan, 0.1) == "—"

    class Run:
        def __init__(self, run_id, value):
            self.run_id, self.value = run_id, value

        def mean_std(self, metric):
            return self.value, 0.0

    assert best_run([Run("x", math.nan), Run("y", 0.2), Run("z", 0.2)]) == "y"  # first on ties
    assert best_run([Run("x", math.nan)]) is None


def test_report_command(logged, tmp_path, capsys):
    args = [
        "report",
        "--experiment",
        "bookseg/unit",
        "--tracking-uri",
        logged["uri"],
        "--out",
        str(tmp_path / "c"),
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert (
        "| 2 | **B anchors=small** (best)" in out
        and f"report written to {tmp_path / 'c' / 'report.md'}" in out
    )
    assert main(["report", "--experiment", "bookseg/none", "--tracking-uri", logged["uri"]]) == 2
    assert "no MLflow experiment 'bookseg/none'" in capsys.readouterr().err


def test_report_of_a_real_sweep(smoke_sweep):
    """The session's smoke sweep (tests/conftest.py): anchors default vs small, plus two failed points."""
    sweep, uri = smoke_sweep.root, smoke_sweep.uri
    report = build_report(smoke_sweep.experiment, tracking_uri=uri, out=sweep / "experiments" / "shared")
    assert len(report.runs) == 2 and len(report.skipped) == 2
    assert "anchors.scales" in report.differing_params
    assert all(r.n_folds == 2 and len(r.fold_metrics) == 2 for r in report.runs)
    assert report.best_run_id in {r.run_id for r in report.runs}

    rows = [line for line in report.markdown.splitlines() if re.match(r"\| \d+ \|", line)]
    assert len(rows) == 2 and sum("(best)" in row for row in rows) == 1
    header = report.markdown.splitlines()[
        next(i for i, s in enumerate(report.markdown.splitlines()) if s.startswith("| # |"))
    ]
    assert "`anchors.scales`" in header and "mask_ap50" in header and "box_ap" in header
    column = header.split(" | ").index("`anchors.scales`")
    scales = sorted(ast.literal_eval(row.split(" | ")[column]) for row in rows)
    assert scales == [[16, 32, 64, 128, 256], [32, 64, 128, 256, 512]]
    assert all(re.search(r"\d\.\d{3} ± \d\.\d{3}", row) for row in rows)
    for plot in report.plots:
        assert plot.read_bytes()[:8] == PNG_MAGIC
    for run in report.runs:  # smoke: 2 epochs per fold, train and val losses logged
        assert [e for e, _ in run.loss_history["train/loss"][0]] == [1, 2]
        assert mean_curve(run.loss_history["val/loss"])[0].tolist() == [1, 2]

    # Default output folder: experiments/<name without bookseg/> under the working folder.
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bookseg",
            "report",
            "--experiment",
            smoke_sweep.experiment,
            "--tracking-uri",
            uri,
        ],
        check=False,
        cwd=sweep,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "note: experiments/shared already holds a report" in proc.stdout
    assert (sweep / "experiments" / "shared_2" / "report.md").is_file()
