"""A stand-in for `python -m bookseg.run` in the sweeper's tests: the same sweeper, storage and job-side
trial (`bookseg.sweep.trial.sweep_trial`, as `cross_validate` calls it), with folds that sleep instead of
training, so a study of several trials takes seconds.

Each "fold" scores QUALITY[quality] + 0.1 * x, writes `<log_dir>/trial<N>_fold<k>` and reports itself;
like `bookseg.run` inside a sweep, an exception (a pruned trial too) fails the MLflow parent run and the
job returns NaN. `barrier=N` makes each job wait until jobs of N different processes have started;
`hold_trial=N` keeps trial N running after its first fold until its process is killed (or 300 s pass).
"""

from __future__ import annotations

import math
import os
import time
import traceback
from pathlib import Path

import hydra
import mlflow
from omegaconf import DictConfig

from bookseg.sweep.trial import sweep_trial

QUALITY = {"good": 0.8, "fair": 0.6, "hopeless": 0.05}


def _wait_for_processes(log_dir: Path, count: int, timeout: float = 120.0) -> None:
    (log_dir / f"pid{os.getpid()}").touch()
    deadline = time.monotonic() + timeout
    while len(list(log_dir.glob("pid*"))) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(list(log_dir.glob('pid*')))} of {count} workers started")
        time.sleep(0.1)


@hydra.main(config_path="conf", config_name="fake_job", version_base="1.3")
def main(cfg: DictConfig) -> float:
    log_dir = Path(cfg.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(cfg.tracking_uri)
    mlflow.set_experiment("sweep-tests")
    try:
        with mlflow.start_run():
            trial = sweep_trial(cfg)
            if cfg.barrier:
                _wait_for_processes(log_dir, cfg.barrier)
            values = []
            for step in range(cfg.folds):
                time.sleep(cfg.fold_seconds)
                values.append(QUALITY[cfg.quality] + 0.1 * cfg.x)
                (log_dir / f"trial{trial.number}_fold{step}").write_text(str(os.getpid()))
                trial.fold_done(step, {"mask_ap50": values[-1]}, last=step == cfg.folds - 1)
                if trial.number == cfg.hold_trial:
                    time.sleep(300)
                    raise TimeoutError(f"trial {trial.number} was held 300 s and never killed")
            mlflow.log_metric("cv/mask_ap50_mean", sum(values) / len(values))
            return sum(values) / len(values)
    except Exception:  # noqa: BLE001 - as bookseg.run in a sweep: the point fails, the sweep goes on
        traceback.print_exc()
        return math.nan


if __name__ == "__main__":
    main()
