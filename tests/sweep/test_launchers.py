"""Sweeps through launchers that run each point in another process: submitit (`+sweep=submitit_local`,
`+sweep=submitit_slurm`) and Ray (`+sweep=ray`, bookseg's own launcher plugin); docs/scaling.md.

The task function is pickled and run in another process, which composes the point's config again. What a
user relies on: the point keeps the run key, job directory, lock and MLflow store it would have in-process,
so a sweep resumes whichever launcher runs it.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml
from hydra.core.hydra_config import HydraConfig
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf, open_dict

from bookseg.config.compose import CONF_DIR, compose_config
from bookseg.experiment.data import fingerprint, load_data
from bookseg.tracking.hydra_callbacks import SWEEP_POINTS_ENV, SweepSummary
from bookseg.tracking.mlflow_runs import LAUNCHER_PRESETS, run_key
from tests.integration.conftest import CliRunner
from tests.integration.test_run_cli import _kill_after

# The cheapest real job: one fold, one epoch of one step, nothing optional logged.
CHEAP = (
    "+experiment=smoke",
    "cv.folds=[0]",
    "stages.steps_per_epoch=1",
    "stages.schedule=[{layers: all, epochs: 1, learning_rate: 0.01}]",
    "tracking.tensorboard=false",
    "tracking.overlays=0",
    "tracking.log_weights=false",
)


def _default_store_cli(root: Path) -> CliRunner:
    """A CLI runner in `root` without MLFLOW_TRACKING_URI: jobs track to the default sqlite:///mlflow.db."""
    cli = CliRunner(root)
    del cli.env["MLFLOW_TRACKING_URI"]
    return cli


def _in_process_key(root: Path, overrides: list[str], monkeypatch) -> str:
    """The run key `bookseg.run` computes for `overrides` when Hydra runs the job in its own process, started
    in `root` like the CLI runs (no test set in these configs: the data fingerprint is the training set's)."""
    monkeypatch.chdir(root)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("BOOKSEG_CACHE", str(root / "cache"))
    cfg = compose_config(overrides, return_hydra_config=True)
    hydra_config = HydraConfig.instance()
    hydra_config.set_config(cfg)  # `${hydra:runtime.cwd}` in the config resolves as in a job
    try:
        with open_dict(cfg):
            del cfg["hydra"]
        return run_key(cfg, fingerprint(load_data(cfg)), overrides)
    finally:
        hydra_config.cfg = None


def _job_logs(root: Path) -> list[str]:
    """stdout of every submitit job under `root`'s multirun folders."""
    return [p.read_text() for p in sorted(root.glob("multirun/*/*/.submitit/*/*_log.out"))]


