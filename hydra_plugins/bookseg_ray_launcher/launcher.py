"""The Ray launcher: every sweep point is one Ray task that composes and runs the point's job.

The task does what Hydra's own launchers do in a job process: restore Hydra's global state (its
Singletons, e.g. the config search path), load the point's config, set `hydra.job.id` / `num` and run the
job in its sweep subfolder. Its result (return value, or the exception the job raised) comes back to the
sweep as a `JobReturn`, so a failing point does not stop the others.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from hydra_plugins.bookseg_ray_launcher.config import BooksegRayLauncherConf  # noqa: F401 (registers)

log = logging.getLogger(__name__)


def run_point(
    number: int,
    overrides: Sequence[str],
    hydra_context: HydraContext,
    sweep_config: DictConfig,
    task_function: TaskFunction,
    singleton_state: dict[Any, Any],
) -> JobReturn:
    """Run sweep point `number` (its `overrides`) in this process, as Hydra runs a job."""
    setup_globals()
    Singleton.set_state(singleton_state)
    point_config = hydra_context.config_loader.load_sweep_config(sweep_config, list(overrides))
    with open_dict(point_config):
        point_config.hydra.job.id = f"{point_config.hydra.job.name}_{number}"
        point_config.hydra.job.num = number
    HydraConfig.instance().set_config(point_config)
    return run_job(
        hydra_context=hydra_context,
        config=point_config,
        task_function=task_function,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )


class BooksegRayLauncher(Launcher):
    def __init__(self, ray: DictConfig) -> None:
        self.ray = ray
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        try:
            import ray
        except ImportError as err:
            raise ImportError(
                "+sweep=ray needs Ray: pip install -e '.[cluster]' (or pip install ray)"
            ) from err

        setup_globals()
        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        init = OmegaConf.to_container(self.ray.init, resolve=True)
        remote = OmegaConf.to_container(self.ray.remote, resolve=True)
        started_here = not ray.is_initialized()
        if started_here:
            ray.init(**init)
        resources = {k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")}
        log.info(f"Ray with {resources} runs {len(job_overrides)} points, each with {remote}")
        log.info(f"Launching jobs, sweep output dir : {sweep_dir}")
        for number, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info(f"\t#{number} : {' '.join(filter_overrides(overrides))}")
        task = ray.remote(run_point).options(**remote)
        state = Singleton.get_state()
        try:
            pending = [
                task.remote(
                    number, list(overrides), self.hydra_context, self.config, self.task_function, state
                )
                for number, overrides in enumerate(job_overrides, start=initial_job_idx)
            ]
            return ray.get(pending)
        finally:
            if started_here:
                ray.shutdown()
