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
from dicesearch.sweep.record import ATTR_CURVE, ATTR_METRICS, ATTR_SAMPLES, ATTR_TRACEBACK, Status

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
    device: str = "auto"
    threads: int | None = None  # torch intra-op threads; None: torch's default
    count_static: bool = True  # count params and multiply-adds (False: the gate already did)

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
            device=device,
            threads=threads,
            time_limit_s=config.trial_time_limit_s,
            metric_keys=tuple(config.metric_keys),
        )

    def request(self, spec_yaml: str, workdir: Path | None, count_static: bool = True) -> TrialRequest:
        return TrialRequest(
            spec_yaml=spec_yaml, data=self.data, budget=self.budget, seed=self.seed, workdir=workdir,
            device=self.device, threads=self.threads, count_static=count_static,
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


def record_outcome(study, mirror, number: int, outcome: TrialOutcome, metric_keys) -> TrialOutcome | None:
    """Write trial ``number``'s outcome into ``study`` (a SweepStudy) and mirror it with ``mirror``.

    Returns the outcome as recorded (a complete one missing its objective becomes failed),
    or None if the trial had already ended (recorded by another path first).
    """
    if study.trial(number).state.is_finished():
        return None
    outcome = outcome.checked(metric_keys)
    attrs: dict[str, Any] = {ATTR_METRICS: outcome.metrics}
    if outcome.status not in NEVER_TRAINED:
        attrs[ATTR_CURVE] = [list(p) for p in outcome.loss_curve]
    if outcome.status == "complete" and outcome.samples_png:
        attrs[ATTR_SAMPLES] = outcome.samples_png
    if outcome.traceback:
        attrs[ATTR_TRACEBACK] = outcome.traceback[-TRACEBACK_CHARS:]
    study.set_attrs(number, attrs)
    complete = outcome.status == "complete"
    study.end(number, outcome.status, "" if complete else outcome.reason, outcome.objective_values(metric_keys) if complete else None)
    mirror.finish_trial(study.trial(number))
    return outcome


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
