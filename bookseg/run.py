"""`python -m bookseg.run`: one cross-validated experiment per Hydra job, tracked in MLflow.

    python -m bookseg.run                                  # main job: synthetic shelves, 3 folds
    python -m bookseg.run +experiment=anchors_small        # one versioned experiment (conf/experiment/)
    python -m bookseg.run -m anchors=default,small,spines  # a sweep: one MLflow parent run per point

Returns the cross-fold mean of `optimized_metric` so Hydra sweepers (Optuna) can maximise it.
"""

from __future__ import annotations

import fcntl
import sys
import traceback
from pathlib import Path

import hydra
import mlflow
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

import bookseg  # noqa: F401  (sets KERAS_BACKEND before anything imports keras)
from bookseg.config.schema import register_configs
from bookseg.config.validate import config_warnings, validate
from bookseg.tracking.hydra_callbacks import record_sweep_point
from bookseg.tracking.mlflow_runs import RunState, open_parent_run, record_failed_job, run_key, tracking_uri
from bookseg.tracking.server_check import exit_if_unreachable

register_configs()


def _overrides() -> list[str]:
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def job_directory(cfg: DictConfig, key: str) -> tuple[Path, object]:
    """Checkpoints, folds and run ids of this job, and an open lock file that holds it.

    A finished attempt (DONE) is kept and the next one used; an attempt locked by a running process
    (the same command started twice) is skipped too, so two processes never share checkpoints.
    """
    base = Path(cfg.work_dir) / key
    attempt = 0
    while True:
        job_dir = base / f"attempt{attempt}"
        if not (job_dir / "DONE").exists() and (cfg.resume or not job_dir.exists()):
            job_dir.mkdir(parents=True, exist_ok=True)
            lock = open(job_dir / "lock", "w")  # noqa: SIM115 (held until the job ends)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return job_dir, lock
            except BlockingIOError:
                lock.close()
        attempt += 1


def run(cfg: DictConfig, opened: dict) -> float:
    """The job; `opened["run_id"]` is set once the MLflow parent run exists (for failure reporting)."""
    validate(cfg)
    # Imported after validation so that `--cfg job`, `--help` and config errors do not wait for TensorFlow.
    from bookseg.experiment.cv import aggregate, cross_validate, log_config, results_table
    from bookseg.experiment.data import fingerprint, load_data, load_test_data
    from bookseg.experiment.fold import check_initial_weights
    from bookseg.inference.registry import check_registration, register_job_model

    check_initial_weights(cfg)  # model.weights resolved (downloaded once): a bad one fails before training
    for warning in config_warnings(cfg):
        print(f"WARNING: {warning}", file=sys.stderr, flush=True)

    check_registration(cfg.tracking)  # a bad tracking.register_model fails now, not after training

    dataset = load_data(cfg)
    print(dataset.report.summary() if dataset.report else "", flush=True)
    test = load_test_data(cfg, dataset)
    if test:
        print(
            f"test set: {len(test.records)} images, {test.num_instances} books from {test.source}", flush=True
        )
    data_print = fingerprint(dataset) + (f"+test:{fingerprint(test)}" if test else "")
    overrides = _overrides()
    job_dir, _lock = job_directory(cfg, run_key(cfg, data_print, overrides))
    state = RunState(job_dir)
    experiment = [o.split("=", 1)[1] for o in overrides if o.startswith("+experiment=")]
    run_name = " ".join(experiment or ["main"]) + "".join(
        f" {o}" for o in overrides if not o.startswith("+experiment=")
    )
    with open_parent_run(
        cfg,
        state,
        run_name=run_name,
        overrides=overrides,
        data_fingerprint=data_print,
        key=job_dir.parent.name,
    ) as parent:
        opened["run_id"] = parent.info.run_id
        log_config(cfg, job_dir)
        mlflow.log_dict({"class_names": dataset.class_names}, "class_names.json")  # for `bookseg predict`
        results = cross_validate(cfg, dataset, job_dir, state, test)
        summary = aggregate(results)
        mlflow.log_metrics(summary)
        table = results_table(results, summary)
        mlflow.log_text(table, "results.txt")
        registered = None  # tracking.register_model: the job's model as a servable, registered pyfunc
        if cfg.tracking.register_model:
            registered = register_job_model(
                cfg.tracking.register_model, parent.info.run_id, summary, tracking_uri(cfg)
            )
        (job_dir / "DONE").write_text(parent.info.run_id)
    print(f"\n{table}\n")
    if registered:
        uri = f"models:/{registered.name}/{registered.version}"
        print(f"Registered {uri} ({registered.tags['bookseg.source']})")
        print(f"Serve it:  mlflow models serve -m {uri} --env-manager local -p 5001")
    print(f"MLflow: parent run {parent.info.run_id} in experiment '{cfg.tracking.experiment}'")
    objective = summary.get(cfg.optimized_metric, float("nan"))
    if _in_sweep():  # the sweep's end prints one table of all points and the hint once
        record_sweep_point(
            _overrides(),
            parent.info.run_id,
            cfg.optimized_metric,
            objective,
            summary.get(cfg.optimized_metric.replace("_mean", "_std"), float("nan")),
        )
    else:
        print(f"Compare runs:  mlflow ui --backend-store-uri {tracking_uri(cfg)}")
    return objective


def _in_sweep() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    opened: dict = {}
    exit_if_unreachable(tracking_uri(cfg))  # before any data is loaded, instead of minutes of retries
    try:
        return run(cfg, opened)
    except Exception as exc:
        if not _in_sweep():
            raise
        # An exception inside the parent run marks it FAILED on exit; in a sweep, one that happens before
        # (bad config, unreadable data) still gets a FAILED run, so no point vanishes from MLflow. The
        # sweeper gets a NaN objective and goes on with the other points.
        # An Optuna trial stopped by the pruner after a fold is expected, not an error (name checked so
        # that runs outside Optuna sweeps need not import optuna).
        pruned = type(exc).__name__ == "TrialPruned"
        run_id = opened.get("run_id") or record_failed_job(cfg, _overrides(), exc)
        record_sweep_point(
            _overrides(),
            run_id,
            cfg.optimized_metric,
            float("nan"),
            float("nan"),
            error=f"pruned: {exc}" if pruned else f"{type(exc).__name__}: {exc}",
        )
        if pruned:
            print(f"trial pruned: {exc}", flush=True)
        else:
            traceback.print_exc()
        return float("nan")


if __name__ == "__main__":
    main()
