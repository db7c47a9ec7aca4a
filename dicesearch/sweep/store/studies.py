"""A sweep's Optuna study: storage, samplers, pruners, trial records by number, recovery after a kill.

:class:`SweepStudy` wraps the ``optuna.Study`` of a sweep together with the storage it was
opened on, so a trial's record can be written by trial number (the Ray backend and the
recovery of a dead process's trials have no live ``optuna.Trial``) through the storage's
public API.
"""

from __future__ import annotations

import os
import socket
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from dicesearch.errors import DicesearchError, SpecError
from dicesearch.stores import check_optuna_storage, shown_url  # noqa: F401  (shown_url: re-exported)
from dicesearch.sweep.space.samplers import make_sampler
from dicesearch.sweep.store.locks import sqlite_creation_lock
from dicesearch.sweep.store.schema import (
    ATTR_REASON,
    ATTR_RETRY_OF,
    ATTR_STATUS,
    ATTR_WORKER,
    CONSTRAINT,
    STATUS_INTERRUPTED,
    STUDY_RUNG_KEYS,
    TrialRecord,
    state_for,
)
from dicesearch.sweep.store.view import StudyView


def this_worker() -> str:
    """``<host>:<pid>`` of this sweep process, as trials record it in ``ATTR_WORKER``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def storage_for(url: str) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``url``.

    ``sqlite:///file.db``: fine for one sweep process (the default). ``*.journal`` or
    ``*.log`` (a path): Optuna's journal file, safe for several processes on one machine or a
    shared file system. ``postgresql://...`` / ``mysql://...``: many workers on many machines.
    """
    check_optuna_storage(url, connect=True)  # another program's file or tables: refused before Optuna writes into it
    if url.endswith((".journal", ".log")) and "://" not in url:
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        Path(url).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(url))
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    except ImportError:  # optuna's own message names no module
        raise DicesearchError(
            f"storage {shown_url(url)}: its database driver is not installed; pip install psycopg2-binary "
            "(postgresql://) or pymysql (mysql+pymysql://)"
        ) from None
    except Exception as exc:  # sqlalchemy: unreachable server, unwritable folder, bad URL
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise DicesearchError(f"storage {shown_url(url)}: cannot open it ({first}); check the URL, the server and the folder") from None


_DRIVER_PACKAGES = {"psycopg": "psycopg[binary]", "psycopg2": "psycopg2-binary", "MySQLdb": "mysqlclient", "pymysql": "pymysql"}


def probe_storage(url: str) -> None:
    """Raise DicesearchError if ``url`` obviously cannot be opened, writing nothing: a sqlite
    file in a folder that does not exist, an existing file that is not an Optuna storage, or a
    server URL whose driver is not installed."""
    check_optuna_storage(url)  # an existing file of another program (reads it, connects to nothing)
    if "://" not in url:
        return  # a journal file: its folder is created when the study opens
    if url.startswith("sqlite:///"):
        folder = Path(url[len("sqlite:///"):]).parent
        if url[len("sqlite:///"):] not in ("", ":memory:") and not folder.is_dir():
            raise DicesearchError(f"storage {url}: the folder {folder} does not exist; create it or give another path")
        return
    from sqlalchemy import create_engine

    try:
        create_engine(url).dispose()  # imports the driver; connects to nothing
    except ImportError as exc:
        module = exc.name or "its driver"
        package = _DRIVER_PACKAGES.get(module, module)
        raise DicesearchError(
            f"storage {shown_url(url)}: the database driver {module} is not installed; pip install '{package}', or name "
            "an installed driver in the URL (postgresql+psycopg2://, mysql+pymysql://)"
        ) from None
    except Exception as exc:
        raise DicesearchError(f"storage {shown_url(url)}: not a database URL SQLAlchemy can use ({type(exc).__name__}: {exc})") from None


