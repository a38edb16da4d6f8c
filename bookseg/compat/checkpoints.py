"""matterport's log directories and checkpoint names, with Keras 3's `.weights.h5` suffix.

Layout: `<model_dir>/<name><YYYYmmddTHHMM>/mask_rcnn_<name>_<epoch:04d>.weights.h5`, `<name>` being
`Config.NAME` in lower case and `<epoch>` the number of epochs finished (1-based), as matterport wrote
`mask_rcnn_<name>_<epoch>.h5`. Keras 3 refuses to save weights under a plain `.h5` name.
"""

from __future__ import annotations

import datetime
import errno
import re
from pathlib import Path

import keras

from bookseg.mrcnn.weights import CHECKPOINT_SUFFIX, find_last_checkpoint, save_checkpoint

# A checkpoint path as matterport writes it (either suffix): groups = the run's timestamp, then the epoch.
_CHECKPOINT = re.compile(
    r"(?:.*[/\\])?[\w-]+?(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})[/\\]mask_rcnn_[\w-]+_(\d{4})(?:\.weights)?\.h5$"
)


def run_name(config) -> str:
    """`config.NAME` in lower case (it names log directories and checkpoints)."""
    if not getattr(config, "NAME", None):
        raise ValueError(f"{type(config).__name__}.NAME is not set: give your Config subclass a NAME")
    return str(config.NAME).lower()


def log_dir_for(model_dir, name: str, when: datetime.datetime) -> Path:
    """`<model_dir>/<name><YYYYmmddTHHMM>` (minute resolution, as matterport)."""
    return Path(model_dir) / f"{name}{when:%Y%m%dT%H%M}"


def checkpoint_prefix(name: str) -> str:
    """`mask_rcnn_<name>_`: the `prefix` of `bookseg.mrcnn.weights` checkpoint names in matterport's naming."""
    return f"mask_rcnn_{name}_"


def checkpoint_template(log_dir, name: str) -> Path:
    """`<log_dir>/mask_rcnn_<name>_{epoch:04d}.weights.h5`, the placeholder left in (matterport's
    `checkpoint_path`)."""
    return Path(log_dir) / f"{checkpoint_prefix(name)}{{epoch:04d}}{CHECKPOINT_SUFFIX}"


def parse_checkpoint(path) -> tuple[datetime.datetime, int] | None:
    """(run start time, epochs finished) of a matterport-named checkpoint path, or None for any other path."""
    match = _CHECKPOINT.match(str(path))
    if not match:
        return None
    *stamp, epoch = (int(g) for g in match.groups())
    return datetime.datetime(*stamp), epoch


def find_last(model_dir, name: str) -> str:
    """The newest checkpoint of the newest run directory of `name` under `model_dir` that has one.

    matterport looked only in the newest directory, so a run that crashed before its first epoch hid
    every earlier checkpoint; here older directories are searched too.

    Raises:
        FileNotFoundError: no run directory, or no checkpoint in any (matterport's errors).
    """
    model_dir = Path(model_dir)
    runs = (
        sorted(p for p in model_dir.iterdir() if p.is_dir() and p.name.startswith(name))
        if model_dir.is_dir()
        else []
    )
    if not runs:
        raise FileNotFoundError(errno.ENOENT, f"Could not find model directory under {model_dir}")
    for run in reversed(runs):  # matterport's own `.h5` checkpoints count too
        last = find_last_checkpoint(run, prefix=checkpoint_prefix(name), suffixes=(CHECKPOINT_SUFFIX, ".h5"))
        if last is not None:
            return str(last[0])
    raise FileNotFoundError(errno.ENOENT, f"Could not find weight files in {runs[-1]}")


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves the weights after every epoch as `<log_dir>/mask_rcnn_<name>_<epoch + 1:04d>.weights.h5`,
    atomically (`bookseg.mrcnn.weights.save_checkpoint`), keeping every epoch as matterport did."""

    def __init__(self, log_dir, name: str):
        super().__init__()
        self.log_dir, self.name = Path(log_dir), name
        self.last: Path | None = None

    def on_epoch_end(self, epoch, logs=None):
        self.last = save_checkpoint(self.model, self.log_dir, epoch + 1, prefix=checkpoint_prefix(self.name))
