"""`python -m bookseg.run +sweep=optuna` for real (slow: real trainings; tests/sweep/test_optuna_study.py
checks the same mechanics in seconds): a trial reports each fold to the study and lands on its MLflow parent
run, the same command again continues the study, a killed trial is re-run in its own MLflow run, and a
hopeless trial is pruned after fold 0."""

from __future__ import annotations

import json
import signal
import time

import optuna
import pytest
from optuna.trial import TrialState

from tests.integration.conftest import CliRunner
from tests.integration.test_run_cli import LEARNING_OVERRIDES  # its reference reaches mask AP50 > 0.3


@pytest.mark.slow  # one real smoke training (~1 min on 2 cores); tests/sweep/test_optuna_study.py is fast
def test_optuna_sweep_reports_folds_and_tags_the_parent_run(tmp_path):
    cli = CliRunner(tmp_path)
    args = ("+experiment=smoke", "+sweep=optuna", "hydra.sweeper.n_trials=1")
    out = cli.run(*args).stdout

    study = optuna.load_study(study_name="sweep_optuna", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    (trial,) = study.trials
    assert trial.state == TrialState.COMPLETE
    assert set(trial.params) == {"lr_scale", "optimizer.momentum", "optimizer.weight_decay"}
    parents, children = cli.runs("bookseg/sweep_optuna")
    (parent,) = parents
    folds = {int(c.data.tags["fold"]): c for c in children}
    assert trial.intermediate_values == {k: pytest.approx(folds[k].data.metrics["mask_ap50"]) for k in (0, 1)}
    assert trial.value == pytest.approx(parent.data.metrics["cv/mask_ap50_mean"])
    assert trial.user_attrs["mlflow_run_id"] == parent.info.run_id
    tags = parent.data.tags
    assert tags["optuna.trial"] == "0" and tags["optuna.state"] == "COMPLETE"
    assert tags["optuna.study"] == "sweep_optuna" and json.loads(tags["optuna.params"]) == trial.params
    assert float(tags["optuna.value"]) == pytest.approx(trial.value)
    assert float(parent.data.params["lr_scale"]) == trial.params["lr_scale"]
    assert "1 of 1 trials, 1 complete" in out

    again = cli.run(*args).stdout  # the same command: the study is complete, nothing is trained
    assert "1 of 1 trials already in the study" in again and "fold 0" not in again
    assert len(study.trials) == 1 and len(cli.runs("bookseg/sweep_optuna")[0]) == 1


def _study(root):
    return optuna.load_study(study_name="sweep_optuna", storage=f"sqlite:///{root / 'optuna.db'}")


@pytest.mark.slow  # two real jobs that learn (~3-4 min on 2 cores)
def test_real_hopeless_trial_is_pruned_after_fold_0(tmp_path):
    """Trial 0 trains the recipe that learns in a minute (mask AP50 > 0.3); trial 1 is the same with the
    learning rate scaled by 1e-6, so after fold 0 it trails the median and stops before fold 1."""
    cli = CliRunner(tmp_path)
    out = cli.run(
        *LEARNING_OVERRIDES,
        "+sweep=optuna",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.pruner.n_startup_trials=1",
        "lr_scale=choice(1.0,0.000001)",
        "optimizer.momentum=0.9",
        "optimizer.weight_decay=0.0",
        "hydra.sweeper.enqueue_trials=[{lr_scale: 1.0}, {lr_scale: 0.000001}]",
        timeout=1200,
    ).stdout

    good, hopeless = _study(tmp_path).trials
    assert good.state == TrialState.COMPLETE and good.value > 0.1, out[-3000:]  # it learned
    assert hopeless.state == TrialState.PRUNED and hopeless.params == {"lr_scale": 0.000001}
    assert (
        list(hopeless.intermediate_values) == [0]
        and hopeless.intermediate_values[0] < good.intermediate_values[0]
    )
    parents, children = cli.runs("bookseg/sweep_optuna")
    runs = {p.data.tags["optuna.trial"]: p for p in parents}
    assert runs["0"].info.status == "FINISHED" and runs["0"].data.tags["optuna.state"] == "COMPLETE"
    pruned = runs["1"]
    assert pruned.info.status == "KILLED"
    assert (
        pruned.data.tags["optuna.state"] == "PRUNED" and pruned.data.tags["optuna.pruned_after_fold"] == "0"
    )
    folds = [c.data.tags["fold"] for c in children if c.data.tags["mlflow.parentRunId"] == pruned.info.run_id]
    assert folds == ["0"]  # fold 1 never started
    assert "1 pruned" in out


@pytest.mark.slow  # one real smoke job, killed after fold 0 and resumed (~2 min on 2 cores)
def test_killed_trial_is_rerun_in_its_own_mlflow_run_without_retraining_fold_0(tmp_path):
    cli = CliRunner(tmp_path)
    args = (
        "+experiment=smoke",
        "+sweep=optuna",
        "hydra.sweeper.n_trials=1",
        "hydra.sweeper.heartbeat_interval=1",
        "hydra.sweeper.grace_period=3",
        "hydra/sweeper/pruner=nop",
    )
    proc = cli.popen(*args)
    deadline = time.monotonic() + 600
    while not (_study_ready(tmp_path) and _study(tmp_path).trials[0].intermediate_values):  # fold 0 done
        log = (tmp_path / "popen.log").read_text()
        assert proc.poll() is None and time.monotonic() < deadline, log[-3000:]
        time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    out = cli.run(*args).stdout  # the same command: trial 0 goes stale, its retry resumes the job

    killed, retry = _study(tmp_path).trials
    assert killed.state == TrialState.FAIL and retry.state == TrialState.COMPLETE
    assert retry.system_attrs["retry_history"] == [0] and retry.params == killed.params
    assert "fold 0: already finished in this run, not trained again" in out
    assert retry.intermediate_values.keys() == {0, 1}
    (parent,), children = cli.runs("bookseg/sweep_optuna")  # the killed job's parent run, reopened
    assert parent.info.status == "FINISHED" and len(children) == 2
    assert parent.info.run_id == killed.user_attrs["mlflow_run_id"] == retry.user_attrs["mlflow_run_id"]
    assert parent.data.tags["optuna.trial"] == "1" and parent.data.tags["optuna.retry_of"] == "0"


def _study_ready(root) -> bool:
    """The worker has made the database and the study (its first line about it is in its log)."""
    log = root / "popen.log"
    return log.exists() and "Optuna study 'sweep_optuna'" in log.read_text()
