"""Hydra callbacks run by the main process around a sweep."""

from __future__ import annotations

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class PrepareTrackingStore(Callback):
    """Create the MLflow tracking store once, before parallel sweep jobs start.

    Jobs launched side by side (joblib launcher) would otherwise race to create the tables of a new
    sqlite store (all but one fail with an alembic migration error) and the study's experiment.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        from mlflow.tracking import MlflowClient

        from bookseg.tracking.mlflow_runs import tracking_uri

        client = MlflowClient(tracking_uri=tracking_uri(config))
        if client.get_experiment_by_name(config.tracking.experiment) is None:
            client.create_experiment(config.tracking.experiment)
