"""Structured config of the Ray launcher, registered in Hydra's ConfigStore as hydra/launcher: bookseg_ray."""

# OmegaConf structured configs need typing.Dict / Optional, not builtins and `X | None`.
# ruff: noqa: UP006, UP035

from dataclasses import dataclass, field
from typing import Any, Dict

from hydra.core.config_store import ConfigStore


@dataclass
class RayOptions:
    # keyword arguments of ray.init: no `address` starts a Ray on this machine for the sweep (stopped at its
    # end); address=auto joins the cluster this machine belongs to, ray://<head>:10001 one elsewhere.
    init: Dict[str, Any] = field(default_factory=lambda: {"include_dashboard": False})
    # options of each point's Ray task: the CPUs and GPUs it reserves decide how many points run at once
    # (Ray also sets CUDA_VISIBLE_DEVICES to the GPUs it gives the point), max_retries reruns a point whose
    # worker died (the point resumes its folds).
    remote: Dict[str, Any] = field(default_factory=lambda: {"num_cpus": 1, "num_gpus": 0, "max_retries": 0})


@dataclass
class BooksegRayLauncherConf:
    _target_: str = "hydra_plugins.bookseg_ray_launcher.launcher.BooksegRayLauncher"
    ray: RayOptions = field(default_factory=RayOptions)


ConfigStore.instance().store(
    group="hydra/launcher", name="bookseg_ray", node=BooksegRayLauncherConf, provider="bookseg"
)
