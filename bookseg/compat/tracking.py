"""MLflow logging of `MaskRCNN.train` when a tracking URI is set (`MLFLOW_TRACKING_URI`, or the
bookseg-only `Config.MLFLOW_TRACKING_URI`).

One MLflow run per log directory, in experiment `bookseg.compat/<name>`: every `train()` call of a
model object reopens it, so epochs stay numbered globally (step = epoch). Parameters are the
Config's settings; metrics the five losses, `l2_loss`, `loss` and the learning rate per epoch
(training and validation, `bookseg.tracking.callbacks.MlflowEpochLogger`).
"""

from __future__ import annotations

import contextlib
import os

EXPERIMENT_PREFIX = "bookseg.compat/"
_MAX_PARAM = 500  # characters kept of a parameter's text


def tracking_uri(config) -> str | None:
    """The tracking URI to log to, or None (then nothing is logged to MLflow)."""
    return getattr(config, "MLFLOW_TRACKING_URI", None) or os.environ.get("MLFLOW_TRACKING_URI") or None


@contextlib.contextmanager
def mlflow_run(config, name: str, log_dir, run_id: str | None):
    """Open (or reopen) the MLflow run of one log directory around a `train()` call.

    Yields (callbacks to add, run id); ([], None) when no tracking URI is set.
    """
    uri = tracking_uri(config)
    if uri is None:
        yield [], None
        return
    import mlflow

    from bookseg.tracking.callbacks import MlflowEpochLogger

    mlflow.set_tracking_uri(uri)
    if run_id is None:
        mlflow.set_experiment(EXPERIMENT_PREFIX + name)
    with mlflow.start_run(run_id=run_id, run_name=None if run_id else os.path.basename(str(log_dir))) as run:
        if run_id is None:
            params = {key: str(value)[:_MAX_PARAM] for key, value in config.to_dict().items()}
            mlflow.log_params(params)
            mlflow.set_tag("log_dir", str(log_dir))
        yield [MlflowEpochLogger()], run.info.run_id
