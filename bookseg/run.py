"""`python -m bookseg.run`: one cross-validated experiment per Hydra job, tracked in MLflow.

    python -m bookseg.run                                  # main job: synthetic shelves, 3 folds
    python -m bookseg.run +experiment=anchors_small        # one versioned experiment (conf/experiment/)
    python -m bookseg.run -m anchors=default,small,spines  # a sweep: one MLflow parent run per point

Returns the cross-fold mean of `optimized_metric` so Hydra sweepers (Optuna) can maximise it.
"""

from __future__ import annotations

import traceback
from pathlib import Path

import hydra
import mlflow
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

import bookseg  # noqa: F401  (sets KERAS_BACKEND before anything imports keras)
from bookseg.config.schema import register_configs
from bookseg.config.validate import validate
from bookseg.experiment.cv import aggregate, cross_validate, log_config, results_table
from bookseg.experiment.data import fingerprint, load_data
from bookseg.tracking.mlflow_runs import RunState, open_parent_run, run_key, tracking_uri

register_configs()


def job_directory(cfg: DictConfig, key: str) -> Path:
    """Checkpoints, folds and run ids of this config; a finished job's folder is kept and a new one used."""
    base = Path(cfg.work_dir) / key
    attempt = 0
    while (base / f"attempt{attempt}" / "DONE").exists() or (
        not cfg.resume and (base / f"attempt{attempt}").exists()
    ):
        attempt += 1
    return base / f"attempt{attempt}"


def run(cfg: DictConfig) -> float:
    validate(cfg)
    dataset = load_data(cfg)
    print(dataset.report.summary() if dataset.report else "", flush=True)
    data_print = fingerprint(dataset)
    key = run_key(cfg, data_print)
    job_dir = job_directory(cfg, key)
    job_dir.mkdir(parents=True, exist_ok=True)
    state = RunState(job_dir)
    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    name = "+".join(o.split("=", 1)[1] for o in overrides if o.startswith("+experiment=")) or "main"
    run_name = f"{name} " + " ".join(o for o in overrides if not o.startswith("+experiment=")).strip()
    with open_parent_run(cfg, state, run_name=run_name.strip(), overrides=overrides,
                         data_fingerprint=data_print, key=key) as parent:
        log_config(cfg, job_dir)
        results = cross_validate(cfg, dataset, job_dir, state)
        summary = aggregate(results)
        mlflow.log_metrics(summary)
        table = results_table(results, summary)
        mlflow.log_text(table, "results.txt")
        (job_dir / "DONE").write_text(parent.info.run_id)
    print(f"\n{table}\n")
    print(f"MLflow: parent run {parent.info.run_id} in experiment '{cfg.tracking.experiment}'")
    print(f"Compare runs:  mlflow ui --backend-store-uri {tracking_uri(cfg)}   (or: make ui)")
    return summary.get(cfg.optimized_metric, float("nan"))


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    try:
        return run(cfg)
    except Exception:
        # In a sweep one failed point must not stop the others: the MLflow run is already marked
        # FAILED by the context manager; report and hand the sweeper a NaN objective.
        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            traceback.print_exc()
            return float("nan")
        raise


if __name__ == "__main__":
    main()
