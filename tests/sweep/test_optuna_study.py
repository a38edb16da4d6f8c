"""bookseg's Optuna sweeper on a shared study (sqlite, PostgreSQL): resume after a kill, two workers, pruning on folds.

The jobs are tests/sweep/fake_job.py (folds that sleep instead of training, through the same job-side
trial code as `cross_validate`), so each study takes seconds; test_bookseg_sweep.py runs the real one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from bookseg.sweep.space import format_value, search_space
from bookseg.sweep.study import absolute_storage_url, counted

FAKE_JOB = Path(__file__).resolve().parent / "fake_job.py"


class Worker:
    """One `fake_job.py` sweep process in `root` (its own MLflow store and Optuna storage there)."""

    def __init__(self, root: Path, *overrides: str, name: str = "worker"):
        self.root, self.log = root, root / f"{name}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("MLFLOW_TRACKING_URI", None)
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, str(FAKE_JOB), *overrides],
                cwd=root,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
            )

    def wait(self, timeout: float = 120) -> str:
        assert self.proc.wait(timeout=timeout) == 0, self.output()
        return self.output()

    def output(self) -> str:
        return self.log.read_text()


def study(root: Path, name: str = "fake", storage: str | None = None) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=storage or f"sqlite:///{root / 'optuna.db'}")


def parent_runs(root: Path) -> list:
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("sweep-tests")
    return client.search_runs([experiment.experiment_id], max_results=100)


def prepare_mlflow(root: Path) -> None:
    """Create the MLflow store before workers start side by side (bookseg.run's PrepareTrackingStore)."""
    MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}").create_experiment("sweep-tests")


def wait_until(condition, timeout: float, what: str, worker: Worker) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert worker.proc.poll() is None, f"worker ended before {what}:\n{worker.output()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{worker.output()}"
        time.sleep(0.1)


def test_search_space_from_yaml_params_and_command_line():
    space = search_space(
        {"lr_scale": "interval(0.25, 2.0)", "optimizer.weight_decay": "tag(log, interval(1e-5, 1e-3))"},
        [
            "+experiment=smoke",
            "optimizer.momentum=choice(0.8, 0.9)",
            "lr_scale=0.5",
            "stages.epochs=range(2,9,2)",
        ],
    )
    assert space.fixed == ["+experiment=smoke", "lr_scale=0.5"]  # the command line replaces params' key
    dists = space.distributions
    assert dists["optimizer.weight_decay"] == optuna.distributions.FloatDistribution(1e-5, 1e-3, log=True)
    assert dists["optimizer.momentum"] == optuna.distributions.CategoricalDistribution([0.8, 0.9])
    assert dists["stages.epochs"] == optuna.distributions.IntDistribution(2, 8, step=2)
    overrides = space.overrides(
        {"optimizer.weight_decay": 1.2345e-05, "optimizer.momentum": 0.9, "stages.epochs": 4}
    )
    assert overrides[2:] == ["optimizer.weight_decay=1.2345e-05", "optimizer.momentum=0.9", "stages.epochs=4"]
    assert [format_value(v) for v in ("small", "a b", True, None)] == ["small", "'a b'", "true", "null"]


def test_a_job_gets_its_trial_and_storage_as_overrides_hydra_parses_back():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from bookseg.sweep.study import job_overrides

    class Trial:
        number, params = 7, {"anchors": "small", "lr_scale": 0.5}

    space = search_space(
        {"anchors": "choice(default, small)", "lr_scale": "interval(0.1, 1)"}, ["+sweep=optuna"]
    )
    url = "postgresql://me@db-host:5432/optuna?sslmode=require&application_name=it's"
    parsed = OverridesParser.create().parse_overrides(job_overrides(space, Trial(), "sweep optuna", url))
    values = {o.key_or_group: o.value() for o in parsed}
    assert values == {
        "sweep": "optuna",
        "anchors": "small",
        "lr_scale": 0.5,
        "hydra.sweeper.trial": 7,
        "hydra.sweeper.study_name": "sweep optuna",
        "hydra.sweeper.storage": url,
    }
    assert [o.is_hydra_override() for o in parsed] == [False] * 3 + [True] * 3  # not in the job's run key


