"""One sweep process's view of a sweep: open or resume its study, mirror it, and hand out its trials' lifecycle.

A :class:`SweepSession` holds a sweep's study (:class:`~dicesearch.sweep.store.studies.SweepStudy`),
its MLflow mirror and its console. The Optuna backend and the Ray backend each open one;
its :attr:`~SweepSession.trials` (a :class:`~dicesearch.sweep.lifecycle.trial.TrialLifecycle`)
records, mirrors and prints every trial the same way whichever backend ran it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from rich.console import Console

from dicesearch.sweep.lifecycle.messages import TrialSettings
from dicesearch.sweep.lifecycle.progress import TrialProgress
from dicesearch.sweep.lifecycle.trial import TrialLifecycle
from dicesearch.sweep.store.locations import SweepLocations
from dicesearch.sweep.store.mlflow_mirror import MlflowMirror
from dicesearch.sweep.store.schema import ATTR_WORKER
from dicesearch.sweep.store.studies import SweepStudy, this_worker


@dataclass
class SweepResult:
    study: optuna.Study
    ran: int = 0  # trials this process ran to an end
    recovered: list[int] = field(default_factory=list)  # trials a dead sweep left running, now interrupted
    mlflow_failures: int = 0


def sweep_params(config) -> dict[str, Any]:
    """The few key params of a sweep's MLflow parent run (both backends; Ray adds its own)."""
    return {
        "study": config.resolved_study_name,
        "backend": config.backend,
        "trials": config.trials,
        "objective": ",".join(config.objective.metrics),
        "fid_samples": config.budget.fid_samples,
        "train_steps": config.budget.train_steps,
        "batch_size": config.budget.batch_size,
        "memory_budget_gb": config.memory.budget_gb,
        "data": config.data.kind,
        "seed": config.seed,
    }


class SweepSession:
    """One sweep process's view of a sweep: its study, MLflow mirror, console and trials' lifecycle.

    ``space`` is what the trials come from: a :class:`~dicesearch.sweep.space.search_space.SearchSpace`,
    or a comparison's plan; both have ``config``, ``source`` and ``registry``.
    """

    def __init__(self, space, locations: SweepLocations, console: Console | None = None, settings: TrialSettings | None = None):
        self.space = space
        self.config = space.config
        self.locations = locations
        self.console = console or Console()
        self.name = self.config.resolved_study_name
        self.directions = self.config.objective.directions
        self.metric_keys = self.config.metric_keys
        self.settings = settings or TrialSettings.for_sweep(self.config)
        self.mirror = MlflowMirror(locations.tracking_uri, self.name, space.source)
        self.study: SweepStudy | None = None
        self.trials: TrialLifecycle | None = None
        self.after_open: list[Callable[[optuna.Study], None]] = []  # called with the study once open (the plots drawn ahead)
        rungs = self.config.fidelity.rungs if self.config.fidelity else None
        self.progress = TrialProgress(self.console, self.config.budget.train_steps, self.config.replicates, rungs)

    # -- the sweep ----------------------------------------------------------------------------

    def open(self, params: dict[str, Any], pruner=None, requeue: bool = True) -> SweepResult:
        """Open (or resume) the study, recover what a dead sweep left running, start the mirror."""
        config = self.config
        self._attach(SweepStudy.open(self.name, self.locations.storage_url, self.directions, config.seed, pruner, self.metric_keys, config.rung_keys))
        result = SweepResult(self.study.study)
        result.recovered = self.study.recover_interrupted(requeue=requeue)
        if result.recovered:
            self.console.print(f"resuming: trial(s) {', '.join(map(str, result.recovered))} were interrupted and will run again")
        done = len(self.study.view().counted())
        if done:
            self.console.print(f"resuming study '{self.name}': {done} of {config.trials} trials already finished")
        self.mirror.start_sweep(params, self._space_text())
        self.reconcile()
        for call in self.after_open:
            call(self.study.study)
        return result

    def attach(self, params: dict[str, Any]) -> None:
        """Join the study another object of this process opened (the Ray recorder): no recovery."""
        self._attach(SweepStudy.open(self.name, self.locations.storage_url, self.directions, self.config.seed, metric_names=self.metric_keys, rung_keys=self.config.rung_keys))
        self.mirror.start_sweep(params, self._space_text())

    def _attach(self, study: SweepStudy) -> None:
        self.study = study
        self.trials = TrialLifecycle(study, self.mirror, self.console, self.progress, self.settings, self.space.registry)

    def _space_text(self) -> str:
        source = Path(self.space.source)
        return source.read_text() if source.is_file() else ""

    def reconcile(self) -> None:
        self.mirror.reconcile(self.study.trials())

    def stopped(self, status: str) -> None:
        """The sweep ends early (Ctrl-C, an error): bring MLflow in line and close the parent run."""
        self.progress.close()
        self.reconcile()
        self.mirror.end_sweep(status)

    def finish(self, result: SweepResult) -> SweepResult:
        self.progress.close()
        self.reconcile()
        result.ran = self.trials.ran
        result.mlflow_failures = self.mirror.failures
        return result

    # -- trials cut short by the sweep stopping -----------------------------------------------------

    def interrupt(self, number: int, reason: str) -> bool:
        """Trial ``number`` (running here) is cut short by the sweep stopping: record and mirror it."""
        if not self.study.interrupt(number, reason):
            return False
        self.mirror.finish_trial(self.study.trial(number))
        self.console.print(f"trial {number}: {reason}", highlight=False, style="yellow")
        return True

    def interrupt_all_here(self, reason: str) -> None:
        """Every trial this process is running becomes interrupted (the sweep stops under it).
        Only the study is written: :meth:`stopped` then mirrors them with the rest."""
        for trial in self.study.view().running():
            if trial.user_attrs.get(ATTR_WORKER) == this_worker():
                self.study.interrupt(trial.number, reason)
