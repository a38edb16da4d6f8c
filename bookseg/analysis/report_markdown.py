"""Markdown of `bookseg report`: the comparison table and the report page."""

from __future__ import annotations

import datetime
import math

from bookseg.analysis.report_runs import BEST_METRIC, ComparedRun


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


def render_report(name, uri, runs, skipped, params, metrics, best, plots) -> str:
    """The whole report.md: title, table, best run, run ids, runs not compared, plot links.

    Args:
        name, uri: experiment name and tracking URI (shown in the header).
        runs, skipped: `ComparedRun`s in table order and `SkippedRun`s.
        params, metrics: differing param keys and metric names (table columns).
        best: run id of the best run, or None.
        plots: plot paths, linked by file name (they sit next to report.md).
    """
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