def test_storage_must_be_a_shareable_database(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert absolute_storage_url("sqlite:///optuna.db") == f"sqlite:///{tmp_path / 'optuna.db'}"
    assert absolute_storage_url("postgresql://me@db.example/bookseg").startswith("postgresql://me@")
    for bad in (None, "sqlite://", "sqlite:///:memory:", "optuna.db"):
        with pytest.raises(ValueError, match="hydra.sweeper.storage"):
            absolute_storage_url(bad)


def test_study_killed_after_its_first_trial_resumes_to_three_trials(tmp_path):
    args = (
        "hydra.sweeper.n_trials=3",
        "hydra/sweeper/pruner=nop",
        "hydra.sweeper.heartbeat_interval=1",
        "hydra.sweeper.grace_period=2",
        "folds=3",
        "fold_seconds=1.0",
        "hold_trial=1",  # only in the first worker: the second one runs trials 2 and 3
    )
    first = Worker(tmp_path, *args, name="first")

    def trial1_running():  # trial 0 finished, trial 1 has reported its first fold and waits to be killed
        if "Optuna study 'fake'" not in first.output():  # the worker has made the database and study
            return False
        trials = study(tmp_path).get_trials()
        states = [t.state for t in trials]
        return states == [TrialState.COMPLETE, TrialState.RUNNING] and bool(trials[1].intermediate_values)

    wait_until(trial1_running, 120, "trial 1's first fold", first)
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(timeout=30)
    killed = study(tmp_path).trials[1]
    assert killed.state == TrialState.RUNNING  # nobody told Optuna: the worker died

    out = Worker(tmp_path, *args, name="second").wait()  # the same command again

    trials = study(tmp_path).trials
    kept = counted(trials)
    assert len(kept) == 3 and all(t.state == TrialState.COMPLETE for t in kept), out
    assert trials[1].state == TrialState.FAIL  # the killed trial: stale heartbeat
    retries = [t for t in kept if t.system_attrs.get("retry_history") == [1]]
    assert len(retries) == 1 and retries[0].params == killed.params  # ...re-run with its parameters
    assert len(trials) == 4 and trials[0].state == TrialState.COMPLETE
    assert all(t.intermediate_values.keys() == {0, 1, 2} for t in kept)
    assert "Optuna study 'fake'" in out and "3 of 3 trials, 3 complete, 0 pruned, 0 failed" in out
    finished = {r.data.tags["optuna.trial"]: r for r in parent_runs(tmp_path) if r.info.status == "FINISHED"}
    assert set(finished) == {str(t.number) for t in kept}
    for t in kept:
        tags = finished[str(t.number)].data.tags
        assert tags["optuna.state"] == "COMPLETE" and float(tags["optuna.value"]) == pytest.approx(t.value)
        assert json.loads(tags["optuna.params"]) == t.params
    assert finished[str(retries[0].number)].data.tags["optuna.retry_of"] == "1"
    assert len(list(tmp_path.glob("logs/trial0_fold*"))) == 3  # trial 0 was not run again


@pytest.fixture(params=["sqlite", "postgresql"])
def storage(request, tmp_path):
    """The study's storage: the default sqlite file, or a PostgreSQL database (the many-machines setup)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'optuna.db'}"
    else:
        from tests.servers import postgres

        with postgres(tmp_path / "postgres", database="optuna") as url:
            yield url


def test_two_workers_share_one_study_without_duplicates(tmp_path, storage):
    prepare_mlflow(tmp_path)
    args = (
        "hydra.sweeper.n_trials=4",
        "hydra/sweeper/pruner=nop",
        "folds=2",
        "fold_seconds=0.5",
        "barrier=2",
        f"hydra.sweeper.storage='{storage}'",
    )
    workers = [Worker(tmp_path, *args, name=f"worker{i}") for i in range(2)]
    outputs = [w.wait() for w in workers]

    trials = study(tmp_path, storage=storage).trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(counted(trials)) == 4 and len(complete) == 4, outputs
    # Two workers asking at the very same moment for the last trial: the later one is put back in the queue.
    assert all(t.state in (TrialState.COMPLETE, TrialState.WAITING) for t in trials)
    numbers = {t.number for t in complete}
    logs = {int(p.name.split("_")[0][5:]): p.read_text() for p in (tmp_path / "logs").glob("trial*_fold0")}
    ran = [{n for n, pid in logs.items() if pid == str(w.proc.pid)} for w in workers]
    assert all(ran) and ran[0].isdisjoint(ran[1]) and ran[0] | ran[1] == numbers  # both worked, no overlap
    assert len({t.params["x"] for t in complete}) == 4  # same seed in both workers, still no repeated point
    runs = parent_runs(tmp_path)
    assert sorted(int(r.data.tags["optuna.trial"]) for r in runs) == sorted(numbers)
    assert all(r.info.status == "FINISHED" for r in runs)


def test_hopeless_trial_is_pruned_after_its_first_fold(tmp_path):
    out = Worker(
        tmp_path,
        "hydra.sweeper.n_trials=3",
        "quality=choice(good,fair,hopeless)",
        "hydra.sweeper.enqueue_trials=[{quality: good, x: 0.5}, {quality: fair, x: 0.5}, {quality: hopeless, x: 0.5}]",
        "hydra.sweeper.pruner.n_startup_trials=2",
    ).wait()

    trials = study(tmp_path).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED], out
    assert [t.params["quality"] for t in trials] == ["good", "fair", "hopeless"]
    assert trials[2].intermediate_values == {0: pytest.approx(0.1)}  # below the median 0.75 at fold 0
    assert sorted(p.name for p in (tmp_path / "logs").glob("trial2_*")) == [
        "trial2_fold0"
    ]  # folds 1, 2 not run
    assert len(list((tmp_path / "logs").glob("trial*_fold*"))) == 3 + 3 + 1
    runs = {r.data.tags["optuna.trial"]: r for r in parent_runs(tmp_path)}
    pruned = runs["2"]
    assert pruned.info.status == "KILLED"
    assert (
        pruned.data.tags["optuna.state"] == "PRUNED" and pruned.data.tags["optuna.pruned_after_fold"] == "0"
    )
    assert [runs[n].info.status for n in ("0", "1")] == ["FINISHED", "FINISHED"]
    assert "3 of 3 trials, 2 complete, 1 pruned, 0 failed" in out


def test_a_worker_that_loses_the_race_for_the_last_trial_puts_it_back(tmp_path, monkeypatch):
    from bookseg.sweep import study as study_module

    storage = study_module.open_storage(f"sqlite:///{tmp_path / 'optuna.db'}", 60, 180, 3)
    shared = optuna.create_study(study_name="race", storage=storage, direction="maximize")
    space = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}
    first = study_module.claim(shared, storage, space, n_trials=1, heartbeat=True)
    assert first.number == 0 and study_module.claim(shared, storage, space, 1, True) is None  # budget used
    # Another worker counted before trial 0 existed, then asked: its trial 1 goes back to the queue.
    real_counted, calls = study_module.counted, []

    def counted_once_stale(trials):
        calls.append(1)
        return [] if len(calls) == 1 else real_counted(trials)

    monkeypatch.setattr(study_module, "counted", counted_once_stale)
    assert study_module.claim(shared, storage, space, 1, True) is None
    trials = shared.get_trials()
    assert [t.state for t in trials] == [TrialState.RUNNING, TrialState.WAITING]
    assert [t.number for t in real_counted(trials)] == [0]


def test_trials_launched_two_at_a_time_report_from_joblib_processes(tmp_path):
    prepare_mlflow(tmp_path)
    worker = Worker(
        tmp_path,
        "hydra/launcher=joblib",  # what +sweep=parallel selects for bookseg.run
        "hydra.launcher.n_jobs=2",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.n_trials=2",
        "folds=2",
        "fold_seconds=0.2",
    )
    out = worker.wait()

    trials = study(tmp_path).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2, out
    assert "is launching 2 jobs" in out  # both trials in one batch
    assert all(t.intermediate_values.keys() == {0, 1} for t in trials)  # reported from the job processes
    pids = {(tmp_path / "logs" / f"trial{n}_fold0").read_text() for n in (0, 1)}
    assert str(worker.proc.pid) not in pids  # the jobs ran in joblib's processes, not the sweeper's
    runs = parent_runs(tmp_path)
    assert sorted(r.data.tags["optuna.trial"] for r in runs) == ["0", "1"]
    assert all(r.data.tags["optuna.state"] == "COMPLETE" for r in runs)