@pytest.mark.parametrize("launcher", ["submitit_local", "ray"])
def test_a_launched_point_keeps_its_in_process_run_key_store_and_folders(tmp_path, monkeypatch, launcher):
    """One point that trains and one that fails validation, as submitit jobs or Ray tasks on this machine."""
    cli = _default_store_cli(tmp_path)
    proc = cli.run("-m", *CHEAP, "cv.k=2,1", f"+sweep={launcher}")
    out = proc.stdout

    # One parent run per point in ./mlflow.db of the folder the sweep was started in; the failing point is
    # recorded and does not stop the other.
    assert sorted(p.name for p in tmp_path.rglob("mlflow.db")) == ["mlflow.db"]
    assert (tmp_path / "mlflow.db").is_file()
    parents, children = cli.runs()
    by_status = {p.info.status: p for p in parents}
    assert len(parents) == 2 and set(by_status) == {"FINISHED", "FAILED"}, [p.info.status for p in parents]
    parent = by_status["FINISHED"]
    assert "k >= 2" in by_status["FAILED"].data.tags["bookseg.error"]
    assert [(c.data.tags["fold"], c.info.status) for c in children] == [("0", "FINISHED")]
    assert 0.0 <= parent.data.metrics["cv/mask_ap50_mean"] <= 1.0
    assert "sweep: 2 points" in out and "  FAILED " in out  # the summary saw both jobs' results

    # The jobs ran in the launcher's processes: submitit's stdout is in its folder; Ray passes its workers'
    # output on to ours as it reads it (the last lines of a point may come after the sweep has ended).
    if launcher == "ray":
        assert re.search(r"Ray with \{'CPU': [\d.]+\} runs 2 points, each with \{'num_cpus': 1,", out), out[
            -2000:
        ]
    else:
        logs = _job_logs(tmp_path)
        assert len(logs) == 2 and sum(f"MLflow: parent run {parent.info.run_id}" in log for log in logs) == 1
        assert "MLflow: parent run" not in out

    # Checkpoints in ./outputs/runs/<key>/attempt0 (DONE names the parent run), Hydra's files in ./multirun.
    (done,) = tmp_path.rglob("DONE")
    key = parent.data.tags["bookseg.run_key"]
    assert done == tmp_path / "outputs" / "runs" / key / "attempt0" / "DONE"
    assert done.read_text() == parent.info.run_id
    assert (done.parent / "fold0" / "checkpoints").is_dir() and (done.parent / "lock").is_file()
    (point_overrides,) = [
        p for p in tmp_path.glob("multirun/*/*/*/.hydra/overrides.yaml") if "cv.k=2" in p.read_text()
    ]
    assert not list(tmp_path.glob("multirun/*/*/bookseg-sweep-*.jsonl"))  # the summary's file is cleaned up

    # The resume guarantee: the same point run without the launcher preset gets the same key.
    overrides = yaml.safe_load(point_overrides.read_text())
    assert f"+sweep={launcher}" in overrides
    plain = [o for o in overrides if o != f"+sweep={launcher}"]
    assert _in_process_key(tmp_path, plain, monkeypatch) == key


def test_the_launcher_presets_are_the_sweep_presets_left_out_of_the_run_key():
    """A preset that only picks the Hydra launcher must not change a point's key, one that sets what is
    trained (or swept) must."""
    launcher_only = set()
    for path in sorted((CONF_DIR / "sweep").glob("*.yaml")):
        text = path.read_text()
        assert text.startswith("# @package _global_\n# "), f"{path.name}: package line, then what it is for"
        assert "python -m bookseg.run" in text, f"{path.name}: its comment shows the command"
        preset = yaml.safe_load(text)
        picks_launcher = any("override /hydra/launcher" in str(d) for d in preset.get("defaults", []))
        if picks_launcher and set(preset) <= {"defaults", "hydra"} and set(preset["hydra"]) == {"launcher"}:
            launcher_only.add(path.stem)
    assert launcher_only == set(LAUNCHER_PRESETS)

    cfg = OmegaConf.create(
        {"data": {"cache_dir": "cache"}, "tracking": {"tracking_uri": "sqlite:///x.db", "experiment": "e"}}
    )
    point = ["+experiment=smoke", "anchors=small"]
    key = run_key(cfg, "data", point)
    for name in LAUNCHER_PRESETS:
        assert run_key(cfg, "data", [*point, f"+sweep={name}"]) == key, name
    assert run_key(cfg, "data", [*point, "+sweep=anchors"]) != key
    optuna = run_key(cfg, "data", [*point, "+sweep=optuna"])
    assert optuna != key
    assert run_key(cfg, "data", [*point, "+sweep=[optuna,submitit_slurm]"]) == optuna


def test_slurm_settings_come_from_the_preset_then_conf_local_slurm_then_the_command_line(tmp_path):
    local = tmp_path / "local"  # stands for conf/local/ (git-ignored) through Hydra's search path
    local.mkdir()
    (local / "slurm.yaml").write_text("partition: gpu_a100\ntimeout_min: 480\naccount: lab\n")

    def launcher(*overrides: str):
        return compose_config(["+sweep=submitit_slurm", *overrides], return_hydra_config=True).hydra.launcher

    preset = launcher()
    assert preset._target_.endswith("SlurmLauncher")
    assert preset.partition is None and preset.timeout_min == 240 and preset.gpus_per_node == 1
    assert preset.mem_gb == 32 and preset.cpus_per_task == 8 and preset.max_num_timeout == 3

    search = f"hydra.searchpath=[file://{tmp_path}]"
    settings = launcher(search, "hydra.launcher.timeout_min=60")
    assert (settings.partition, settings.account) == ("gpu_a100", "lab")  # conf/local/slurm.yaml
    assert settings.timeout_min == 60  # the command line wins over both
    assert settings.mem_gb == 32  # the preset's, not set anywhere else


