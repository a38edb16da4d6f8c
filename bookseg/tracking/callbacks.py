"""Keras callbacks of a fold: per-epoch MLflow metrics, crash-safe checkpoints, job-level progress."""

from __future__ import annotations

import math
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


class MlflowEpochLogger(keras.callbacks.Callback):
    """Logs training and validation losses of every epoch to the active MLflow run (step = epoch number)."""

    def on_epoch_end(self, epoch, logs=None):
        metrics = split_logs(logs)
        lr = getattr(self.model.optimizer, "learning_rate", None)
        if lr is not None:
            metrics["train/learning_rate"] = float(keras.ops.convert_to_numpy(lr))
        mlflow.log_metrics({k: v for k, v in metrics.items() if math.isfinite(v)}, step=epoch + 1)


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves weights after every epoch (atomically) and keeps the newest `keep` files."""

    def __init__(self, directory: Path, keep: int = 2):
        super().__init__()
        self.directory = Path(directory)
        self.keep = keep

    def on_epoch_end(self, epoch, logs=None):
        from bookseg.mrcnn.weights import save_checkpoint

        save_checkpoint(self.model, self.directory, epoch + 1)
        for old in sorted(self.directory.glob("mask_rcnn_*.weights.h5"))[: -self.keep]:
            old.unlink()


class JobProgress:
    """Epoch counter across all folds of a job, for 'time left' estimates."""

    def __init__(self, total_epochs: int):
        self.total = max(total_epochs, 1)
        self.done = 0
        self.start = time.monotonic()

    def callback(self, fold: int, n_folds: int, stage_of_epoch) -> keras.callbacks.Callback:
        progress = self

        class _Print(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                progress.done += 1
                elapsed = time.monotonic() - progress.start
                left = elapsed / progress.done * (progress.total - progress.done)
                stage = stage_of_epoch(epoch)
                losses = "  ".join(f"{k}={v:.3f}" for k, v in (logs or {}).items() if "loss" in k)
                print(
                    f"[fold {fold + 1}/{n_folds} | stage {stage} | epoch {epoch + 1}] {losses}\n"
                    f"    job: {progress.done}/{progress.total} epochs, elapsed {_hms(elapsed)}, "
                    f"about {_hms(left)} left",
                    flush=True,
                )

        return _Print()

    def skip(self, epochs: int) -> None:
        """Count epochs finished before a resume, so the estimate covers only what is left."""
        self.total = max(self.total - epochs, 1)


def _hms(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
