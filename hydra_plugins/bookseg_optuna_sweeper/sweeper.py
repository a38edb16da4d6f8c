"""The Hydra `Sweeper`: parses the search space, then runs the shared study (bookseg/sweep/study.py)."""

from __future__ import annotations

from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.bookseg_optuna_sweeper.config import BooksegOptunaSweeperConf  # noqa: F401 (registers)


class BooksegOptunaSweeper(Sweeper):
    def __init__(
        self,
        sampler: Any,
        pruner: Any,
        direction: str,
        study_name: str,
        storage: str,
        n_trials: int,
        n_jobs: int,
        params: DictConfig | None,
        enqueue_trials: Any,
        heartbeat_interval: int | None,
        grace_period: int | None,
        max_retry: int | None,
        wait_for_running: bool,
        trial: int | None = None,
    ) -> None:
        from bookseg.sweep.study import SweepSettings

        self.settings = SweepSettings(
            sampler=sampler,
            pruner=pruner,
            direction=direction,
            study_name=study_name,
            storage=storage,
            n_trials=n_trials,
            n_jobs=n_jobs,
            params=OmegaConf.to_container(params, resolve=True) if params is not None else {},
            enqueue_trials=OmegaConf.to_container(enqueue_trials, resolve=True) if enqueue_trials else [],
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            max_retry=max_retry,
            wait_for_running=wait_for_running,
        )
        self.config: DictConfig | None = None
        self.launcher = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        from bookseg.sweep.space import search_space
        from bookseg.sweep.study import run_study

        assert self.config is not None and self.launcher is not None
        space = search_space(self.settings.params, arguments)
        return run_study(self.settings, space, self.launcher, str(self.config.hydra.sweep.dir))
