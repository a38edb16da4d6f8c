"""Wall time and result of the main job, `python -m bookseg.run`, in a fresh temporary folder.

    python benchmarks/main_job.py [extra Hydra overrides...]

Prints the settings, the wall time, the CPU time and the cross-fold metrics. The target is at most
15 minutes on a 2-core CPU with a cross-fold mean mask AP@0.5 of at least 0.8 (README).
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main(overrides: list[str]) -> None:
    from mlflow.tracking import MlflowClient

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
            "BOOKSEG_CACHE": str(root / "cache"),
            "TF_CPP_MIN_LOG_LEVEL": "2",
        }
        command = [sys.executable, "-m", "bookseg.run", *overrides]
        print("command:", " ".join(command[1:]), f"| cpus: {os.cpu_count()}", flush=True)
        start = time.monotonic()
        proc = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, check=False)
        wall = time.monotonic() - start
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode:
            sys.exit(f"failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
        experiment = client.get_experiment_by_name("bookseg/default")
        parent = next(
            r
            for r in client.search_runs([experiment.experiment_id])
            if "mlflow.parentRunId" not in r.data.tags
        )
        m = parent.data.metrics
        print(
            f"wall time: {wall / 60:.1f} min   CPU time (user+sys): {(usage.ru_utime + usage.ru_stime) / 60:.1f} min"
        )
        for name in ("mask_ap50", "mask_ap", "box_ap", "mask_ap50_matterport"):
            print(f"{name}: {m[f'cv/{name}_mean']:.3f} ± {m[f'cv/{name}_std']:.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])
