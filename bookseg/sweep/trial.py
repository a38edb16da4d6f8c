"""Job side of an Optuna sweep: the job's trial, each fold's metric as an intermediate value, pruning.

The sweeper (hydra_plugins/bookseg_optuna_sweeper) gives each job it launches the hidden overrides
`hydra.sweeper.trial=<number>`, `hydra.sweeper.storage=<absolute URL>` and `hydra.sweeper.study_name=...`,
so a job finds its trial in the shared Optuna storage from any process or machine the launcher put it on.
`bookseg.experiment.cv.cross_validate` calls `sweep_trial(cfg)` once (with the MLflow parent run active)
and `fold_done` after each fold; outside such a sweep both do nothing.
"""

from __future__ import annotations

import json
import math
import sys

import mlflow
from omegaconf import DictConfig

SWEEPER_TARGET = "hydra_plugins.bookseg_optuna_sweeper.sweeper.BooksegOptunaSweeper"

# Optuna user attributes of a trial, written by the job and read by the sweeper.
RUN_ID_ATTR = "mlflow_run_id"
TRACKING_URI_ATTR = "mlflow_tracking_uri"
PRUNED_ATTR = "pruned_after_fold"

# MLflow tags on the trial's parent run.
TAG_STUDY = "optuna.study"
TAG_TRIAL = "optuna.trial"
TAG_PARAMS = "optuna.params"
TAG_STATE = "optuna.state"
TAG_VALUE = "optuna.value"
TAG_RETRY_OF = "optuna.retry_of"
TAG_PRUNED_AFTER = "optuna.pruned_after_fold"


def fold_metric_name(optimized_metric: str) -> str | None:
    """The per-fold metric behind a cross-fold objective: `cv/mask_ap50_mean` -> `mask_ap50`.

    A `_std` objective has no per-fold value: None (nothing is reported, no trial is pruned).
    """
    if optimized_metric.startswith("cv/") and optimized_metric.endswith("_mean"):
        return optimized_metric[len("cv/") : -len("_mean")]
    return None


def storage_for_jobs(url: str):
    """An Optuna RDB storage on `url`; sqlite waits for the lock (several processes share the file)."""
    from optuna.storages import RDBStorage

    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    return RDBStorage(url, engine_kwargs=engine_kwargs)


class NoTrial:
    """Not in an Optuna sweep of bookseg's sweeper: nothing to report."""

    number = None

    def fold_done(self, step: int, metrics: dict, last: bool) -> None:
        return None


class TrialReporter:
    """The running job's Optuna trial: tags its MLflow parent run, reports folds, prunes."""

    def __init__(self, sweeper: DictConfig, optimized_metric: str):
        import optuna
        from hydra.utils import instantiate

        self.number = int(sweeper.trial)
        self.metric = fold_metric_name(optimized_metric)
        storage = storage_for_jobs(sweeper.storage)
        pruner = instantiate(sweeper.pruner) if sweeper.get("pruner") else optuna.pruners.NopPruner()
        self.study = optuna.load_study(
            study_name=sweeper.study_name,
            storage=storage,
            pruner=pruner,
            sampler=optuna.samplers.RandomSampler(seed=0),  # never samples here: params are fixed
        )
        study_id = storage.get_study_id_from_name(sweeper.study_name)
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, self.number)
        self.trial = optuna.trial.Trial(self.study, trial_id)
        run = mlflow.active_run()
        self.trial.set_user_attr(TRACKING_URI_ATTR, mlflow.get_tracking_uri())
        if run is not None:
            self.trial.set_user_attr(RUN_ID_ATTR, run.info.run_id)
            frozen = storage.get_trial(trial_id)
            tags = {
                TAG_STUDY: sweeper.study_name,
                TAG_TRIAL: str(self.number),
                TAG_PARAMS: json.dumps(frozen.params, sort_keys=True),
                TAG_STATE: "RUNNING",
            }
            if "failed_trial" in frozen.system_attrs:
                tags[TAG_RETRY_OF] = str(frozen.system_attrs["retry_history"][-1])
            mlflow.set_tags(tags)
        if self.metric is None:
            print(
                f"Optuna trial {self.number}: {optimized_metric} has no per-fold value; folds are not "
                "reported and the trial is not pruned",
                file=sys.stderr,
                flush=True,
            )

    def fold_done(self, step: int, metrics: dict, last: bool) -> None:
        """Report fold number `step` (its position among the job's folds); prune unless it was the last.

        Raises `optuna.TrialPruned` after marking the trial (user attribute `pruned_after_fold`) and the
        MLflow parent run (tag `optuna.state=PRUNED`); the sweeper then tells Optuna PRUNED and sets the
        run's status to KILLED.
        """
        import optuna

        value = metrics.get(self.metric) if self.metric else None
        if value is None or not math.isfinite(value):
            return  # undefined on this fold (no book in its validation images): nothing to compare
        self.trial.report(float(value), step)
        if last or not self.trial.should_prune():
            return
        self.trial.set_user_attr(PRUNED_ATTR, step)
        if mlflow.active_run() is not None:
            mlflow.set_tags({TAG_STATE: "PRUNED", TAG_PRUNED_AFTER: str(step)})
        message = (
            f"Optuna trial {self.number} pruned after fold {step}: {self.metric}={value:.4f} "
            f"is not promising against the other trials at that fold"
        )
        print(message, flush=True)
        raise optuna.TrialPruned(message)


def sweep_trial(cfg: DictConfig):
    """The job's Optuna trial when bookseg's sweeper launched it, else a `NoTrial` that does nothing."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return NoTrial()
    sweeper = HydraConfig.get().get("sweeper")
    if sweeper is None or sweeper.get("_target_") != SWEEPER_TARGET or sweeper.get("trial") is None:
        return NoTrial()
    return TrialReporter(sweeper, cfg.optimized_metric)
