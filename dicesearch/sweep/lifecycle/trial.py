"""One trial's life, the same whichever backend runs it: prepare, begin, run, finish.

1. :func:`prepare` (the sweep process; Ray: the driver's searcher): the proposal (a sampled
   configuration, or a comparison's model and seed) is resolved; a finished trial with the
   same values gives its result instead of a second training; the budget gate counts the
   configuration and rejects it if it cannot fit. The result is a typed :class:`Candidate`.
2. :meth:`TrialLifecycle.begin`: the trial's spec and values go into its record; when it
   starts training (:meth:`TrialLifecycle.training_starts`) its MLflow run opens (RUNNING),
   so a trial in progress shows where it belongs.
3. :meth:`TrialLifecycle.run` (Ray: the trainable, in a Ray worker): the typed request to a
   trial process (:mod:`dicesearch.sweep.lifecycle.process`); its loss and, with rungs,
   its scores come back as it trains (:meth:`TrialLifecycle.log_loss`,
   :meth:`TrialLifecycle.record_rung`); whether it goes on at a rung is the rung rule's
   decision (:mod:`dicesearch.sweep.lifecycle.rungs`).
4. :meth:`TrialLifecycle.finish`: the outcome becomes the trial's record in one write
   (:meth:`dicesearch.sweep.store.studies.SweepStudy.finish`), then MLflow and the console.

The Optuna backend calls the four in one worker thread; the Ray backend calls ``prepare`` in
its searcher, ``run``'s request and process in its trainable, and ``begin``,
``training_starts``, ``record_rung`` and ``finish`` from its driver-side callback. Neither decides duplicates, rungs or records.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from dicesearch.errors import SpecError
from dicesearch.metrics.score import Score
from dicesearch.numbers import finite
from dicesearch.spec.io import recorded_spec_yaml, spec_to_dict
from dicesearch.sweep.lifecycle import gate
from dicesearch.sweep.lifecycle.messages import Candidate, TrialOutcome, TrialSettings
from dicesearch.sweep.lifecycle.process import run_trial
from dicesearch.sweep.lifecycle.progress import TrialProgress
from dicesearch.sweep.space.proposal import Proposal
from dicesearch.sweep.store.mlflow_mirror import MlflowMirror, spec_params
from dicesearch.sweep.store.schema import (
    ATTR_CURVE,
    ATTR_DUPLICATE_OF,
    ATTR_METRICS,
    ATTR_PARAMS,
    ATTR_REASON,
    ATTR_RUNGS,
    ATTR_SAMPLES,
    ATTR_SPEC,
    ATTR_STATUS,
    ATTR_TRACEBACK,
    MIN_VIOLATION,
    STATUS_PAUSED,
    TrialRecord,
)
from dicesearch.sweep.store.studies import SweepStudy

TRACEBACK_CHARS = 4000  # the tail of a failed trial's traceback kept in its record
NEVER_TRAINED = ("invalid", "rejected")  # outcomes decided before a training step: no loss curve
STATIC_METRICS = ("params", "gmacs", "gflops")  # known without training: real values even for infeasible trials
SCORE_PREFIXES = ("fid", "kid", "sfid", "precision", "recall", "is")  # metrics a rung keeps: the scores and their spreads


# -- 1. prepare --------------------------------------------------------------------------------------


def prepare(
    propose: Callable[[], Proposal],
    study: SweepStudy,
    settings: TrialSettings,
    registry,
    warn: Callable[[str], object],
    *,
    number: int | None = None,
    check_duplicate: bool = True,
    counted: dict | None = None,
) -> Candidate:
    """Resolve a proposal, look for an identical finished trial, pass it through the budget gate.

    ``propose()`` raising SpecError is an invalid configuration. ``number`` is the trial being
    prepared (never its own duplicate); ``check_duplicate=False`` for a trial that continues
    a paused one (the same values by design). ``counted``: the gate's counts by spec, kept
    across calls (a continuation is not counted again: about 0.6 s of the sweep process each).
    """
    try:
        proposal = propose()
    except SpecError as exc:
        return Candidate(outcome=TrialOutcome(status="invalid", reason=f"invalid configuration: {exc}"))
    spec = proposal.spec
    fields: dict[str, Any] = {
        "values": proposal.values, "spec_yaml": recorded_spec_yaml(spec, registry),  # with the plugins' distributions and versions
        "summary": spec_params(spec_to_dict(spec)), "seed": proposal.seed, "train_steps": proposal.train_steps, "rungs": proposal.rungs,
    }  # fmt: skip
    earlier = study.view().identical(proposal.values, number) if check_duplicate else None
    if earlier is not None:
        return Candidate(**fields, duplicate_of=earlier.number, duplicate_rungs=earlier.user_attrs.get(ATTR_RUNGS, []), outcome=reused_outcome(earlier))
    counted_key = (fields["spec_yaml"], settings.memory.precision, settings.memory.gradient_checkpointing, settings.memory_batch)
    assessment = gate.assess(spec, settings.memory, settings.memory_batch, warn, counted.get(counted_key) if counted is not None else None)
    if counted is not None:
        counted[counted_key] = assessment.metrics
    if assessment.rejection:
        return Candidate(**fields, metrics=assessment.metrics, outcome=TrialOutcome(status="rejected", reason=assessment.rejection, metrics=assessment.metrics))
    if proposal.train_steps is None and settings.budget.match != "steps":  # the steps this configuration's budget buys
        from dicesearch.train.matching import matched_steps

        fields["train_steps"] = steps = matched_steps(spec, settings.data, settings.budget, settings.device).steps
        if settings.rungs and steps < len(settings.rungs):
            reason = f"invalid configuration: its {settings.budget.match} budget buys {steps} training step(s), fewer than the {len(settings.rungs)} rungs"
            return Candidate(**fields, metrics=assessment.metrics, outcome=TrialOutcome(status="invalid", reason=reason, metrics=assessment.metrics))
    return Candidate(**fields, metrics=assessment.metrics)


def reused_outcome(earlier) -> TrialOutcome:
    """What a finished trial recorded, as the outcome of an identical configuration (not trained
    again). A paused trial is the one a promotion continues, so its duplicate ends pruned."""
    attrs = earlier.user_attrs
    outcome = TrialOutcome(
        status=attrs.get(ATTR_STATUS, "complete"),
        reason=attrs.get(ATTR_REASON, ""),
        metrics=attrs.get(ATTR_METRICS, {}),
        loss_curve=[tuple(p) for p in attrs.get(ATTR_CURVE, [])],
        samples_png=attrs.get(ATTR_SAMPLES),
    )
    if outcome.status == STATUS_PAUSED:
        rung = len(earlier.intermediate_values)
        return outcome.model_copy(update={"status": "pruned", "reason": f"the same configuration as trial {earlier.number} (paused at rung {rung}); not trained again"})
    return outcome


def describe_values(values: dict[str, Any]) -> str:
    """``stages[0].channels=64, lambda=0.5``: a trial's values on one line."""
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())


