"""Sweeper side of an Optuna sweep: the shared study, the trial budget, launching trials, their outcome.

`n_trials` is the size of the *study*, not of one command: every worker (the same command started on
this or other machines against one storage) claims trials until the study holds `n_trials` counted
trials, so a restarted command continues where the study is, and N workers finish N trials between them.

Counted trials: RUNNING, COMPLETE, PRUNED and FAIL ones, except a FAIL whose worker died (its heartbeat
went stale) and that was re-queued as a retry with the same parameters (the retry counts instead), and
WAITING (queued) ones until a worker takes them.
"""

from __future__ import annotations

import math
import os
import threading
import time
import warnings
from dataclasses import dataclass

import numpy as np
import optuna
from optuna.trial import TrialState

from bookseg.sweep.space import SearchSpace, format_value
from bookseg.sweep.trial import (
    PRUNED_ATTR,
    RUN_ID_ATTR,
    TAG_PRUNED_AFTER,
    TAG_STATE,
    TAG_VALUE,
    TRACKING_URI_ATTR,
)


class StudyConfigError(ValueError):
    """The sweeper's settings cannot make a shared study (names the setting)."""


def absolute_storage_url(url: str | None) -> str:
    """`url` with a relative sqlite path made absolute (jobs may run in other folders); RDB URLs only."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    if not url:
        raise StudyConfigError(
            "hydra.sweeper.storage is required: an Optuna RDB URL such as sqlite:///optuna.db "
            "(one machine) or postgresql://user@host/db (several machines)"
        )
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StudyConfigError(f"hydra.sweeper.storage={url!r} is not a database URL: {exc}") from exc
    if parsed.get_backend_name() == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            raise StudyConfigError(
                f"hydra.sweeper.storage={url!r}: an in-memory sqlite study cannot be shared or resumed; "
                "use a file, e.g. sqlite:///optuna.db"
            )
        parsed = parsed.set(database=os.path.abspath(os.path.expanduser(parsed.database)))
    return parsed.render_as_string(hide_password=False)


def masked(url: str) -> str:
    """`url` without its password, for printing."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


class PerTrialSeedSampler(optuna.samplers.BaseSampler):
    """A sampler rebuilt for every trial with a seed derived from (seed, trial number).

    Workers started with the same seed would otherwise draw the same parameters for their first trials
    (duplicates); this way each trial's draw depends only on its number and the study's history.
    `factory(seed)` builds the configured sampler.
    """

    def __init__(self, factory, seed: int | None):
        self._factory, self._seed = factory, seed
        self._inner = factory(seed)

    def before_trial(self, study, trial):
        if self._seed is not None:
            derived = int(np.random.SeedSequence([self._seed, trial.number]).generate_state(1)[0])
            self._inner = self._factory(derived)
        self._inner.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self._inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values):
        self._inner.after_trial(study, trial, state, values)

    def reseed_rng(self):
        self._inner.reseed_rng()


def open_storage(url: str, heartbeat_interval: int | None, grace_period: int | None, max_retry: int | None):
    """RDB storage with heartbeats: a trial whose worker stops beating for `grace_period` seconds is
    failed by the next worker that looks, and re-queued (up to `max_retry` times) with its parameters."""
    from sqlalchemy.exc import SQLAlchemyError

    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    for attempt in range(5):  # workers started together may race to create a new database's tables
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna 4 and 5
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=heartbeat_interval or None,
                    grace_period=grace_period if heartbeat_interval else None,
                    heartbeat_stale_trial_callback=(
                        optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
                        if heartbeat_interval
                        else None
                    ),
                )
        except SQLAlchemyError:
            if attempt == 4:
                raise
            time.sleep(1 + attempt)


def counted(trials) -> list:
    """The trials that use up the study's budget (see the module docstring)."""
    replaced = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    return [t for t in trials if t.state != TrialState.WAITING and t.number not in replaced]


def claim(study, storage, distributions: dict, n_trials: int, heartbeat: bool):
    """A new trial of `study` (a queued one first), or None when the budget is used up.

    Two workers can ask at the same moment; the one whose trial has the higher number then finds the
    budget taken by lower numbers and puts its trial back in the queue (WAITING, params kept), so the
    study never holds more than `n_trials` counted trials.
    """
    if len(counted(study.get_trials(deepcopy=False))) >= n_trials:
        return None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")
        trial = study.ask()
    if heartbeat:  # at once, before sampling: a worker killed from now on leaves a trial that goes stale
        storage.record_heartbeat(trial._trial_id)
    for name, distribution in distributions.items():
        _suggest(trial, name, distribution)
    before = [t for t in counted(study.get_trials(deepcopy=False)) if t.number < trial.number]
    if len(before) >= n_trials:
        storage.set_trial_state_values(trial._trial_id, state=TrialState.WAITING)
        return None
    return trial


