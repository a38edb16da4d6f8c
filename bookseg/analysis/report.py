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

import datetime
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from bookseg.analysis.report_plots import plot_loss_curves, plot_metrics

DEFAULT_EXPERIMENT = "bookseg/default"
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"  # as bookseg.tracking.mlflow_runs (the runner's default)
BEST_METRIC = "mask_ap50"
# Shown first, in this order; other `cv/<name>_mean` metrics follow alphabetically.
METRIC_ORDER = ("mask_ap50", "mask_ap", "mask_ap75", "box_ap50", "box_ap", "box_ap75", "mask_ap50_matterport")
LOSS_KEYS = ("train/loss", "val/loss")
# Params that never change what is trained (where results go, how much is logged): not config differences.
IGNORED_PARAM_PREFIXES = ("tracking.", "resume", "work_dir", "data.cache_dir")
PARENT_TAG = "mlflow.parentRunId"


@dataclass
class ComparedRun:
    """One finished parent run and what its folds logged.

    Attributes:
        run_id, name: MLflow run id and run name.
        params: the parent's params (flattened resolved config).
        summary: `cv/...` metrics of the parent (latest values).
        fold_metrics: per fold run (sorted by its `fold` tag): final metrics of that fold.
        loss_history: key in `LOSS_KEYS` -> per fold run, list of (epoch, value).
    """

    run_id: str
    name: str
    params: dict[str, str]
    summary: dict[str, float]
    fold_metrics: list[dict[str, float]] = field(default_factory=list)
    loss_history: dict[str, list[list[tuple[int, float]]]] = field(default_factory=dict)

    @property
    def n_folds(self) -> int:
        n = self.summary.get("cv/n_folds")
        return int(n) if n is not None and math.isfinite(n) else len(self.fold_metrics)

    def mean_std(self, metric: str) -> tuple[float, float]:
        return (
            self.summary.get(f"cv/{metric}_mean", math.nan),
            self.summary.get(f"cv/{metric}_std", math.nan),
        )


@dataclass
class SkippedRun:
    """A parent run left out of the comparison (not FINISHED)."""

    run_id: str
    name: str
    status: str
    error: str = ""


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