# -- 4. finish: the record --------------------------------------------------------------------------


def record_of(outcome: TrialOutcome, metric_keys, directions, budget_gb: float) -> TrialRecord:
    """The record a trial's outcome becomes. A complete trial is told its objective values; an
    infeasible one (over ``budget_gb``, by the estimate or out of memory) placeholder values
    and a positive memory constraint, so the sampler learns where the budget ends
    (:mod:`dicesearch.sweep.store.schema`)."""
    attrs: dict[str, Any] = {ATTR_METRICS: outcome.metrics}
    if outcome.status not in NEVER_TRAINED:
        attrs[ATTR_CURVE] = [list(p) for p in outcome.loss_curve]
    if outcome.status in ("complete", "pruned", "paused") and outcome.samples_png:  # stopped at a rung: its rung's grid
        attrs[ATTR_SAMPLES] = outcome.samples_png
    if outcome.traceback:
        attrs[ATTR_TRACEBACK] = outcome.traceback[-TRACEBACK_CHARS:]
    estimate = outcome.metrics.get("memory_estimated_gb")
    headroom = estimate - budget_gb if finite(estimate) else None
    if outcome.status == "complete":
        values = tuple(outcome.objective_values(metric_keys))
        return TrialRecord("complete", "", attrs, values, min(headroom, 0.0) if headroom is not None else 0.0)
    if is_infeasible(outcome):
        values = tuple(placeholder_values(outcome.metrics, metric_keys, directions))
        return TrialRecord(outcome.status, outcome.reason, attrs, values, max(headroom or 0.0, MIN_VIOLATION))
    return TrialRecord(outcome.status, outcome.reason, attrs)