def _suggest(trial, name: str, distribution) -> None:
    """Sample `name` (a queued or retried trial keeps the value it has)."""
    if isinstance(distribution, optuna.distributions.FloatDistribution):
        trial.suggest_float(
            name, distribution.low, distribution.high, step=distribution.step, log=distribution.log
        )
    elif isinstance(distribution, optuna.distributions.IntDistribution):
        trial.suggest_int(
            name, distribution.low, distribution.high, step=distribution.step, log=distribution.log
        )
    else:
        trial.suggest_categorical(name, distribution.choices)


class Heartbeat:
    """Records the heartbeat of the trials being run while the launcher runs them."""

    def __init__(self, storage, trials, interval: int | None):
        self.storage, self.ids, self.interval = storage, [t._trial_id for t in trials], interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name="optuna-heartbeat")

    def _beat(self):
        while not self._stop.wait(self.interval):
            for trial_id in self.ids:
                try:
                    self.storage.record_heartbeat(trial_id)
                except Exception as exc:  # noqa: BLE001 - a missed beat is retried next interval
                    print(f"Optuna heartbeat failed: {exc}", flush=True)

    def __enter__(self):
        if self.interval:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


@dataclass
class Outcome:
    number: int
    state: str  # COMPLETE, PRUNED or FAIL
    value: float | None
    params: dict
    run_id: str | None
    error: str | None = None


def finish(study, storage, trial, job_return) -> Outcome:
    """Tell Optuna how the trial's job ended and put the outcome on its MLflow parent run."""
    from hydra.core.utils import JobStatus

    value, error = None, None
    if job_return.status == JobStatus.COMPLETED:
        value = job_return.return_value
    else:
        error = f"{type(job_return._return_value).__name__}: {job_return._return_value}"
    current = storage.get_trial(trial._trial_id)
    attrs = current.user_attrs  # as the job left them (the Trial object caches its own copy)
    if current.state.is_finished():
        # Its heartbeat went stale (this worker stalled past grace_period) and another worker failed and
        # re-queued it; the retry is the trial that counts.
        state, value, error = current.state.name, None, "failed as stale before its job ended; re-queued"
    elif PRUNED_ATTR in attrs:
        frozen = study.tell(trial, state=TrialState.PRUNED)
        state, value = "PRUNED", frozen.value
    elif isinstance(value, (int, float)) and math.isfinite(value):
        study.tell(trial, float(value))
        state, value = "COMPLETE", float(value)
    else:
        study.tell(trial, state=TrialState.FAIL)
        state = "FAIL"
        error = error or f"the job returned {value!r}"
        value = None
    outcome = Outcome(trial.number, state, value, dict(trial.params), attrs.get(RUN_ID_ATTR), error)
    if outcome.run_id and not current.state.is_finished():  # a stale one's run may be its retry's now
        _mark_run(attrs.get(TRACKING_URI_ATTR), outcome, attrs.get(PRUNED_ATTR))
    return outcome


def _mark_run(tracking_uri: str | None, outcome: Outcome, pruned_after) -> None:
    from mlflow.tracking import MlflowClient

    try:
        client = MlflowClient(tracking_uri=tracking_uri)
        client.set_tag(outcome.run_id, TAG_STATE, outcome.state)
        if outcome.value is not None:
            client.set_tag(outcome.run_id, TAG_VALUE, repr(outcome.value))
        if outcome.state == "PRUNED":
            client.set_tag(outcome.run_id, TAG_PRUNED_AFTER, str(pruned_after))
            client.set_terminated(outcome.run_id, status="KILLED")
    except Exception as exc:  # noqa: BLE001 - the study is told already; MLflow is the record
        print(f"could not mark MLflow run {outcome.run_id} of trial {outcome.number}: {exc}", flush=True)


def job_overrides(space: SearchSpace, trial, study_name: str, storage_url: str) -> list[str]:
    """The trial's overrides: fixed ones, its parameters, and where the job finds its trial."""
    return space.overrides(trial.params) + [
        f"hydra.sweeper.trial={trial.number}",
        f"hydra.sweeper.study_name={format_value(study_name)}",
        "hydra.sweeper.storage=" + "'" + storage_url.replace("\\", "\\\\").replace("'", "\\'") + "'",
    ]


def summary(study, n_trials: int, url: str) -> str:
    """Counts of the study's trials and its best one."""

    trials = counted(study.get_trials(deepcopy=False))
    by_state = {s: sum(t.state == s for t in trials) for s in TrialState}
    lines = [
        (
            f"Optuna study '{study.study_name}' in {masked(url)}: {len(trials)} of {n_trials} trials, "
            f"{by_state[TrialState.COMPLETE]} complete, {by_state[TrialState.PRUNED]} pruned, "
            f"{by_state[TrialState.FAIL]} failed, {by_state[TrialState.RUNNING]} running"
        )
    ]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if complete:
        best = study.best_trial
        lines.append(f"best: trial {best.number}, value {best.value:.4f}, params {best.params}")
    return "\n".join(lines)


