"""The runs `bookseg report` compares: finished parent runs of an MLflow experiment with their folds.

A parent run is one Hydra job (params: the flattened resolved config; metrics: `cv/<metric>_mean` /
`_std` / `cv/n_folds`); its fold runs carry the `mlflow.parentRunId` tag and log the fold's metrics and
per-epoch `train/loss` / `val/loss`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from bookseg.tracking import FINAL

DEFAULT_EXPERIMENT = "bookseg/default"
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


def _load_children(client, children) -> tuple[list[dict[str, float]], dict]:
    folds = [c for c in children if c.data.tags.get("fold") != FINAL]  # the final model has no fold metrics
    ordered = sorted(folds, key=lambda c: (c.data.tags.get("fold", ""), c.info.start_time or 0))
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
        fold_metrics, history = _load_children(client, children.get(run.info.run_id, []))
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