def is_infeasible(outcome: TrialOutcome) -> bool:
    """Over the memory budget: rejected by the gate, or out of memory when it ran."""
    return outcome.status == "rejected" or outcome.reason.startswith("out of memory")


def placeholder_values(metrics: dict[str, float | None], metric_keys, directions) -> list[float]:
    """Objective values for an infeasible trial: the known counts, else the worst value there is."""
    values = []
    for key, direction in zip(metric_keys, directions, strict=True):
        known = metrics.get(key) if key in STATIC_METRICS else None
        values.append(float(known) if finite(known) else (math.inf if direction == "minimize" else -math.inf))
    return values


# -- the steps that need the study, MLflow and the console ------------------------------------------


class TrialLifecycle:
    """Begin, run, record rungs and finish the trials of one study, from one process."""

    def __init__(self, study: SweepStudy, mirror: MlflowMirror, console: Console, progress: TrialProgress, settings: TrialSettings, registry):
        self.study, self.mirror, self.console, self.progress = study, mirror, console, progress
        self.settings, self.registry = settings, registry
        self.ran = 0  # trials this process recorded the end of
        self._counted: dict = {}  # the gate's counts by spec (prepare): a continuation's are its paused trial's

    def drive(
        self, number: int, propose: Callable[[], Proposal], run: Callable[[Candidate], TrialOutcome], *, check_duplicate: bool = True
    ) -> TrialOutcome | None:
        """Trial ``number``'s whole life in this process: prepare, begin, ``run(candidate)``
        unless the outcome is already decided, finish. Returns the outcome as recorded."""
        candidate = self.prepare(propose, number=number, check_duplicate=check_duplicate)
        self.begin(number, candidate)
        outcome = candidate.outcome if candidate.outcome is not None else run(candidate)
        return self.finish(number, outcome)

    def prepare(self, propose: Callable[[], Proposal], *, number: int | None = None, check_duplicate: bool = True) -> Candidate:
        warn = lambda message: self.console.print(f"[yellow]warning:[/] {message}")  # noqa: E731
        return prepare(propose, self.study, self.settings, self.registry, warn, number=number, check_duplicate=check_duplicate, counted=self._counted)

    # -- 2. begin ----------------------------------------------------------------------------------

    def begin(self, number: int, candidate: Candidate) -> None:
        """Trial ``number`` is ``candidate``: record its spec and values (a duplicate also whose
        result it reuses, and says so)."""
        if candidate.spec_yaml is None:
            return  # not a valid model: its record is its reason alone
        attrs: dict[str, Any] = {ATTR_SPEC: candidate.spec_yaml, ATTR_PARAMS: candidate.values}
        if candidate.duplicate_of is not None:
            attrs[ATTR_DUPLICATE_OF] = candidate.duplicate_of
            if candidate.duplicate_rungs:
                attrs[ATTR_RUNGS] = candidate.duplicate_rungs
        self.study.set_attrs(number, attrs)
        if candidate.duplicate_of is not None:
            self.console.print(f"trial {number}: the same configuration as trial {candidate.duplicate_of}; its result is reused, not retrained", highlight=False)

    def training_starts(self, number: int, candidate: Candidate) -> None:
        """Trial ``number`` starts training: its MLflow run opens (RUNNING, so the UI shows it in
        progress), its line is printed and its live line shown. (A trial decided without
        training gets its MLflow run when it finishes.)"""
        self.mirror.start_trial(number, candidate.values, candidate.summary, candidate.spec_yaml)
        self.console.print(f"trial {number}: {describe_values(candidate.values)}", highlight=False)
        request = self.settings.request_for(candidate, None)
        self.progress.start(number, request.budget.train_steps, request.rungs)

    # -- 3. run ------------------------------------------------------------------------------------

    def run(
        self,
        number: int,
        candidate: Candidate,
        workdir: Path | None,
        *,
        run_dir: Path | None = None,
        start_rung: int = 0,
        should_prune: Callable[[int, float], bool] | None = None,
        goes_on: Callable[[int, int, float | None], bool] | None = None,
        threads: Callable[[], int | None] | None = None,
    ) -> TrialOutcome:
        """Train, sample and score ``candidate`` in a trial process. ``should_prune(step, loss)``
        (the pruner) may stop it between reports; with rungs ``goes_on(index, steps, score)``
        (the rung rule) says whether it continues past each rung; ``threads()`` offers it the
        cores of idle workers (:func:`~dicesearch.sweep.lifecycle.process.run_trial`)."""
        scoring_points = run_dir is None and (candidate.rungs or self.settings.rungs) and workdir is not None
        if scoring_points:  # scored along the way (a comparison's eval_at): its checkpoints are this run's alone
            run_dir = workdir / "run"
        self.training_starts(number, candidate)
        request = self.settings.request_for(candidate, workdir, run_dir, start_rung)

        def on_report(step: int, loss: float) -> bool:
            self.log_loss(number, step, loss)
            return should_prune is not None and should_prune(step, loss)

        def on_rung(index: int, steps: int, metrics: dict) -> bool:
            score = self.record_rung(number, index, steps, metrics, len(request.rungs))
            return goes_on is None or goes_on(index, steps, score)

        try:
            outcome = run_trial(request, on_report, time_limit_s=self.settings.time_limit_s, on_rung=on_rung if request.rungs else None, threads=threads)
        finally:
            if scoring_points:
                shutil.rmtree(run_dir, ignore_errors=True)
        return outcome.with_metrics(candidate.metrics)

    def log_loss(self, number: int, step: int, loss: float) -> None:
        self.mirror.log_loss(number, step, loss)
        self.progress.step(number, step, loss)

    def record_rung(self, number: int, index: int, steps: int, metrics: dict[str, float | None], rungs: int) -> float | None:
        """Trial ``number`` was scored at rung ``index`` (``steps`` training steps): keep its scores
        (an Optuna intermediate value, the trial's record, MLflow) and return the objective's."""
        key = self.settings.rung_key(index)
        score = metrics.get(key)
        kept = {k: v for k, v in metrics.items() if k.split("_")[0] in SCORE_PREFIXES}
        # a sweep's rung is keyed by its declared steps, so that trials compute-matched to other
        # steps compare at the same rung; the steps trained are kept beside
        nominal = self.settings.rungs[index] if self.settings.rungs else steps
        record = {"rung": index, "steps": nominal, **({"train_steps": steps} if steps != nominal else {}), **kept}
        earlier = self.study.trial(number).user_attrs.get(ATTR_RUNGS, [])
        self.study.set_attrs(number, {ATTR_RUNGS: [*earlier, record]})
        if finite(score):
            self.study.report(number, float(score), nominal)
        self.mirror.log_rung(number, index, nominal, kept)
        self.progress.scored(number, metrics)
        shown = Score.of(metrics, key)
        self.console.print(f"trial {number}: rung {index + 1}/{rungs} ({steps} steps): {key} {shown.text() if shown else '-'}", highlight=False)
        return float(score) if finite(score) else None

    # -- 4. finish ---------------------------------------------------------------------------------

    def finish(self, number: int, outcome: TrialOutcome) -> TrialOutcome | None:
        """Record how trial ``number`` ended (one write), mirror it and say so; None if it had
        already ended (another process recorded it)."""
        self.progress.end(number)
        settings = self.settings
        outcome = outcome.checked(settings.metric_keys)
        if not self.study.finish(number, record_of(outcome, settings.metric_keys, settings.directions, settings.memory.budget_gb)):
            return None
        self.mirror.finish_trial(self.study.trial(number))
        self.ran += 1
        if outcome.status == "complete":
            scores = ", ".join(f"{k} {outcome.metrics[k]:.4g}" for k in settings.metric_keys)
            self.console.print(f"trial {number}: {scores} ({outcome.wall_seconds:.0f} s)", highlight=False)
        else:
            self.console.print(f"trial {number}: {outcome.reason}", highlight=False, style="yellow")
        return outcome