def test_sweep_points_are_collected_in_the_sweep_folder_not_in_tmp(tmp_path, monkeypatch, capsys):
    """Points on other nodes (SLURM) append their result to a file only a shared folder makes visible."""
    monkeypatch.delenv(SWEEP_POINTS_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    config = OmegaConf.create(
        {"hydra": {"sweep": {"dir": "multirun/day/time"}}, "tracking": {"tracking_uri": "sqlite:///m.db"}}
    )
    summary = SweepSummary()
    summary.on_multirun_start(config)
    points = Path(os.environ[SWEEP_POINTS_ENV])
    assert points.parent == tmp_path / "multirun" / "day" / "time"
    line = {"overrides": "anchors=small", "run_id": "abcdef123", "metric": "m", "mean": 0.5, "std": 0.1}
    points.write_text(json.dumps({**line, "error": None}) + "\n")
    summary.on_multirun_end(config)
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert ["0.500", "±", "0.100", "abcdef12", "anchors=small"] in rows
    assert not points.exists()


@pytest.mark.slow  # two smoke trainings plus most of a third (~3 min on 2 cores)
def test_a_sweep_interrupted_in_process_resumes_through_submitit(tmp_path):
    """The 2-point smoke sweep, killed in Hydra's own process during point 0's fold 1, then started again as
    submitit jobs: point 0 continues in its MLflow parent run and job directory (fold 0 is not trained
    again), point 1 trains."""
    cli = _default_store_cli(tmp_path)
    sweep = ("-m", "+experiment=smoke", "anchors=default,small")
    _kill_after(cli, cli.popen(*sweep), "*/attempt0/fold1/checkpoints/mask_rcnn_*.weights.h5")
    (state,) = tmp_path.glob("outputs/runs/*/attempt0/state.json")
    interrupted = json.loads(state.read_text())["parent_run_id"]
    assert not list(tmp_path.rglob("DONE"))

    out = cli.run(*sweep, "+sweep=submitit_local", timeout=900).stdout
    assert "sweep: 2 points" in out
    parents, children = cli.runs()
    assert sorted(p.info.status for p in parents) == ["FINISHED", "FINISHED"]
    assert interrupted in {p.info.run_id for p in parents}
    done = sorted(tmp_path.glob("outputs/runs/*/*/DONE"))
    assert [p.parent.name for p in done] == ["attempt0", "attempt0"]  # resumed, not started over
    assert state.parent / "DONE" in done

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    for parent in parents:
        folds = sorted(
            c.data.tags["fold"] for c in children if c.data.tags["mlflow.parentRunId"] == parent.info.run_id
        )
        assert folds == ["0", "1"], parent.data.tags["bookseg.overrides"]
    for child in children:
        assert child.info.status == "FINISHED"
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "train/loss")]
        killed = child.data.tags["mlflow.parentRunId"] == interrupted and child.data.tags["fold"] == "1"
        # Every epoch logged once (fold 0 was not trained again); the fold that was killed lacks epoch 1 when
        # the kill came between its checkpoint and its metrics.
        assert steps in ([1, 2], [2]) if killed else steps == [1, 2], (child.data.tags["fold"], steps)
        assert len(client.get_metric_history(child.info.run_id, "mask_ap50")) == 1  # each fold scored once

    logs = _job_logs(tmp_path)
    (resumed,) = [log for log in logs if f"MLflow: parent run {interrupted}" in log]
    assert "fold 0: already finished in this run, not trained again" in resumed
    assert "fold 1: resuming from" in resumed
