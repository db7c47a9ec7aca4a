"""The results study of a Ray sweep: every Ray Tune trial as a trial of the sweep's Optuna study.

Ray Tune keeps its own trials; the ranked table, the plots, ``dicesearch export`` and the
MLflow mirror read the sweep's Optuna study. :class:`RayResults` writes one into the
other: a RUNNING study trial when a Ray trial starts (with ``ATTR_RAY_TRIAL``), then the
lifecycle's own steps (:class:`~dicesearch.sweep.lifecycle.trial.TrialLifecycle`: begin,
the loss and rung scores while it trains, finish), the same the Optuna backend calls. Every
lookup goes through the study, so a RayResults built later (the driver catching up after
``fit``, or a recorder Ray unpickled on restore) continues where another left off.

:class:`ResultsRecorder` is the driver-side Tune callback that feeds it. Ray pickles
callbacks into its experiment folder and unpickles them on restore, so the recorder carries
only plain settings (the search-space file, where the sweep keeps things) and builds its
session on first use, in whichever process Tune runs it.
"""

from __future__ import annotations

import re
import shutil
import threading
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from ray import tune
from rich.console import Console

from dicesearch.numbers import finite
from dicesearch.sweep.backends.ray_tune.trainable import SampledConfig, TrialReport, rung_root
from dicesearch.sweep.lifecycle import rungs
from dicesearch.sweep.lifecycle.messages import TrialOutcome, TrialSettings
from dicesearch.sweep.lifecycle.session import SweepSession
from dicesearch.sweep.store.locations import SweepLocations
from dicesearch.sweep.store.schema import ATTR_PARAMS, ATTR_RAY_TRIAL, ATTR_RETRY_OF, ATTR_STATUS, ATTR_WORKER, STATUS_INTERRUPTED
from dicesearch.sweep.store.studies import this_worker


