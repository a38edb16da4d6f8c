"""Structured config of the sweeper and its sampler / pruner options, registered in Hydra's ConfigStore.

hydra/sweeper: bookseg_optuna
hydra/sweeper/sampler: tpe (default), random, cmaes, qmc
hydra/sweeper/pruner: median (default), successive_halving, hyperband, nop
"""

# OmegaConf structured configs need typing.Optional / List / Dict, not `X | None` and builtins.
# ruff: noqa: UP006, UP035, UP045

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore


@dataclass
class BooksegOptunaSweeperConf:
    _target_: str = "hydra_plugins.bookseg_optuna_sweeper.sweeper.BooksegOptunaSweeper"
    _recursive_: bool = False  # the sweeper builds sampler and pruner itself (a seed per trial)
    defaults: List[Any] = field(default_factory=lambda: ["_self_", {"sampler": "tpe"}, {"pruner": "median"}])

    sampler: Any = None  # `_target_` + arguments of an optuna.samplers class
    pruner: Any = None  # `_target_` + arguments of an optuna.pruners class; each fold is one step
    direction: str = "maximize"  # of the value the task returns (bookseg: optimized_metric)
    study_name: str = "bookseg"
    # Optuna RDB storage URL: the study lives there, so the same command started again continues it and
    # workers on several machines share it. A relative sqlite path is taken from the current folder.
    storage: str = "sqlite:///optuna.db"
    n_trials: int = 8  # trials in the study, over all runs and workers (not per command)
    n_jobs: int = 1  # trials launched at a time by this worker (with a parallel launcher)
    params: Dict[str, str] = field(default_factory=dict)  # search space, Hydra sweep syntax
    enqueue_trials: List[Dict[str, Any]] = field(default_factory=list)  # params to try first (once)
    heartbeat_interval: Optional[int] = 60  # seconds; a worker's running trials beat this often
    grace_period: Optional[int] = 180  # seconds without a beat before a trial is failed and re-queued
    max_retry: Optional[int] = 3  # re-queues of one trial whose worker died
    wait_for_running: bool = True  # budget claimed: wait for other workers' trials (retries) before ending
    trial: Optional[int] = None  # set by the sweeper for each job it launches (its trial number)


TPE = {"_target_": "optuna.samplers.TPESampler", "seed": None, "n_startup_trials": 10, "multivariate": False}
RANDOM = {"_target_": "optuna.samplers.RandomSampler", "seed": None}
CMAES = {"_target_": "optuna.samplers.CmaEsSampler", "seed": None, "n_startup_trials": 1}
QMC = {"_target_": "optuna.samplers.QMCSampler", "seed": None, "qmc_type": "sobol", "scramble": True}

# Median rule: after fold k, stop a trial whose fold-k metric is worse than the median of the earlier trials
# at fold k, once `n_startup_trials` trials have finished (Optuna's default is 5; 3 suits budgets of ~8 trials).
MEDIAN = {
    "_target_": "optuna.pruners.MedianPruner",
    "n_startup_trials": 3,
    "n_warmup_steps": 0,
    "n_min_trials": 1,
}
SUCCESSIVE_HALVING = {
    "_target_": "optuna.pruners.SuccessiveHalvingPruner",
    "min_resource": 1,
    "reduction_factor": 3,
    "min_early_stopping_rate": 0,
}
HYPERBAND = {
    "_target_": "optuna.pruners.HyperbandPruner",
    "min_resource": 1,
    "max_resource": "auto",
    "reduction_factor": 3,
}
NOP = {"_target_": "optuna.pruners.NopPruner"}

store = ConfigStore.instance()
store.store(group="hydra/sweeper", name="bookseg_optuna", node=BooksegOptunaSweeperConf, provider="bookseg")
for name, node in {"tpe": TPE, "random": RANDOM, "cmaes": CMAES, "qmc": QMC}.items():
    store.store(group="hydra/sweeper/sampler", name=name, node=node, provider="bookseg")
for name, node in {
    "median": MEDIAN,
    "successive_halving": SUCCESSIVE_HALVING,
    "hyperband": HYPERBAND,
    "nop": NOP,
}.items():
    store.store(group="hydra/sweeper/pruner", name=name, node=node, provider="bookseg")
