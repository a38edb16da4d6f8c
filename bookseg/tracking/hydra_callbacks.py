"""Hydra callbacks run by the main process around a sweep."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

SWEEP_POINTS_ENV = "BOOKSEG_SWEEP_POINTS"  # file the sweep's jobs append their result to (JSON lines)


class PrepareTrackingStore(Callback):
    """Create the MLflow tracking store once, before parallel sweep jobs start.

    Jobs launched side by side (joblib launcher) would otherwise race to create the tables of a new
    sqlite store (all but one fail with an alembic migration error) and the study's experiment.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        from mlflow.tracking import MlflowClient

        from bookseg.tracking.mlflow_runs import tracking_uri
        from bookseg.tracking.server_check import exit_if_unreachable

        exit_if_unreachable(tracking_uri(config))
        client = MlflowClient(tracking_uri=tracking_uri(config))
        if client.get_experiment_by_name(config.tracking.experiment) is None:
            client.create_experiment(config.tracking.experiment)


def record_sweep_point(
    overrides: list[str], run_id: str | None, metric: str, mean: float, std: float, error: str | None = None
) -> None:
    """Append one sweep point's result for `SweepSummary` (no-op outside a sweep started by it).

    Jobs may run in other processes (joblib); each appends one line, which the OS keeps whole.
    """
    path = os.environ.get(SWEEP_POINTS_ENV)
    if not path:
        return
    line = json.dumps(
        {
            "overrides": " ".join(overrides),
            "run_id": run_id,
            "metric": metric,
            "mean": None if math.isnan(mean) else mean,
            "std": None if math.isnan(std) else std,
            "error": error,
        }
    )
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")


class SweepSummary(Callback):
    """At the end of a sweep, one table of every point (objective mean ± std, overrides, run) and the
    MLflow hint once, instead of one per point."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        # In the sweep's folder, not /tmp: points that run on other nodes (submitit_slurm) see it too.
        sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        handle, path = tempfile.mkstemp(prefix="bookseg-sweep-", suffix=".jsonl", dir=sweep_dir)
        os.close(handle)
        os.environ[SWEEP_POINTS_ENV] = path  # inherited by jobs in this and in launched processes

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        from bookseg.tracking.mlflow_runs import tracking_uri

        path = Path(os.environ.pop(SWEEP_POINTS_ENV, ""))
        if not path.is_file():
            return
        points = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
        path.unlink()
        print("\n" + sweep_table(points))
        print(f"Compare runs:  mlflow ui --backend-store-uri {tracking_uri(config)}", flush=True)


def sweep_table(points: list[dict]) -> str:
    """Plain-text table of sweep points, best objective first (failed points last)."""
    if not points:
        return "sweep: no point finished"
    metric = points[0]["metric"]
    ranked = sorted(points, key=lambda p: -p["mean"] if p["mean"] is not None else math.inf)
    lines = [f"sweep: {len(points)} points, {metric} (mean ± std over folds), best first", ""]
    for p in ranked:
        if p["error"]:
            value = "FAILED".ljust(15)
        elif p["mean"] is None:
            value = "nan".ljust(15)
        else:
            value = f"{p['mean']:.3f} ± {p['std']:.3f}" if p["std"] is not None else f"{p['mean']:.3f}"
            value = value.ljust(15)
        run = (p["run_id"] or "")[:8]
        lines.append(
            f"  {value}  {run:8}  {p['overrides'] or '(no overrides)'}"
            + (f"  [{p['error'][:100]}]" if p["error"] else "")
        )
    return "\n".join(lines)
