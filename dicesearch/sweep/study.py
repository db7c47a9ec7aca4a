"""Optuna studies for sweeps: storage, samplers, pruners, and recovery after a kill."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from dicesearch.errors import SpecError
from dicesearch.sweep.locks import sqlite_creation_lock
from dicesearch.sweep.tracking import ATTR_REASON, ATTR_STATUS, ATTR_STATUS_SURPLUS

WORKER_ATTR = "worker"  # "<host>:<pid>" of the sweep process running a trial


def this_worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def storage_for(url: str):
    """An Optuna storage for ``url``.

    ``sqlite:///file.db``: fine for one sweep process (the default). ``*.journal`` or
    ``*.log`` (a path): Optuna's journal file, safe for several processes on one machine or a
    shared file system. ``postgresql://...`` / ``mysql://...``: many workers on many machines.
    """
    if url.endswith((".journal", ".log")) and "://" not in url:
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        Path(url).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(url))
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)


def make_sampler(directions: list[str], seed: int):
    if len(directions) > 1:
        return optuna.samplers.NSGAIISampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=3)


def make_pruner(kind: str, directions: list[str], train_steps: int, report_every: int):
    if kind == "none" or len(directions) > 1:  # Optuna prunes single-objective studies only
        return optuna.pruners.NopPruner()
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=report_every, max_resource=train_steps)
    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=max(report_every, train_steps // 3))


def open_study(name: str, storage_url: str, directions: list[str], seed: int, pruner) -> optuna.Study:
    with sqlite_creation_lock(storage_url):
        study = optuna.create_study(
            study_name=name,
            storage=storage_for(storage_url),
            directions=directions,
            sampler=make_sampler(directions, seed),
            pruner=pruner,
            load_if_exists=True,
        )
    existing = [d.name.lower() for d in study.directions]
    if existing != directions:
        raise SpecError(
            f"study '{name}' in {storage_url} optimises {existing}, but the search space asks for {directions}; "
            "use a new study_name (or storage) for a different objective"
        )
    return study


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_interrupted(study: optuna.Study, requeue: bool = True) -> list[int]:
    """Fail trials a dead sweep process on this host left RUNNING, and queue them again.

    Only trials whose recorded worker is on this host with a process that no longer exists
    are touched, so live workers of the same study (here or elsewhere) are left alone.
    ``requeue=False`` only marks them (the Ray backend: Ray Tune re-runs its own trials).
    Returns the numbers of the recovered trials.
    """
    host = socket.gethostname()
    recovered = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get(WORKER_ATTR, "")
        worker_host, _, pid = worker.rpartition(":")
        if worker_host != host or not pid.isdigit() or _pid_alive(int(pid)):
            continue
        storage = study._storage
        try:
            storage.set_trial_user_attr(trial._trial_id, ATTR_STATUS, "interrupted")
            storage.set_trial_user_attr(trial._trial_id, ATTR_REASON, "interrupted: the sweep process ended during this trial")
            # the state change is the claim: if another process recovering at the same time
            # finished the trial first, this raises and only that process re-queues it
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        except UpdateFinishedTrialError:
            continue
        if requeue and trial.params:
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number}, skip_if_exists=False)
        recovered.append(trial.number)
    return recovered


_NOT_COUNTED = ("interrupted", ATTR_STATUS_SURPLUS)  # re-run elsewhere / never run


def counted_trials(study: optuna.Study) -> list:
    """Trials that count towards the sweep's total: finished, except interrupted ones (re-run)
    and surplus ones (never run)."""
    finished = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    return [t for t in study.get_trials(deepcopy=False, states=finished) if t.user_attrs.get(ATTR_STATUS) not in _NOT_COUNTED]


def rank_among_live(study: optuna.Study, number: int) -> int:
    """How many counted or running trials have a smaller number than trial ``number``."""
    live = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)
    return sum(
        1
        for t in study.get_trials(deepcopy=False, states=live)
        if t.number < number and t.user_attrs.get(ATTR_STATUS) not in _NOT_COUNTED
    )