class RayResults:
    """Ray trials -> results-study trials, recorded and mirrored by ``session``."""

    def __init__(self, session: SweepSession):
        self.session = session
        self._numbers: dict[str, int] = {}  # Ray trial id -> study trial number of its current run
        self._kept: set[str] = set()  # Ray trials re-run although their result was already recorded
        self._curves: dict[str, list[list[float]]] = {}
        self._lock = threading.Lock()

    @property
    def study(self):
        return self.session.study

    def restarted(self, trial) -> None:
        """Ray (re)starts ``trial``: a fresh loss curve, and a study trial for it."""
        self._curves[trial.trial_id] = []
        self.started(trial)

    def started(self, trial) -> None:
        """Ray trial ``trial`` started (or its start was missed): give it a RUNNING study trial."""
        with self._lock:
            if trial.trial_id in self._numbers:
                return
            sampled = SampledConfig.of(trial.config)
            values = SampledConfig.values(trial.config)
            records = [t for t in self.study.trials() if t.user_attrs.get(ATTR_RAY_TRIAL) == trial.trial_id]
            here = [t for t in records if not t.state.is_finished() and t.user_attrs.get(ATTR_WORKER) == this_worker()]
            if here:  # started by another RayResults of this process (the recorder)
                self._numbers[trial.trial_id] = here[-1].number
                return
            recorded = [t for t in records if t.state.is_finished() and t.user_attrs.get(ATTR_STATUS) != STATUS_INTERRUPTED]
            if recorded:
                # the trial ended before Ray's last experiment snapshot caught up: keep the first result
                self._numbers[trial.trial_id] = recorded[0].number
                self._kept.add(trial.trial_id)
                return
            user_attrs = {ATTR_WORKER: this_worker(), ATTR_RAY_TRIAL: trial.trial_id, ATTR_PARAMS: values}
            retried = records[-1] if records else self._interrupted_like(values)
            if retried is not None:
                user_attrs[ATTR_RETRY_OF] = retried.number
            distributions = {k: optuna.distributions.json_to_distribution(v) for k, v in sampled.distributions.items()}
            self.study.study.add_trial(
                optuna.trial.create_trial(state=TrialState.RUNNING, params=values, distributions=distributions, user_attrs=user_attrs)
            )
            number = max(t.number for t in self.study.trials() if t.user_attrs.get(ATTR_RAY_TRIAL) == trial.trial_id)
            self._numbers[trial.trial_id] = number
        life = self.session.trials
        life.begin(number, sampled.candidate)
        if sampled.candidate.outcome is None and sampled.candidate.spec_yaml:
            life.training_starts(number, sampled.candidate)

    def _interrupted_like(self, values: dict[str, Any]):
        """An interrupted trial with these values that no trial retries yet: Ray re-created it
        under a new id because its last experiment snapshot predates the trial."""
        trials = self.study.trials()
        retried = {t.user_attrs.get(ATTR_RETRY_OF) for t in trials}
        return next(
            (t for t in trials if t.user_attrs.get(ATTR_STATUS) == STATUS_INTERRUPTED and t.params == values and t.number not in retried),
            None,
        )

    def progress(self, trial, result: dict) -> None:
        report = TrialReport.of(result)
        number = self._numbers.get(trial.trial_id)
        if report.rung is not None and number is not None and trial.trial_id not in self._kept:
            total = len(self.session.config.fidelity.rungs) if self.session.config.fidelity else report.rung.index + 1
            self.session.trials.record_rung(number, report.rung.index, report.rung.steps, dict(report.rung.metrics), total)
            return
        if report.outcome is not None or "step" not in result:
            return
        step, loss = int(result["step"]), float(result["loss"])
        self._curves.setdefault(trial.trial_id, []).append([step, loss])
        if number is not None and trial.trial_id not in self._kept:
            self.session.trials.log_loss(number, step, loss)

    def completed(self, trial) -> None:
        """Ray trial ``trial`` ended: its final report's outcome, or pruned by ASHA between reports."""
        if trial.trial_id not in self._numbers:
            self.started(trial)  # the start was missed (a callback failure): record it now
        if trial.trial_id in self._kept:
            return
        report = TrialReport.of(trial.last_result)
        if report.outcome is not None:
            outcome = report.outcome
            if outcome.status == "complete":
                outcome = outcome.model_copy(update={"samples_png": self._fetch_samples(trial)})
        elif report.rung is not None:  # stopped at a rung by the rung scheduler (the stopping form), with its scores
            rung, keep = report.rung, self.session.config.fidelity.keep
            key = self.session.config.rung_keys[rung.index]
            score = rung.metrics.get(key)
            nominal = self.session.config.fidelity.rungs[rung.index]  # the rung as declared: where every trial's score is kept
            decision = rungs.stopped(float(score) if finite(score) else None, len(self.study.view().scores_at(nominal)), rung.index, rung.steps, keep, key)
            curve = [tuple(p) for p in self._curves.get(trial.trial_id, [])]
            outcome = TrialOutcome(status=decision.status, reason=decision.reason, metrics={**report.metrics, **rung.metrics}, loss_curve=curve)
        else:  # stopped between two progress reports: ASHA decided it is not worth finishing
            step = (trial.last_result or {}).get("step", 0)
            curve = [tuple(p) for p in self._curves.get(trial.trial_id, [])]
            outcome = TrialOutcome(status="pruned", reason=f"pruned by ASHA at step {step}", metrics=report.metrics, loss_curve=curve)
        self.session.trials.finish(self._numbers[trial.trial_id], outcome)
        self._spent(trial)

    def _spent(self, trial) -> None:
        """A finished trial never continues: its rung checkpoints go."""
        shutil.rmtree(rung_root(self.session.locations.out_dir, self.session.name) / trial.trial_id, ignore_errors=True)

    def errored(self, trial) -> None:
        """A Ray-level failure: the trainable raised outside the trial process, or its worker died."""
        if trial.trial_id not in self._numbers:
            self.started(trial)
        if trial.trial_id in self._kept:
            return
        error_file = Path(trial.error_file) if trial.error_file else None
        text = error_file.read_text() if error_file and error_file.is_file() else ""
        status, reason = ray_error_reason(text)
        curve = [tuple(p) for p in self._curves.get(trial.trial_id, [])]
        metrics = TrialReport.of(trial.last_result).metrics
        outcome = TrialOutcome(status=status, reason=reason, metrics=metrics, loss_curve=curve, traceback=text or None)
        self.session.trials.finish(self._numbers[trial.trial_id], outcome)
        self._spent(trial)

    def catch_up(self, grid) -> None:
        """Record Ray trials that ended without the callback recording them (its failures)."""
        recorded = {
            t.user_attrs.get(ATTR_RAY_TRIAL)
            for t in self.study.trials()
            if t.state.is_finished() and t.user_attrs.get(ATTR_STATUS) != STATUS_INTERRUPTED
        }
        for result in grid:
            trial_id = (result.metrics or {}).get("trial_id")
            if trial_id is not None and trial_id not in recorded and TrialReport.of(result.metrics).outcome is not None:
                try:
                    self.completed(_EndedTrial(trial_id, result))
                except Exception as exc:  # recording never stops a sweep; the next run reconciles
                    warnings.warn(f"could not record Ray trial {trial_id} ({type(exc).__name__}: {exc})", stacklevel=2)

    def _fetch_samples(self, trial) -> str | None:
        """Copy the sample grid from the trial's checkpoint to ``<out>/trial-<n>/samples.png``."""
        checkpoint = trial.checkpoint
        if checkpoint is None:
            return None
        target = self.session.locations.trial_dir(self._numbers[trial.trial_id]) / "samples.png"
        with checkpoint.as_directory() as folder:
            source = Path(folder) / "samples.png"
            if not source.is_file():
                return None
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        return str(target)