def _all_runs(client, experiment_ids: list[str]):
    runs, token = [], None
    while True:
        page = client.search_runs(
            experiment_ids, max_results=1000, page_token=token, order_by=["start_time ASC"]
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _run_name(run) -> str:
    return run.info.run_name or run.data.tags.get("mlflow.runName") or run.info.run_id[:8]


def _load_children(client, parent, children) -> tuple[list[dict[str, float]], dict]:
    ordered = sorted(children, key=lambda c: (c.data.tags.get("fold", ""), c.info.start_time or 0))
    fold_metrics = [dict(c.data.metrics) for c in ordered]
    history = {
        key: [[(m.step, m.value) for m in client.get_metric_history(c.info.run_id, key)] for c in ordered]
        for key in LOSS_KEYS
    }
    return fold_metrics, history


def collect_runs(client, experiment: str | None = None, run_ids=None):
    """Parent runs to compare, and the ones left out.

    Args:
        client: `mlflow.tracking.MlflowClient`.
        experiment: experiment name (used when `run_ids` is None).
        run_ids: parent run ids, compared in this order.

    Returns:
        (experiment name, [ComparedRun], [SkippedRun]).

    Raises:
        ValueError: unknown experiment (the message lists the existing ones), a run id that is a fold
            (child) run, or an unknown run id.
    """
    from mlflow.exceptions import MlflowException

    if run_ids:
        parents = []
        for run_id in run_ids:
            try:
                run = client.get_run(run_id)
            except MlflowException as error:
                raise ValueError(f"run {run_id}: not found in the tracking store ({error})") from error
            if PARENT_TAG in run.data.tags:
                raise ValueError(
                    f"run {run_id} ({_run_name(run)}) is a fold run of parent {run.data.tags[PARENT_TAG]}: "
                    "give parent run ids"
                )
            parents.append(run)
        name = client.get_experiment(parents[0].info.experiment_id).name
        experiment_ids = sorted({p.info.experiment_id for p in parents})
        all_runs = _all_runs(client, experiment_ids)
    else:
        name = experiment or DEFAULT_EXPERIMENT
        found = client.get_experiment_by_name(name)
        if found is None:
            names = sorted(e.name for e in client.search_experiments())
            raise ValueError(f"no MLflow experiment {name!r}; the store has: {', '.join(names) or '(none)'}")
        all_runs = _all_runs(client, [found.experiment_id])
        parents = [r for r in all_runs if PARENT_TAG not in r.data.tags]
    children: dict[str, list] = {}
    for run in all_runs:
        if PARENT_TAG in run.data.tags:
            children.setdefault(run.data.tags[PARENT_TAG], []).append(run)

    compared, skipped = [], []
    for run in parents:
        if run.info.status != "FINISHED":
            skipped.append(
                SkippedRun(
                    run.info.run_id, _run_name(run), run.info.status, run.data.tags.get("bookseg.error", "")
                )
            )
            continue
        fold_metrics, history = _load_children(client, run, children.get(run.info.run_id, []))
        summary = {k: v for k, v in run.data.metrics.items() if k.startswith("cv/")}
        compared.append(
            ComparedRun(
                run.info.run_id, _run_name(run), dict(run.data.params), summary, fold_metrics, history
            )
        )
    return name, compared, skipped


def differing_params(runs: list[ComparedRun]) -> list[str]:
    """Param keys whose value differs between the runs (missing counts as a value), sorted."""
    keys = sorted({k for r in runs for k in r.params if not k.startswith(IGNORED_PARAM_PREFIXES)})
    return [k for k in keys if len({r.params.get(k) for r in runs}) > 1]


def metric_names(runs: list[ComparedRun]) -> list[str]:
    """Metrics with a `cv/<name>_mean` on any run: `METRIC_ORDER` first, then the rest sorted."""
    found = {k[3:-5] for r in runs for k in r.summary if k.endswith("_mean")}
    return [m for m in METRIC_ORDER if m in found] + sorted(found - set(METRIC_ORDER))


def best_run(runs: list[ComparedRun], metric: str = BEST_METRIC) -> str | None:
    """Run id with the highest finite `cv/<metric>_mean` (first on ties), or None."""
    scored = [(r.mean_std(metric)[0], -i, r.run_id) for i, r in enumerate(runs)]
    scored = [s for s in scored if math.isfinite(s[0])]
    return max(scored)[2] if scored else None


def format_mean_std(mean: float, std: float, digits: int = 3) -> str:
    """'0.512 ± 0.034'; a missing std gives '0.512'; a missing mean '—'."""
    if mean is None or not math.isfinite(mean):
        return "—"
    if std is None or not math.isfinite(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _cell(text) -> str:
    return "—" if text is None else str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(runs: list[ComparedRun], params: list[str], metrics: list[str], best: str | None) -> str:
    """The comparison table: #, run, differing params, folds, one mean ± std column per metric."""
    header = ["#", "run", *[f"`{p}`" for p in params], "folds", *metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for i, run in enumerate(runs, 1):
        is_best = run.run_id == best
        name = f"**{_cell(run.name)}** (best)" if is_best else _cell(run.name)
        values = [format_mean_std(*run.mean_std(m)) for m in metrics]
        if is_best and BEST_METRIC in metrics:
            k = metrics.index(BEST_METRIC)
            values[k] = f"**{values[k]}**"
        row = [str(i), name, *[_cell(run.params.get(p)) for p in params], str(run.n_folds), *values]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


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
    markdown = _markdown(name, uri, compared, skipped, params, metrics, best, plots)
    (folder / "report.md").write_text(markdown)
    return Report(folder, markdown, compared, skipped, params, metrics, best, plots, note)


def _markdown(name, uri, runs, skipped, params, metrics, best, plots) -> str:
    best_run_ = next((r for r in runs if r.run_id == best), None)
    lines = [
        f"# {name}: {len(runs)} run{'s' if len(runs) != 1 else ''} compared",
        "",
        (
            f"MLflow experiment `{name}` in `{uri}`, read {datetime.datetime.now():%Y-%m-%d %H:%M}. "
            f"Each cell is the mean ± std across folds (`cv/<metric>_mean` / `_std` of the parent run)."
        ),
        "Columns in `code` are the config keys whose values differ between the runs.",
        "",
        markdown_table(runs, params, metrics, best),
        "",
    ]
    if best_run_ is not None:
        mean, std = best_run_.mean_std(BEST_METRIC)
        lines.append(
            f"Best by {BEST_METRIC}: **{best_run_.name}** ({format_mean_std(mean, std)}), "
            f"run `{best_run_.run_id}`."
        )
    else:
        lines.append(f"No run has `cv/{BEST_METRIC}_mean`: no best run marked.")
    if len(runs) == 1:
        lines += ["", "Only one finished run: there is nothing to compare it with."]
    elif not params:
        lines += ["", "The runs' configs do not differ (same params): the rows are repeats."]
    lines += ["", "## Runs", ""]
    lines += [
        f"{i}. {_cell(r.name)}: `{r.run_id}`, {len(r.fold_metrics)} fold runs" for i, r in enumerate(runs, 1)
    ]
    if skipped:
        lines += ["", "## Not compared (not finished)", ""]
        lines += [
            f"- {_cell(s.name)}: `{s.run_id}`, {s.status}" + (f": {_cell(s.error)}" if s.error else "")
            for s in skipped
        ]
    lines += ["", "## Plots", ""]
    lines += [f"![{p.stem}]({p.name})" for p in plots]
    return "\n".join(lines) + "\n"


def run_report_command(args) -> int:
    """`bookseg report` handler: build the report and print where it went."""
    import sys

    try:
        report = build_report(
            experiment=args.experiment,
            runs=args.runs,
            tracking_uri=args.tracking_uri,
            out=args.out,
            overwrite=args.overwrite,
        )
    except ValueError as error:
        print(f"bookseg report: error: {error}", file=sys.stderr)
        return 2
    print(report.markdown)
    if report.note:
        print(f"note: {report.note}")
    print(
        f"report written to {report.folder / 'report.md'} (plots: {', '.join(p.name for p in report.plots)})"
    )
    return 0
