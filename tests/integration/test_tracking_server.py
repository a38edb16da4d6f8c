"""The team setup: runs logged over HTTP to a real `mlflow server` (`make server` with PostgreSQL as its store and
proxied artifacts), and a server that is down failing the job in seconds with one line."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import sqlalchemy


def test_the_shared_sweep_reached_postgresql_and_the_artifact_proxy_through_the_server(smoke_sweep, tmp_path):
    """The session's 2-point parallel smoke sweep (tests/conftest.py) logged only to `make server`."""
    root, client = smoke_sweep.root, smoke_sweep.client()
    assert (
        not (root / "mlflow.db").exists() and not (root / "mlruns").exists()
    )  # nothing went to a local store
    assert "not reachable" not in smoke_sweep.stdout

    # Every run the REST API lists is a row of the server's PostgreSQL database.
    experiment = client.get_experiment_by_name(smoke_sweep.experiment)
    listed = {r.info.run_id for r in client.search_runs([experiment.experiment_id], max_results=1000)}
    engine = sqlalchemy.create_engine(smoke_sweep.store)
    with engine.connect() as db:
        stored = {row[0] for row in db.execute(sqlalchemy.text("SELECT run_uuid FROM runs"))}
    engine.dispose()
    assert len(listed) == 8 and listed == stored  # 2 finished points with 2 folds each, 2 failed points

    download = tmp_path / "download"
    for parent in smoke_sweep.parents:
        assert parent.info.artifact_uri.startswith(
            "mlflow-artifacts:/"
        )  # proxied: clients never see the folder
        for fold, child in smoke_sweep.children[parent.info.run_id].items():
            weights = [a.path for a in client.list_artifacts(child.info.run_id, "weights")]
            overlays = [a.path for a in client.list_artifacts(child.info.run_id, "overlays")]
            assert len(weights) == 1 and weights[0].endswith(".weights.h5")
            assert overlays and all(p.endswith(".jpg") for p in overlays)
            # Downloaded through the server's artifact proxy, byte for byte what it stored in its folder.
            for path, magic in ((weights[0], b"\x89HDF\r\n\x1a\n"), (overlays[0], b"\xff\xd8")):
                local = Path(client.download_artifacts(child.info.run_id, path, str(download / str(fold))))
                assert local.read_bytes().startswith(magic), path
                stored_file = list(smoke_sweep.artifacts.rglob(f"{child.info.run_id}/artifacts/{path}"))
                assert len(stored_file) == 1 and stored_file[0].read_bytes() == local.read_bytes(), path


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