def make_pruner(kind: str, directions: Sequence[str], train_steps: int, report_every: int) -> optuna.pruners.BasePruner:
    if kind == "none" or len(directions) > 1:  # Optuna prunes single-objective studies only
        return optuna.pruners.NopPruner()
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=report_every, max_resource=train_steps)
    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=max(report_every, train_steps // 3))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SweepStudy:
    """The Optuna study of one sweep, opened on ``storage``."""

    def __init__(self, study: optuna.Study, storage: optuna.storages.BaseStorage):
        self.study = study
        self.storage = storage
        self._study_id = storage.get_study_id_from_name(study.study_name)

    @classmethod
    def open(
        cls, name: str, storage_url: str, directions: list[str], seed: int, pruner=None, metric_names: Sequence[str] | None = None,
        rung_keys: Sequence[str] | None = None,
    ) -> SweepStudy:
        """Create the study or load it (a resumed sweep, another worker); its directions must match.

        ``metric_names`` (``fid_128``, ...) are stored with the study, so tools that read the
        storage as it is (optuna-dashboard) label the objectives by name, not "Objective 0".
        ``rung_keys`` (``fid_64``, ``fid_128``, ...: the score each rung ranks by) are stored too.
        A study stored with other names or rung keys is refused: its scores would be ranked
        beside scores of another N (raised as a SpecError)."""
        storage = storage_for(storage_url)
        with sqlite_creation_lock(storage_url):
            study = optuna.create_study(
                study_name=name,
                storage=storage,
                directions=directions,
                sampler=make_sampler(directions, seed),
                pruner=pruner or optuna.pruners.NopPruner(),
                load_if_exists=True,
            )
        existing = [d.name.lower() for d in study.directions]
        if existing != directions:
            raise SpecError(
                f"study '{name}' in {storage_url} optimises {existing}, but the search space asks for {directions}; "
                "use a new study_name (or storage) for a different objective"
            )
        if metric_names is not None and study.metric_names != list(metric_names):
            if study.metric_names is not None:
                raise SpecError(
                    f"study '{name}' in {storage_url} scores {', '.join(study.metric_names)}, but the search space asks for "
                    f"{', '.join(metric_names)} (budget.fid_samples changed?); scores of another N do not compare: use a new study_name (or storage)"
                )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names(list(metric_names))
        if rung_keys is not None:
            stored = study.user_attrs.get(STUDY_RUNG_KEYS)
            if stored is None:
                study.set_user_attr(STUDY_RUNG_KEYS, list(rung_keys))
            elif stored != list(rung_keys):
                raise SpecError(
                    f"study '{name}' in {storage_url} ranks its rungs by {', '.join(stored)}, but the search space asks for "
                    f"{', '.join(rung_keys)} (fidelity.samples or budget.fid_samples changed?); scores of another N do not compare: "
                    "use a new study_name (or storage)"
                )
        return cls(study, storage)

    # -- one trial, by number ---------------------------------------------------------------

    def trial(self, number: int) -> FrozenTrial:
        return self.storage.get_trial(self._trial_id(number))

    def set_attrs(self, number: int, attrs: Mapping[str, Any]) -> None:
        """Write user attributes of a running trial (raises UpdateFinishedTrialError once it ended)."""
        trial_id = self._trial_id(number)
        for key, value in attrs.items():
            self.storage.set_trial_user_attr(trial_id, key, value)

    def finish(self, number: int, record: TrialRecord) -> bool:
        """Write trial ``number``'s record and tell the study how it ended: one write of one record.

        With ``record.values`` the trial is COMPLETE with those objective values (a complete
        trial, or an infeasible one the sampler must learn from); ``record.constraint`` (> 0:
        violated) goes to Optuna's own record of constraints, which TPE and NSGA-II read.
        Without values the trial ends in its status's state (PRUNED or FAIL). Returns False,
        writing nothing, if the trial had already ended (another process recorded it).
        """
        if self.trial(number).state.is_finished():
            return False
        self.set_attrs(number, {**record.attrs, ATTR_STATUS: record.status, **({ATTR_REASON: record.reason} if record.reason else {})})
        if record.constraint is not None:
            optuna.trial.Trial(self.study, self._trial_id(number)).set_constraint(CONSTRAINT, record.constraint)
        if record.values is not None:
            self.study.tell(number, list(record.values) if len(record.values) > 1 else record.values[0])
        else:
            self.study.tell(number, state=state_for(record.status))
        return True

    def report(self, number: int, value: float, step: int) -> None:
        """An intermediate value of a running trial (a rung's score at ``step`` training steps)."""
        self.storage.set_trial_intermediate_value(self._trial_id(number), step, value)

    def _trial_id(self, number: int) -> int:
        return self.storage.get_trial_id_from_study_id_trial_number(self._study_id, number)

    # -- the study as a whole ---------------------------------------------------------------

    def trials(self, states: Sequence[TrialState] | None = None) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False, states=states)

    def view(self) -> StudyView:
        """The study's trials, read once, with the questions a claim asks of them."""
        return StudyView(self.trials())

    def interrupt(self, number: int, reason: str) -> bool:
        """Record a running trial as interrupted; False if it had ended meanwhile (another
        process recovering it at the same time got there first: the state change is the claim)."""
        try:
            return self.finish(number, TrialRecord(STATUS_INTERRUPTED, reason))
        except (UpdateFinishedTrialError, ValueError):  # ValueError: optuna's "Cannot tell a FAIL trial"
            return False

    def recover_interrupted(self, requeue: bool = True) -> list[int]:
        """Fail trials a dead sweep process on this host left RUNNING, and queue them again.

        Only trials whose recorded worker is on this host with a process that no longer exists
        are touched, so live workers of the same study (here or elsewhere) are left alone.
        ``requeue=False`` only marks them (the Ray backend: Ray Tune re-runs its own trials).
        Returns the numbers of the recovered trials.
        """
        host = socket.gethostname()
        recovered = []
        for trial in self.view().running():
            worker_host, _, pid = trial.user_attrs.get(ATTR_WORKER, "").rpartition(":")
            if worker_host != host or not pid.isdigit() or _pid_alive(int(pid)):
                continue
            if not self.interrupt(trial.number, "interrupted: the sweep process ended during this trial"):
                continue  # only the process whose state change won re-queues it
            if requeue and trial.params:
                self.study.enqueue_trial(trial.params, user_attrs={ATTR_RETRY_OF: trial.number}, skip_if_exists=False)
            recovered.append(trial.number)
        return recovered