@dataclass
class SweepSettings:
    """The sweeper's config (conf/sweep/optuna.yaml, hydra_plugins/bookseg_optuna_sweeper/config.py)."""

    sampler: object
    pruner: object
    direction: str
    study_name: str
    storage: str
    n_trials: int
    n_jobs: int
    params: dict
    enqueue_trials: list
    heartbeat_interval: int | None
    grace_period: int | None
    max_retry: int | None
    wait_for_running: bool


def open_study(settings: SweepSettings, url: str):
    """Create the study, or load it when it exists (the same command again, another worker)."""
    from hydra.utils import instantiate

    storage = open_storage(url, settings.heartbeat_interval, settings.grace_period, settings.max_retry)
    sampler_cfg = settings.sampler
    seed = sampler_cfg.get("seed") if sampler_cfg is not None else None
    sampler = (
        PerTrialSeedSampler(lambda s: instantiate(sampler_cfg, seed=s), seed)
        if sampler_cfg is not None and "seed" in sampler_cfg
        else (instantiate(sampler_cfg) if sampler_cfg is not None else None)
    )
    pruner = instantiate(settings.pruner) if settings.pruner is not None else optuna.pruners.NopPruner()
    study = optuna.create_study(
        storage=storage,
        study_name=settings.study_name,
        sampler=sampler,
        pruner=pruner,
        direction=settings.direction,
        load_if_exists=True,
    )
    if study.direction.name.lower() != settings.direction.lower():
        raise StudyConfigError(
            f"study '{settings.study_name}' in {masked(url)} was created to {study.direction.name.lower()}; "
            f"hydra.sweeper.direction={settings.direction} does not match it"
        )
    for params in settings.enqueue_trials or []:
        study.enqueue_trial(dict(params), skip_if_exists=True)
    return study, storage


def run_study(settings: SweepSettings, space: SearchSpace, launcher, sweep_dir: str | None) -> list[Outcome]:
    """Claim trials and launch their jobs, `n_jobs` at a time, until the study's budget is used up."""
    url = absolute_storage_url(settings.storage)
    study, storage = open_study(settings, url)
    done = len(counted(study.get_trials(deepcopy=False)))
    print(
        f"Optuna study '{settings.study_name}' in {masked(url)}: {done} of {settings.n_trials} trials "
        f"{'already in the study' if done else 'to run'}, {settings.direction} the objective",
        flush=True,
    )
    heartbeat = bool(settings.heartbeat_interval)
    outcomes: list[Outcome] = []
    job_index, waited_for = 0, None
    while True:
        if heartbeat:  # trials of killed workers: failed and re-queued
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)
        batch = []
        while len(batch) < max(1, settings.n_jobs):
            trial = claim(study, storage, space.distributions, settings.n_trials, heartbeat)
            if trial is None:
                break
            batch.append(trial)
        if not batch:
            trials = study.get_trials(deepcopy=False)
            running = [t.number for t in trials if t.state == TrialState.RUNNING]
            if running and settings.wait_for_running and heartbeat:
                # Another worker's trial may still die and be re-queued: wait and take it then.
                if running != waited_for:
                    print(
                        f"budget claimed; waiting for trials {running} of other workers (a dead worker's "
                        f"trial is re-queued after grace_period; hydra.sweeper.wait_for_running=false ends "
                        "at once)",
                        flush=True,
                    )
                    waited_for = running
                time.sleep(2.0)
                continue
            break
        for trial in batch:
            print(f"Optuna trial {trial.number}: {trial.params}", flush=True)
        overrides = [job_overrides(space, t, settings.study_name, url) for t in batch]
        with Heartbeat(storage, batch, settings.heartbeat_interval):
            returns = launcher.launch(overrides, initial_job_idx=job_index)
        job_index += len(batch)
        for trial, job_return in zip(batch, returns, strict=True):
            outcome = finish(study, storage, trial, job_return)
            outcomes.append(outcome)
            value = "" if outcome.value is None else f" value {outcome.value:.4f}"
            error = f" ({outcome.error[:200]})" if outcome.error else ""
            print(f"Optuna trial {outcome.number}: {outcome.state}{value}{error}", flush=True)
    text = summary(study, settings.n_trials, url)
    print("\n" + text, flush=True)
    if sweep_dir:
        os.makedirs(sweep_dir, exist_ok=True)
        with open(os.path.join(sweep_dir, "optuna_study.txt"), "w", encoding="utf-8") as f:
            f.write(text + "\n")
    return outcomes
