"""`bookseg report`: compare the cross-validated runs of an MLflow experiment in the repository.

Reads the parent runs (one per Hydra job; their fold runs carry the `mlflow.parentRunId` tag) of an
experiment, or the parent runs given by id, and writes into one folder:

* `report.md`: one row per finished parent run with the config keys that differ between the runs,
  mean ± std across folds of every `cv/<metric>_mean` / `cv/<metric>_std`, the number of folds, and the
  best run (highest `cv/mask_ap50_mean`) in bold; runs that did not finish are listed below the table;
* `metrics.png`: each metric per run, mean ± std with every fold's value as a point;
* `loss_curves.png`: `train/loss` and `val/loss` per epoch, averaged over each run's folds.

An existing report is never replaced silently: without `overwrite` a new folder (`<out>_2`, ...) is used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from bookseg.analysis.report_markdown import format_mean_std, markdown_table, render_report
from bookseg.analysis.report_plots import plot_loss_curves, plot_metrics
from bookseg.analysis.report_runs import (
    LOSS_KEYS,
    ComparedRun,
    SkippedRun,
    best_run,
    collect_runs,
    differing_params,
    metric_names,
)

__all__ = ["Report", "build_report", "default_out", "format_mean_std", "markdown_table"]

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"  # as bookseg.tracking.mlflow_runs (the runner's default)


@dataclass
class Report:
    """What `build_report` wrote.

    Attributes:
        folder: the output folder.
        markdown: text of report.md.
        runs: compared runs, in table order (start time).
        skipped: parent runs not compared.
        differing_params: config keys whose values differ between compared runs (table columns).
        metrics: metric names in table order (without the `cv/` prefix and `_mean` suffix).
        best_run_id: compared run with the highest `cv/mask_ap50_mean` (None if no run has it).
        plots: paths of the written plots.
        note: set when `folder` is not the requested one (that one already held a report).
    """

    folder: Path
    markdown: str
    runs: list[ComparedRun]
    skipped: list[SkippedRun]
    differing_params: list[str]
    metrics: list[str]
    best_run_id: str | None
    plots: list[Path]
    note: str = ""


def _free_folder(out: Path, overwrite: bool) -> Path:
    if overwrite or not (out / "report.md").exists():
        return out
    n = 2
    while (out.parent / f"{out.name}_{n}" / "report.md").exists():
        n += 1
    return out.parent / f"{out.name}_{n}"


def default_out(experiment_name: str) -> Path:
    """experiments/<experiment name without its 'bookseg/' prefix> (relative to the working folder)."""
    name = experiment_name.removeprefix("bookseg/").replace("/", "_")
    return Path("experiments") / name


def build_report(
    experiment: str | None = None,
    runs=None,
    tracking_uri: str | None = None,
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> Report:
    """Write report.md and the plots for an experiment's parent runs (or the given parent run ids).

    Args:
        experiment: MLflow experiment name (default `bookseg/default`); ignored when `runs` is given.
        runs: parent run ids to compare instead of a whole experiment.
        tracking_uri: MLflow store; default $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db.
        out: output folder; default `default_out(experiment name)`. When it already holds a report
            and `overwrite` is False, `<out>_2` (or the next free number) is used instead.
        overwrite: replace an existing report in `out`.

    Returns:
        `Report`.

    Raises:
        ValueError: unknown experiment or run, a fold run id, or no finished run to compare.
    """
    from mlflow.tracking import MlflowClient

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    client = MlflowClient(tracking_uri=uri)
    name, compared, skipped = collect_runs(client, experiment, runs)
    if not compared:
        listed = "; ".join(f"{s.name} ({s.status})" for s in skipped) or "none"
        raise ValueError(f"experiment {name!r}: no finished parent run to compare (other runs: {listed})")
    requested = Path(out) if out is not None else default_out(name)
    folder = _free_folder(requested, overwrite)
    note = (
        ""
        if folder == requested
        else (f"{requested} already holds a report: wrote {folder} instead (--overwrite replaces it)")
    )
    folder.mkdir(parents=True, exist_ok=True)

    params = differing_params(compared)
    metrics = metric_names(compared)
    best = best_run(compared)
    labels = [f"{i}: {r.name}" for i, r in enumerate(compared, 1)]
    plots = [
        plot_metrics(compared, metrics, labels, folder / "metrics.png", best),
        plot_loss_curves(compared, labels, LOSS_KEYS, folder / "loss_curves.png"),
    ]
    markdown = render_report(name, uri, compared, skipped, params, metrics, best, plots)
    (folder / "report.md").write_text(markdown)
    return Report(folder, markdown, compared, skipped, params, metrics, best, plots, note)
