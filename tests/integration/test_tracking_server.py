"""The team setup: runs logged to a real `mlflow server` (started with `make server`: sqlite backend, proxied
artifacts) over HTTP, and a server that is down failing the job in seconds with one line."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.integration.conftest import stop_process_group

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture
def tracking_server(tmp_path):
    """`make server` on a free loopback port, its database and artifacts in tmp_path; yields (uri, folder)."""
    root = tmp_path / "server"
    root.mkdir()
    port = _free_port()
    artifacts = root / "artifacts"
    log = open(root / "server.log", "w")  # noqa: SIM115 (open while the server writes)
    server = subprocess.Popen(
        [
            "make",
            "-s",
            "-C",
            str(REPO),
            "server",
            f"PYTHON={sys.executable}",
            f"PORT={port}",
            f"SERVER_STORE=sqlite:///{root / 'mlflow.db'}",
            f"SERVER_ARTIFACTS={artifacts}",
        ],
        cwd=root,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: teardown stops make, the server and its worker
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while not _answers(uri):
            assert server.poll() is None, (
                f"mlflow server exited:\n{(root / 'server.log').read_text()[-3000:]}"
            )
            assert time.monotonic() < deadline, f"no answer:\n{(root / 'server.log').read_text()[-3000:]}"
            time.sleep(0.5)
        yield uri, artifacts
    finally:
        stop_process_group(server, timeout=20)
        log.close()


def test_smoke_experiment_logs_runs_metrics_and_artifacts_to_a_tracking_server(
    cli, tracking_server, tmp_path
):
    uri, artifacts = tracking_server
    cli.env["MLFLOW_TRACKING_URI"] = uri
    proc = cli.run("+experiment=smoke")
    assert "not reachable" not in proc.stdout + proc.stderr
    assert not cli.db.exists() and not (cli.root / "mlruns").exists()  # nothing went to a local store

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("bookseg/default")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.info.artifact_uri.startswith("mlflow-artifacts:/")  # proxied: clients never see the folder
    assert 0.0 <= parent.data.metrics["cv/mask_ap50_mean"] <= 1.0
    assert parent.data.params["tags"] == '["smoke"]'
    assert {"config.yaml", "results.txt", "folds.json"} <= {
        a.path for a in client.list_artifacts(parent.info.run_id)
    }

    children = {
        r.data.tags["fold"]: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
    }
    assert {"0", "1"} <= children.keys()
    download = tmp_path / "download"
    for fold in ("0", "1"):
        child = children[fold]
        assert child.info.status == "FINISHED"
        assert 0.0 <= child.data.metrics["mask_ap50"] <= 1.0
        assert [m.step for m in client.get_metric_history(child.info.run_id, "train/loss")] == [1, 2]
        weights = [a.path for a in client.list_artifacts(child.info.run_id, "weights")]
        overlays = [a.path for a in client.list_artifacts(child.info.run_id, "overlays")]
        assert len(weights) == 1 and weights[0].endswith(".weights.h5")
        assert overlays and all(p.endswith(".jpg") for p in overlays)
        # Downloaded through the server's artifact proxy, byte for byte what it stored in its folder.
        for path, magic in ((weights[0], b"\x89HDF\r\n\x1a\n"), (overlays[0], b"\xff\xd8")):
            local = Path(client.download_artifacts(child.info.run_id, path, str(download / fold)))
            assert local.read_bytes().startswith(magic), path
            stored = list(artifacts.rglob(f"{child.info.run_id}/artifacts/{path}"))
            assert len(stored) == 1 and stored[0].read_bytes() == local.read_bytes(), path


def test_an_unreachable_tracking_server_fails_in_seconds_with_one_line(cli):
    with socket.socket() as closed:  # bound but not listening: connections are refused, no one else gets it
        closed.bind(("127.0.0.1", 0))
        uri = f"http://127.0.0.1:{closed.getsockname()[1]}"
        cli.env["MLFLOW_TRACKING_URI"] = uri
        start = time.monotonic()
        proc = cli.run("+experiment=smoke", check=False, timeout=120)
        elapsed = time.monotonic() - start
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-3000:]
    assert elapsed < 30, (elapsed, output[-3000:])
    lines = [line for line in proc.stderr.splitlines() if "not reachable" in line]
    assert len(lines) == 1, output[-3000:]
    assert lines[0].startswith(f"error: MLflow tracking server {uri} is not reachable (")
    assert "Connection refused" in lines[0]
    assert "`make server`" in lines[0] and "unset MLFLOW_TRACKING_URI" in lines[0]
    assert "Traceback" not in output
    # Stopped before any data was made or any store was opened.
    assert not (cli.root / "cache").exists() and not cli.db.exists()
