"""Services the tests start on this machine: PostgreSQL (the `pgserver` wheel) and `make server`.

Both listen only locally (PostgreSQL on a Unix socket in its data folder, MLflow on 127.0.0.1) and keep their
data in the folder they are given.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def stop_process_group(proc: subprocess.Popen, timeout: float) -> None:
    """SIGTERM the process group `proc` leads (started with start_new_session=True), SIGKILL it after `timeout` s."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def postgres(folder: Path, database: str = "mlflow"):
    """A PostgreSQL server with its data in `folder`; yields the SQLAlchemy URL of an empty `database`."""
    import pgserver

    with pgserver.get_server(folder, cleanup_mode="stop") as server:
        server.psql(f"CREATE DATABASE {database};")
        yield server.get_uri(database)


@contextlib.contextmanager
def mlflow_server(folder: Path, store: str):
    """`make server` on a free loopback port with runs in `store` and artifacts in `folder`/artifacts.

    Yields (tracking URI, artifacts folder); stops the server (make, mlflow and its worker) at the end.
    """
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    artifacts = folder / "artifacts"
    log_path = folder / "server.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [
                "make",
                "-s",
                "-C",
                str(REPO),
                "server",
                f"PYTHON={sys.executable}",
                f"PORT={port}",
                f"SERVER_STORE={store}",
                f"SERVER_ARTIFACTS={artifacts}",
            ],
            cwd=folder,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the end stops make, the server and its worker
        )
        uri = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while not _answers(uri):
                assert server.poll() is None, f"mlflow server exited:\n{log_path.read_text()[-3000:]}"
                assert time.monotonic() < deadline, f"no answer:\n{log_path.read_text()[-3000:]}"
                time.sleep(0.5)
            yield uri, artifacts
        finally:
            stop_process_group(server, timeout=20)
