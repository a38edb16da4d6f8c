"""Every checkpointed epoch reaches MLflow exactly once, even when the job stops between the two writes."""

import json

import keras
import mlflow
import numpy as np
import pytest

from bookseg.tracking.callbacks import EpochCheckpoint, MlflowEpochLogger, log_missing_epoch, metrics_path


@pytest.fixture
def run(tmp_path, monkeypatch):
    """An active MLflow run in a store of its own (an experiment another test made active is not in it)."""
    monkeypatch.chdir(tmp_path)  # the store's default artifact root, ./mlruns
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = mlflow.set_experiment("epoch-callbacks")
    with mlflow.start_run(experiment_id=experiment.experiment_id) as active:
        yield active
    mlflow.set_tracking_uri(previous)


def _fit(callbacks, epochs, initial_epoch=0):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    x, y = np.ones((8, 3), "float32"), np.zeros((8, 1), "float32")
    model.fit(x, y, epochs=epochs, initial_epoch=initial_epoch, batch_size=4, verbose=0, callbacks=callbacks)


def _steps(run):
    return [m.step for m in mlflow.MlflowClient().get_metric_history(run.info.run_id, "train/loss")]


def test_an_epoch_checkpointed_but_not_logged_is_logged_once_on_resume(tmp_path, run):
    ckpt = tmp_path / "checkpoints"
    _fit([EpochCheckpoint(ckpt), MlflowEpochLogger()], epochs=1)
    _fit(
        [EpochCheckpoint(ckpt)], epochs=2, initial_epoch=1
    )  # stopped after epoch 2's checkpoint, before its log
    assert _steps(run) == [1]

    second = ckpt / "mask_rcnn_0002.weights.h5"
    saved = json.loads(metrics_path(second).read_text())
    assert set(saved) == {"train/loss", "train/learning_rate"}
    assert saved["train/learning_rate"] == pytest.approx(0.01)

    assert log_missing_epoch(second, 2) is True
    assert log_missing_epoch(second, 2) is False  # a second resume adds nothing
    assert _steps(run) == [1, 2]
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "train/loss")
    assert history[1].value == pytest.approx(saved["train/loss"])


def test_old_checkpoints_go_with_their_metrics_files(tmp_path, run):
    ckpt = tmp_path / "checkpoints"
    _fit([EpochCheckpoint(ckpt, keep=2)], epochs=3)
    assert sorted(p.name for p in ckpt.iterdir()) == [
        "mask_rcnn_0002.metrics.json",
        "mask_rcnn_0002.weights.h5",
        "mask_rcnn_0003.metrics.json",
        "mask_rcnn_0003.weights.h5",
    ]
