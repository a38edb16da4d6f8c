"""Run the real CLI in a subprocess, in a temporary folder with its own MLflow store and data cache."""

import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import cli_env


class CliRunner:
    def __init__(self, root: Path):
        self.root = root
        self.db = root / "mlflow.db"
        self.env = cli_env(root)

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "bookseg.run", *args]

    def run(self, *args: str, check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            self.command(*args),
            check=False,
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"exit {proc.returncode}\nSTDOUT:\n{proc.stdout[-4000:]}\nSTDERR:\n{proc.stderr[-6000:]}"
            )
        return proc

    def popen(self, *args: str) -> subprocess.Popen:
        log = open(self.root / "popen.log", "w")  # noqa: SIM115 (stays open while the child writes)
        return subprocess.Popen(
            self.command(*args), cwd=self.root, env=self.env, stdout=log, stderr=subprocess.STDOUT, text=True
        )

    def client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=f"sqlite:///{self.db}")

    def runs(self, experiment: str = "bookseg/default"):
        client = self.client()
        exp = client.get_experiment_by_name(experiment)
        assert exp is not None, f"no MLflow experiment {experiment}"
        runs = client.search_runs([exp.experiment_id], max_results=1000)
        parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
        children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
        return parents, children


@pytest.fixture
def cli(tmp_path) -> CliRunner:
    return CliRunner(tmp_path)
