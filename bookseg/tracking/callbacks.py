"""Keras callbacks of a fold: per-epoch MLflow metrics, crash-safe checkpoints, job-level progress."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import keras
import mlflow


def split_logs(logs: dict) -> dict[str, float]:
    """Keras logs -> MLflow keys: `loss` -> `train/loss`, `val_loss` -> `val/loss`; non-finite kept as is."""
    out = {}
    for key, value in (logs or {}).items():
        name = f"val/{key[4:]}" if key.startswith("val_") else f"train/{key}"
        out[name] = float(value)
    return out


def epoch_metrics(model, logs) -> dict[str, float]:
    """The MLflow metrics of one finished epoch: split losses and the learning rate of its last step."""
    metrics = split_logs(logs)
    optimizer = model.optimizer
    schedule = getattr(optimizer, "_learning_rate", None)
    if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
        # the rate of the epoch's last step (`optimizer.learning_rate` is the next step's)
        metrics["train/learning_rate"] = float(schedule(optimizer.iterations - 1))
    elif getattr(optimizer, "learning_rate", None) is not None:
        metrics["train/learning_rate"] = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
    return metrics


def log_epoch(metrics: dict[str, float], epoch_number: int) -> None:
    """Log one epoch's metrics on the active MLflow run at step `epoch_number` (1-based); non-finite left out."""
    mlflow.log_metrics({k: v for k, v in metrics.items() if math.isfinite(v)}, step=epoch_number)


class MlflowEpochLogger(keras.callbacks.Callback):
    """Logs training and validation losses of every epoch to the active MLflow run (step = epoch number)."""

    def on_epoch_end(self, epoch, logs=None):
        log_epoch(epoch_metrics(self.model, logs), epoch + 1)


def metrics_path(checkpoint: Path) -> Path:
    """`mask_rcnn_0003.weights.h5` -> `mask_rcnn_0003.metrics.json`: the epoch's metrics beside its weights."""
    return checkpoint.with_name(checkpoint.name.split(".")[0] + ".metrics.json")


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves weights and the epoch's metrics after every epoch (atomically); keeps the newest `keep` epochs.

    The metrics file is written first, so every checkpoint has one: a job stopped after the checkpoint
    but before MLflow got the epoch's metrics logs them when it resumes (`log_missing_epoch`).
    """

    def __init__(self, directory: Path, keep: int = 2):
        super().__init__()
        self.directory = Path(directory)
        self.keep = keep

    def on_epoch_end(self, epoch, logs=None):
        from bookseg.mrcnn.weights import checkpoint_path, save_checkpoint

        self.directory.mkdir(parents=True, exist_ok=True)
        record = metrics_path(checkpoint_path(self.directory, epoch + 1))
        tmp = record.with_name(".tmp_" + record.name)
        tmp.write_text(json.dumps(epoch_metrics(self.model, logs)))
        os.replace(tmp, record)
        save_checkpoint(self.model, self.directory, epoch + 1)
        for old in sorted(self.directory.glob("mask_rcnn_*.weights.h5"))[: -self.keep]:
            old.unlink()
            metrics_path(old).unlink(missing_ok=True)


def log_missing_epoch(checkpoint: Path, epoch_number: int) -> bool:
    """Log checkpoint `epoch_number`'s saved metrics on the active run unless its `train/loss` is there.

    Returns True when they were missing and have been logged now.
    """
    record = metrics_path(Path(checkpoint))
    run_id = mlflow.active_run().info.run_id
    logged = {m.step for m in mlflow.MlflowClient().get_metric_history(run_id, "train/loss")}
    if epoch_number in logged or not record.exists():
        return False
    log_epoch(json.loads(record.read_text()), epoch_number)
    return True


class JobProgress:
    """Progress of a whole job (all folds): prints epoch, step, losses and the time left.

    A line is printed at the end of every epoch and, within long epochs, every `every_seconds`.
    """

    def __init__(self, total_epochs: int, steps_per_epoch: int, every_seconds: float = 15.0):
        self.total_steps = max(total_epochs * steps_per_epoch, 1)
        self.steps_per_epoch = steps_per_epoch
        self.every = every_seconds
        self.done_steps = 0
        self.start = time.monotonic()

    def skip(self, epochs: int) -> None:
        """Discount epochs finished before a resume, so the estimate covers only what is left."""
        self.total_steps = max(self.total_steps - epochs * self.steps_per_epoch, 1)

    def time_left(self) -> float:
        elapsed = time.monotonic() - self.start
        return elapsed / max(self.done_steps, 1) * (self.total_steps - self.done_steps)

    def callback(self, label: str, n_epochs: int, stage_of_epoch) -> keras.callbacks.Callback:
        """Printing callback of one model; `label` names it, e.g. "fold 0 (1 of 3)"."""
        progress = self

        class _Print(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.epoch = epoch
                self.last = time.monotonic()

            def on_train_batch_end(self, batch, logs=None):
                progress.done_steps += 1
                if time.monotonic() - self.last >= progress.every:
                    self.last = time.monotonic()
                    self._print(f"step {batch + 1}/{progress.steps_per_epoch}", logs)

            def on_epoch_end(self, epoch, logs=None):
                self._print("done", logs)

            def _print(self, where, logs):
                head = f"{label} | stage {stage_of_epoch(self.epoch)} | epoch {self.epoch + 1}/{n_epochs} {where}"
                losses = " ".join(f"{k}={v:.3f}" for k, v in sorted((logs or {}).items()) if "loss" in k)
                print(
                    f"[{head} | {_hms(time.monotonic() - progress.start)} elapsed, about "
                    f"{_hms(progress.time_left())} left] {losses}",
                    flush=True,
                )

        return _Print()


def _hms(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
