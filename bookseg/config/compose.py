"""Compose the project's Hydra config outside `python -m bookseg.run` (library calls, CLI tools, tests)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def compose_config(overrides=(), return_hydra_config: bool = False) -> DictConfig:
    """`conf/config.yaml` composed with Hydra `overrides` (e.g. ["model=cpu512", "anchors=auto"])."""
    from hydra import compose, initialize_config_dir

    from bookseg.config.schema import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(
            config_name="config", overrides=list(overrides), return_hydra_config=return_hydra_config
        )
