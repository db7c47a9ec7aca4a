"""What both backends do around their trials: open or resume the study, mirror it, report trials.

A :class:`SweepSession` holds a sweep's study (:class:`~dicesearch.sweep.studies.SweepStudy`),
its MLflow mirror and its console. The Optuna backend and the Ray backend each open one
and call the same :meth:`~SweepSession.begin_trial` / :meth:`~SweepSession.record` for
every trial, so a trial is recorded, mirrored and printed the same way whichever backend
ran it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from rich.console import Console

from dicesearch.sweep.locations import SweepLocations
from dicesearch.sweep.mlflow_mirror import MlflowMirror
from dicesearch.sweep.progress import TrialProgress
from dicesearch.sweep.ranking import Score
from dicesearch.sweep.record import ATTR_DUPLICATE_OF, ATTR_PARAMS, ATTR_RUNGS, ATTR_SPEC, ATTR_WORKER, STATUS_PAUSED
from dicesearch.sweep.search_space import SearchSpace
from dicesearch.sweep.studies import SweepStudy, this_worker
from dicesearch.sweep.trial import TrialOutcome, describe_values, outcome_of, record_outcome


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


SCORE_PREFIXES = ("fid", "kid", "sfid", "precision", "recall", "is")  # metrics a rung keeps: the scores and their spreads


class SweepSession:
    """One sweep process's view of a sweep: its study, MLflow mirror and console."""

    def __init__(self, space: SearchSpace, locations: SweepLocations, console: Console | None = None):
        self.space = space
        self.config = space.config
        self.locations = locations
        self.console = console or Console()
        self.name = self.config.resolved_study_name
        self.directions = self.config.objective.directions
        self.metric_keys = self.config.metric_keys
        self.mirror = MlflowMirror(locations.tracking_uri, self.name, space.source)
        self.study: SweepStudy | None = None
        self.ran = 0
        rungs = self.config.fidelity.rungs if self.config.fidelity else None
        self.progress = TrialProgress(self.console, self.config.budget.train_steps, self.config.replicates, rungs)

    # -- the sweep ----------------------------------------------------------------------------

    def open(self, params: dict[str, Any], pruner=None, requeue: bool = True) -> SweepResult:
        """Open (or resume) the study, recover what a dead sweep left running, start the mirror."""
        config = self.config
        self.study = SweepStudy.open(self.name, self.locations.storage_url, self.directions, config.seed, pruner, self.metric_keys)
        result = SweepResult(self.study.study)
        result.recovered = self.study.recover_interrupted(requeue=requeue)
        if result.recovered:
            self.console.print(f"resuming: trial(s) {', '.join(map(str, result.recovered))} were interrupted and will run again")
        done = len(self.study.counted())
        if done:
            self.console.print(f"resuming study '{self.name}': {done} of {config.trials} trials already finished")
        self.mirror.start_sweep(params, self._space_text())
        self.reconcile()
        return result

    def attach(self, params: dict[str, Any]) -> None:
        """Join the study another object of this process opened (the Ray recorder): no recovery."""
        self.study = SweepStudy.open(self.name, self.locations.storage_url, self.directions, self.config.seed, metric_names=self.metric_keys)
        self.mirror.start_sweep(params, self._space_text())

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
        result.ran = self.ran
        result.mlflow_failures = self.mirror.failures
        return result

    # -- one trial ----------------------------------------------------------------------------

    def begin_trial(self, number: int, values: dict[str, Any], spec_yaml: str, summary: dict[str, Any]) -> None:
        """Trial ``number`` has a valid spec: record it and open its (RUNNING) MLflow run."""
        self.study.set_attrs(number, {ATTR_SPEC: spec_yaml, ATTR_PARAMS: values})
        self.mirror.start_trial(number, values, summary, spec_yaml)

    def announce(self, number: int, values: dict[str, Any]) -> None:
        """Say that trial ``number`` starts training, and show its live line from now on."""
        self.console.print(f"trial {number}: {describe_values(values)}", highlight=False)
        self.progress.start(number)

    def record(self, number: int, outcome: TrialOutcome) -> TrialOutcome | None:
        """Record, mirror and print how trial ``number`` ended (None: it already had)."""
        self.progress.end(number)
        recorded = record_outcome(
            self.study, self.mirror, number, outcome, self.metric_keys, self.directions, self.config.memory.budget_gb
        )
        if recorded is None:
            return None
        self.ran += 1
        if recorded.status == "complete":
            scores = ", ".join(f"{k} {recorded.metrics[k]:.4g}" for k in self.metric_keys)
            self.console.print(f"trial {number}: {scores} ({recorded.wall_seconds:.0f} s)", highlight=False)
        else:
            self._warn(number, recorded.reason)
        return recorded

    def record_rung(self, number: int, index: int, steps: int, metrics: dict[str, float], rungs: int) -> float | None:
        """Trial ``number`` was scored at rung ``index`` (``steps`` training steps): keep its scores
        (an Optuna intermediate value, the trial's record, MLflow) and return the objective's."""
        key = self.metric_keys[0]
        score = metrics.get(key)
        kept = {k: v for k, v in metrics.items() if k.split("_")[0] in SCORE_PREFIXES}
        earlier = self.study.trial(number).user_attrs.get(ATTR_RUNGS, [])
        self.study.set_attrs(number, {ATTR_RUNGS: [*earlier, {"rung": index, "steps": steps, **kept}]})
        if isinstance(score, (int, float)) and math.isfinite(score):
            self.study.report(number, float(score), steps)
        self.mirror.log_rung(number, index, steps, kept)
        self.progress.scored(number, metrics)
        shown = Score.of(metrics, key)
        self.console.print(f"trial {number}: rung {index + 1}/{rungs} ({steps} steps): {key} {shown.text() if shown else '-'}", highlight=False)
        return score if isinstance(score, (int, float)) and math.isfinite(score) else None

    def reuse(self, number: int, values: dict[str, Any], spec_yaml: str, summary: dict[str, Any]) -> bool:
        """If a finished trial had exactly ``values``, record its result as trial ``number``'s
        (identical configurations are not trained twice; the sampler sees the result again)."""
        earlier = self.study.identical(values, number)
        if earlier is None:
            return False
        self.begin_trial(number, values, spec_yaml, summary)
        self.study.set_attrs(number, {ATTR_DUPLICATE_OF: earlier.number, **({ATTR_RUNGS: earlier.user_attrs[ATTR_RUNGS]} if ATTR_RUNGS in earlier.user_attrs else {})})
        self.console.print(f"trial {number}: the same configuration as trial {earlier.number}; its result is reused, not retrained", highlight=False)
        outcome = outcome_of(earlier)
        if outcome.status == STATUS_PAUSED:  # the paused trial is the one a promotion continues; this one ends here
            outcome = outcome.model_copy(update={"status": "pruned", "reason": f"the same configuration as trial {earlier.number} (paused at rung {len(earlier.intermediate_values)}); not trained again"})
        self.record(number, outcome)
        return True

    def interrupt(self, number: int, reason: str) -> bool:
        """Trial ``number`` (running here) is cut short by the sweep stopping: record and mirror it."""
        if not self.study.interrupt(number, reason):
            return False
        self.mirror.finish_trial(self.study.trial(number))
        self._warn(number, reason)
        return True

    def interrupt_all_here(self, reason: str) -> None:
        """Every trial this process is running becomes interrupted (the sweep stops under it).
        Only the study is written: :meth:`stopped` then mirrors them with the rest."""
        for trial in self.study.running():
            if trial.user_attrs.get(ATTR_WORKER) == this_worker():
                self.study.interrupt(trial.number, reason)

    def _warn(self, number: int, reason: str) -> None:
        self.console.print(f"trial {number}: {reason}", highlight=False, style="yellow")