class _EndedTrial:
    """A Ray ``Result`` dressed as the parts of a Tune ``Trial`` that RayResults reads."""

    def __init__(self, trial_id: str, result):
        self.trial_id = trial_id
        self.config = result.config or {}
        self.last_result = result.metrics or {}
        self.checkpoint = result.checkpoint


class ResultsRecorder(tune.Callback):
    """Driver-side Tune callback: every trial into the results study and MLflow. Never raises.

    ``load(space_source)`` opens what the trials come from (a module-level function, so that
    Ray can pickle the recorder: a search space's loader, or a comparison's)."""

    def __init__(self, space_source: str, load, locations: SweepLocations, settings: TrialSettings, sweep_params: dict[str, Any], console_width: int):
        self.space_source, self.load = space_source, load
        self.locations, self.settings = locations, settings
        self.sweep_params = sweep_params
        self.console_width = console_width
        self._results: RayResults | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_results": None}  # the live session stays in its process

    def results(self) -> RayResults:
        if self._results is None:
            session = SweepSession(self.load(self.space_source), self.locations, Console(width=self.console_width), self.settings)
            session.attach(self.sweep_params)
            self._results = RayResults(session)
        return self._results

    @property
    def mlflow_failures(self) -> int:
        return self._results.session.mirror.failures if self._results else 0

    def _guard(self, what: str, call) -> None:
        try:
            call(self.results())
        except Exception as exc:  # recording must never stop the experiment; catch_up fills gaps
            warnings.warn(f"could not record a trial's {what} ({type(exc).__name__}: {exc}); the sweep goes on", stacklevel=2)

    def on_trial_start(self, iteration, trials, trial, **info):
        self._guard("start", lambda results: results.restarted(trial))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._guard("progress", lambda results: results.progress(trial, result))

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._guard("result", lambda results: results.completed(trial))

    def on_trial_error(self, iteration, trials, trial, **info):
        self._guard("error", lambda results: results.errored(trial))


def ray_error_reason(text: str) -> tuple[str, str]:
    """(status, reason) from the error file Ray writes for a failed trial."""
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("Failure #")]
    errors = [line for line in lines if re.match(r"^[\w.]*(Error|Exception)(\(\w+\))?: ", line)]
    if re.search(r"actor died|worker process has died|ActorDiedError|WorkerCrashedError", text):
        detail = re.search(r"Worker exit detail: ([^.]*)", text)
        return "crashed", "crashed: the Ray worker running the trial died" + (f" ({detail.group(1)})" if detail else "")
    if re.search(r"ActorUnavailableError|NodeDiedError|The actor \w+ is unavailable", text):  # its node was lost (raylet gone)
        return "crashed", "crashed: the Ray actor running the trial became unreachable (its node or worker was lost)"
    summary = (errors or lines or ["Ray left no error text"])[-1][:300]
    return "failed", f"error: the Ray trial failed ({summary})"
