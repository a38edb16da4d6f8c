"""Shared fixtures: one real smoke sweep through the CLI, reused by every test that needs MLflow runs.

Running `python -m bookseg.run` costs ~40 s per job on a 2-core CPU, so the integration, predict,
report and notebook tests read the runs of a single session-wide sweep instead of making their own.
The sweep logs to the team setup (docs/scaling.md): `make server` with its runs in PostgreSQL and its
artifacts proxied, so every test that reads the sweep also reads through a real tracking server.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# Two points train (anchors default / small); the two with cv.k=1 fail config validation, so the sweep
# also shows that failed points are recorded in MLflow and do not stop the others. The joblib launcher
# (+sweep=parallel) runs two points at a time in separate processes.
SWEEP_ARGS = (
    "-m",
    "+experiment=smoke",
    "anchors=default,small",
    "cv.k=2,1",
    "study=shared",
    "+sweep=parallel",
)
SWEEP_EXPERIMENT = "bookseg/shared"


@dataclass
class SmokeSweep:
    root: Path
    uri: str  # the tracking server's http://127.0.0.1:<port>
    stdout: str
    artifacts: Path  # where the server stores the artifacts it proxies
    store: str  # the server's PostgreSQL database (SQLAlchemy URL)
    experiment: str = SWEEP_EXPERIMENT
    parents: list = field(default_factory=list)  # FINISHED parent runs, anchors default first
    failed: list = field(default_factory=list)  # FAILED parent runs
    children: dict = field(default_factory=dict)  # parent run id -> {fold: child run}

    @property
    def images(self) -> list[Path]:
        return sorted((self.root / "cache").glob("synthetic-*/images/*.png"))

    def client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.uri)


def cli_env(root: Path, tracking_uri: str | None = None) -> dict:
    """Environment of a CLI run isolated in `root`: its own synthetic-data cache and MLflow store
    (`root`/mlflow.db unless `tracking_uri`)."""
    return {
        **os.environ,
        "MLFLOW_TRACKING_URI": tracking_uri or f"sqlite:///{root / 'mlflow.db'}",
        "BOOKSEG_CACHE": str(root / "cache"),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture(scope="session")
def smoke_sweep(tmp_path_factory):
    from tests.servers import mlflow_server, postgres

    root = tmp_path_factory.mktemp("smoke_sweep")
    with postgres(root / "postgres") as store, mlflow_server(root / "server", store) as (uri, artifacts):
        yield _run_smoke_sweep(root, uri, artifacts, store)


def _run_smoke_sweep(root: Path, uri: str, artifacts: Path, store: str) -> SmokeSweep:
    proc = subprocess.run(
        [sys.executable, "-m", "bookseg.run", *SWEEP_ARGS],
        cwd=root,
        env=cli_env(root, uri),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    sweep = SmokeSweep(root=root, uri=uri, stdout=proc.stdout, artifacts=artifacts, store=store)
    client = sweep.client()
    experiment = client.get_experiment_by_name(SWEEP_EXPERIMENT)
    assert experiment is not None, f"no runs recorded\nSTDOUT:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    sweep.parents = sorted(
        (r for r in parents if r.info.status == "FINISHED"),
        key=lambda r: r.data.params["anchors.scales"],
        reverse=True,
    )
    sweep.failed = [r for r in parents if r.info.status == "FAILED"]
    for run in runs:
        if "mlflow.parentRunId" in run.data.tags:
            parent_id, fold = run.data.tags["mlflow.parentRunId"], int(run.data.tags["fold"])
            sweep.children.setdefault(parent_id, {})[fold] = run
    assert len(sweep.parents) == 2, f"STDOUT:\n{proc.stdout[-3000:]}\nSTDERR:\n{proc.stderr[-5000:]}"
    return sweep
