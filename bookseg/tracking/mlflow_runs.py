"""MLflow run layout: one experiment per study, one parent run per Hydra job, one child run per fold.

Resuming: a job is identified by a hash of its resolved config, its command-line overrides, the data
fingerprint and where it is tracked (`run_key`). The parent and child run ids live in
`<work_dir>/<run_key>/attempt<N>/state.json` beside the checkpoints, so running the same command
again after a crash reopens the same MLflow runs instead of creating new ones.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from bookseg.tracking import FINAL

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
# Keys that do not change what is trained or where it is tracked stay out of the run key; `data.cache_dir`
# is covered by the data fingerprint.
_KEY_EXCLUDED = ("tracking", "resume", "work_dir", "study", "tags", "optimized_metric")
# conf/sweep/ presets that only choose the Hydra launcher (where points run, not what they train) stay out of
# the key too: a point resumes whether it ran in-process, in joblib workers or as a submitit job (docs/scaling.md).
LAUNCHER_PRESETS = ("parallel", "ray", "submitit_local", "submitit_slurm")


def tracking_uri(cfg: DictConfig) -> str:
    """Tracking URI: config value, else $MLFLOW_TRACKING_URI, else the local sqlite store."""
    return cfg.tracking.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def flatten(tree, prefix: str = "") -> dict[str, str]:
    """Flatten nested dicts/lists into dotted keys with string values (MLflow params).

    A list of scalars stays one param, written as JSON (`["smoke"]`, as MLflow's compare page shows lists).
    """
    out: dict[str, str] = {}
    if isinstance(tree, dict):
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
    elif isinstance(tree, list) and any(isinstance(v, (dict, list)) for v in tree):
        for i, value in enumerate(tree):
            out.update(flatten(value, f"{prefix}{i}."))
    elif isinstance(tree, list):
        out[prefix[:-1]] = json.dumps(tree)
    else:
        out[prefix[:-1]] = str(tree)
    return out


def run_key(cfg: DictConfig, data_fingerprint: str, overrides: list[str]) -> str:
    """Short hash of one job: what it trains (resolved config, data), the command and where it is tracked.

    The same command run again gets the same key (and resumes), whichever launcher preset runs it; a
    different command that happens to train the same thing, or the same command tracked elsewhere, gets its own.
    """
    resolved = OmegaConf.to_container(cfg, resolve=True)
    for key in _KEY_EXCLUDED:
        resolved.pop(key, None)
    resolved["data"].pop("cache_dir", None)
    overrides = sorted(o for o in map(_without_launcher, overrides) if o)
    identity = [resolved, data_fingerprint, overrides, tracking_uri(cfg), cfg.tracking.experiment]
    return hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]


def _without_launcher(override: str) -> str | None:
    """`override` without launcher presets: `+sweep=parallel` -> None, `+sweep=[optuna,parallel]` -> `+sweep=optuna`."""
    name, _, value = override.lstrip("+").partition("=")
    if name != "sweep":
        return override
    names = [v.strip() for v in value.strip("[]").split(",")]
    kept = [v for v in names if v not in LAUNCHER_PRESETS]
    if len(kept) == len(names):
        return override  # as typed: keys of commands without a launcher preset never change
    if not kept:
        return None
    value = kept[0] if len(kept) == 1 else "[" + ",".join(kept) + "]"
    return override[: override.index("sweep")] + "sweep=" + value  # the `+` or `++` kept


def git_commit() -> tuple[str, bool]:
    """(commit sha, dirty) of the repository bookseg runs from; ("unknown", False) outside git."""
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=root,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        )
        return sha, dirty
    except (OSError, subprocess.CalledProcessError):
        return "unknown", False


class RunState:
    """Run ids and finished folds of one job, persisted as JSON next to its checkpoints."""

    def __init__(self, directory: Path):
        self.path = Path(directory) / "state.json"
        self.data = json.loads(self.path.read_text()) if self.path.exists() else {"folds": {}}

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2))
        tmp.replace(self.path)

    @property
    def parent_run_id(self) -> str | None:
        return self.data.get("parent_run_id")

    def fold(self, index: int | str) -> dict:
        return self.data["folds"].setdefault(str(index), {})


def open_parent_run(
    cfg: DictConfig, state: RunState, *, run_name: str, overrides: list[str], data_fingerprint: str, key: str
) -> mlflow.ActiveRun:
    """Start the job's parent run, or reopen it when `state` holds an unfinished one."""
    mlflow.set_tracking_uri(tracking_uri(cfg))
    experiment = mlflow.set_experiment(cfg.tracking.experiment)
    client = MlflowClient()
    run_id = state.parent_run_id
    if run_id is not None:
        try:
            existing = client.get_run(run_id)
        except mlflow.exceptions.MlflowException:
            existing = None
        if (
            existing is not None
            and existing.info.experiment_id == experiment.experiment_id
            and existing.info.lifecycle_stage == "active"
        ):
            return mlflow.start_run(run_id=run_id)
        # The recorded run is gone (deleted, or the store moved): start over in a new parent run;
        # finished folds keep their checkpoints, so they only need evaluating again.
        state.data["folds"] = {}
    sha, dirty = git_commit()
    run = mlflow.start_run(run_name=run_name)
    state.data["parent_run_id"] = run.info.run_id
    state.save()
    params = flatten(OmegaConf.to_container(cfg, resolve=True))
    # MLflow caps one log_params call at 100 params.
    items = sorted(params.items())
    for start in range(0, len(items), 100):
        mlflow.log_params(dict(items[start : start + 100]))
    mlflow.set_tags(
        {
            "bookseg.run_key": key,
            "bookseg.overrides": " ".join(overrides) or "(none)",
            "bookseg.data_fingerprint": data_fingerprint,
            "bookseg.tags": ",".join(cfg.tags),
            "mlflow.source.git.commit": sha,
            "bookseg.git_dirty": str(dirty),
            "cv_k": str(cfg.cv.k),
        }
    )
    return run


def open_fold_run(state: RunState, index: int | str) -> mlflow.ActiveRun:
    """Start (or reopen) the nested child run of fold `index` (or FINAL) under the active parent run."""
    fold = state.fold(index)
    if fold.get("run_id"):
        return mlflow.start_run(run_id=fold["run_id"], nested=True)
    run = mlflow.start_run(run_name=FINAL if index == FINAL else f"fold{index}", nested=True)
    mlflow.set_tag("fold", str(index))
    fold["run_id"] = run.info.run_id
    state.save()
    return run


def record_failed_job(cfg: DictConfig, overrides: list[str], error: BaseException) -> str | None:
    """Create a FAILED parent run holding the error, for jobs that fail before their run exists."""
    try:
        mlflow.set_tracking_uri(tracking_uri(cfg))
        mlflow.set_experiment(cfg.tracking.experiment)
        with mlflow.start_run(run_name="failed: " + (" ".join(overrides) or "main")) as run:
            mlflow.set_tags(
                {
                    "bookseg.overrides": " ".join(overrides) or "(none)",
                    "bookseg.error": f"{type(error).__name__}: {error}"[:5000],
                }
            )
            mlflow.log_text(f"{type(error).__name__}: {error}", "error.txt")
            mlflow.end_run(status="FAILED")
        return run.info.run_id
    except Exception as exc:  # noqa: BLE001 - the tracking store itself may be what failed
        print(f"could not record the failure in MLflow: {exc}")
        return None
