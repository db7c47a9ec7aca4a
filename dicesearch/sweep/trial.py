"""One trial's life, the same for both backends: a typed request in, a typed outcome out, one record.

* :class:`TrialSettings`: what every trial of a sweep shares (data, budget, seed, device,
  limits, the memory budget and the objective's metric keys); built once per sweep.
* :class:`TrialRequest`: what a trial process receives: the resolved spec and the settings
  it needs. Frozen and typed, so it crosses a process (or Ray) boundary as itself.
* :class:`TrialOutcome`: what came of it: a status from :mod:`dicesearch.sweep.record`, a
  one-line reason, the metrics, the loss curve, timings, the sample grid, a traceback.
* :func:`record_outcome`: the outcome into the sweep's study (the source of truth), then
  mirrored to MLflow.

The budget gate (:mod:`dicesearch.sweep.gate`) runs before a request is made; the trial
process (:mod:`dicesearch.sweep.trial_process`) turns a request into an outcome.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from dicesearch.data import DataSpec
from dicesearch.objective import Budget
from dicesearch.sweep.config import MemoryBudget, SweepConfig
from dicesearch.sweep.record import (
    ATTR_CURVE,
    ATTR_METRICS,
    ATTR_REASON,
    ATTR_SAMPLES,
    ATTR_STATUS,
    ATTR_TRACEBACK,
    CONSTRAINT,
    MIN_VIOLATION,
    Status,
)

TRACEBACK_CHARS = 4000  # the tail of a failed trial's traceback kept in its record
NEVER_TRAINED = ("invalid", "rejected")  # outcomes decided before a training step: no loss curve


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TrialRequest(_Frozen):
    """What a trial process needs to train, sample and score one configuration."""

    spec_yaml: str  # the resolved model spec (plugins' spec types are rebuilt in the child)
    data: DataSpec
    budget: Budget
    seed: int
    workdir: Path | None  # where the sample grid goes; None: nowhere
    reference_seed: int | None = None  # the real images scored against; None: seed's
    device: str = "auto"
    threads: int | None = None  # torch intra-op threads; None: torch's default
    count_static: bool = True  # count params and multiply-adds (False: the gate already did)
    replicates: int = 1  # seeds seed .. seed + replicates - 1; the scores are their means
    rungs: tuple[int, ...] | None = None  # multi-fidelity: training steps at which to score and ask
    run_dir: Path | None = None  # the rung checkpoints (needed with rungs)
    start_rung: int = 0  # > 0: continue an interrupted trial from the checkpoint of rung start_rung - 1

    def spec(self):
        import yaml

        from dicesearch.spec import parse_spec

        return parse_spec(yaml.safe_load(self.spec_yaml), "trial spec")


class TrialSettings(_Frozen):
    """What every trial of one sweep shares."""

    data: DataSpec
    budget: Budget
    memory: MemoryBudget
    memory_batch: int  # the batch the memory budget is checked at
    seed: int
    replicates: int = 1
    rungs: tuple[int, ...] | None = None
    device: str = "auto"
    threads: int | None = None
    time_limit_s: float | None = None
    metric_keys: tuple[str, ...]  # what the objective reads, e.g. ("fid_128",)

    @classmethod
    def for_sweep(cls, config: SweepConfig, device: str = "auto", threads: int | None = None) -> TrialSettings:
        return cls(
            data=config.data,
            budget=config.budget,
            memory=config.memory,
            memory_batch=config.memory_batch,
            seed=config.seed,
            replicates=config.replicates,
            rungs=config.fidelity.rungs if config.fidelity else None,
            device=device,
            threads=threads if threads is not None else config.budget.threads,  # the backend's own choice, else the budget's
            time_limit_s=config.trial_time_limit_s,
            metric_keys=tuple(config.metric_keys),
        )

    def request(self, spec_yaml: str, workdir: Path | None, count_static: bool = True, run_dir: Path | None = None, start_rung: int = 0) -> TrialRequest:
        return TrialRequest(
            spec_yaml=spec_yaml, data=self.data, budget=self.budget, seed=self.seed, workdir=workdir,
            device=self.device, threads=self.threads, count_static=count_static, replicates=self.replicates,
            rungs=self.rungs, run_dir=run_dir if self.rungs else None, start_rung=start_rung,
        )  # fmt: skip


class TrialOutcome(_Frozen):
    """How a trial ended. ``metrics`` holds every number it produced (scores, counts,
    estimates, timings); ``loss_curve`` the mean training loss every ``report_every`` steps."""

    status: Status
    reason: str = ""  # one line; empty for complete trials
    metrics: dict[str, float | None] = {}
    loss_curve: list[tuple[int, float]] = []
    wall_seconds: float = 0.0
    samples_png: str | None = None
    traceback: str | None = None

    def with_metrics(self, earlier: dict[str, float | None]) -> TrialOutcome:
        """This outcome with ``earlier`` metrics (the gate's) under its own, and its wall time."""
        return self.model_copy(update={"metrics": {**earlier, **self.metrics, "wall_seconds": self.wall_seconds}})

    def checked(self, metric_keys: tuple[str, ...] | list[str]) -> TrialOutcome:
        """A complete outcome without a finite value for every objective metric is a failure."""
        if self.status != "complete":
            return self
        missing = [k for k in metric_keys if not _finite(self.metrics.get(k))]
        if not missing:
            return self
        return self.model_copy(update={"status": "failed", "reason": f"failed: the run did not produce {', '.join(missing)}"})

    def objective_values(self, metric_keys) -> list[float]:
        return [float(self.metrics[k]) for k in metric_keys]


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


STATIC_METRICS = ("params", "gmacs", "gflops")  # known without training: real values even for infeasible trials


def is_infeasible(outcome: TrialOutcome) -> bool:
    """Over the memory budget: rejected by the gate, or out of memory when it ran."""
    return outcome.status == "rejected" or outcome.reason.startswith("out of memory")


def placeholder_values(metrics: dict[str, float | None], metric_keys, directions) -> list[float]:
    """Objective values for an infeasible trial: the known counts, else the worst value there is."""
    values = []
    for key, direction in zip(metric_keys, directions, strict=True):
        known = metrics.get(key) if key in STATIC_METRICS else None
        values.append(float(known) if _finite(known) else (math.inf if direction == "minimize" else -math.inf))
    return values


def record_outcome(study, mirror, number: int, outcome: TrialOutcome, metric_keys, directions, budget_gb: float) -> TrialOutcome | None:
    """Write trial ``number``'s outcome into ``study`` (a SweepStudy) and mirror it with ``mirror``.

    A complete trial is told its objective values; an infeasible one (over ``budget_gb``) is
    told placeholder values with a positive memory constraint, so the sampler learns from
    it (:mod:`dicesearch.sweep.record`). Returns the outcome as recorded (a complete one
    missing its objective becomes failed), or None if the trial had already ended.
    """
    if study.trial(number).state.is_finished():
        return None
    outcome = outcome.checked(metric_keys)
    attrs: dict[str, Any] = {ATTR_METRICS: outcome.metrics}
    if outcome.status not in NEVER_TRAINED:
        attrs[ATTR_CURVE] = [list(p) for p in outcome.loss_curve]
    if outcome.status in ("complete", "pruned", "paused") and outcome.samples_png:  # stopped at a rung: its rung's grid
        attrs[ATTR_SAMPLES] = outcome.samples_png
    if outcome.traceback:
        attrs[ATTR_TRACEBACK] = outcome.traceback[-TRACEBACK_CHARS:]
    study.set_attrs(number, attrs)
    estimate = outcome.metrics.get("memory_estimated_gb")
    headroom = estimate - budget_gb if _finite(estimate) else None
    if outcome.status == "complete":
        values = outcome.objective_values(metric_keys)
        study.end(number, "complete", "", values, {CONSTRAINT: min(headroom, 0.0) if headroom is not None else 0.0})
    elif is_infeasible(outcome):
        values = placeholder_values(outcome.metrics, metric_keys, directions)
        study.end(number, outcome.status, outcome.reason, values, {CONSTRAINT: max(headroom or 0.0, MIN_VIOLATION)})
    else:
        study.end(number, outcome.status, outcome.reason)
    mirror.finish_trial(study.trial(number))
    return outcome


def outcome_of(trial) -> TrialOutcome:
    """The outcome a finished trial (a FrozenTrial) recorded, as the outcome of another."""
    attrs = trial.user_attrs
    return TrialOutcome(
        status=attrs.get(ATTR_STATUS, "complete"),
        reason=attrs.get(ATTR_REASON, ""),
        metrics=attrs.get(ATTR_METRICS, {}),
        loss_curve=[tuple(p) for p in attrs.get(ATTR_CURVE, [])],
        wall_seconds=0.0,
        samples_png=attrs.get(ATTR_SAMPLES),
    )


def spec_summary(spec) -> dict[str, Any]:
    """A few key params per trial (MLflow): the architecture at a glance."""
    summary: dict[str, Any] = {"conditioning": spec.conditioning.kind, "stages": len(spec.stages)}
    for i, stage in enumerate(spec.stages):
        summary[f"stage{i}.block"] = stage.block.kind
        summary[f"stage{i}.channels"] = stage.channels
        summary[f"stage{i}.depth"] = stage.depth
    return summary


def describe_values(values: dict[str, Any]) -> str:
    """``stages[0].channels=64, lambda=0.5``: a trial's sampled values on one line."""
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
