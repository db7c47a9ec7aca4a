"""The typed messages of a trial's life: what it is, what a trial process is asked, what came of it.

* :class:`Message`: the base of every object that crosses a process (or Ray) boundary:
  frozen, unknown keys rejected, so it arrives as itself.
* :class:`Candidate`: what :func:`dicesearch.sweep.lifecycle.trial.prepare` made of a
  proposal (:class:`~dicesearch.sweep.space.proposal.Proposal`): the resolved spec and the gate's counts, or an outcome decided without
  training (invalid, rejected, or the result of an identical configuration).
* :class:`TrialSettings`: what every trial of a sweep (or comparison) shares; built once.
* :class:`TrialRequest`: what a trial process receives (:mod:`dicesearch.sweep.lifecycle.process`).
* :class:`TrialOutcome`: how a trial ended: a status from :mod:`dicesearch.sweep.store.schema`,
  a one-line reason, the metrics, the loss curve, timings, the sample grid, a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from dicesearch.data import DataSpec
from dicesearch.numbers import finite
from dicesearch.objective import Budget
from dicesearch.sweep.space.config import MemoryBudget, SweepConfig
from dicesearch.sweep.store.schema import Status


class Message(BaseModel):
    """A typed object that crosses a process boundary: frozen, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class TrialOutcome(Message):
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
        missing = [k for k in metric_keys if not finite(self.metrics.get(k))]
        if not missing:
            return self
        return self.model_copy(update={"status": "failed", "reason": f"failed: the run did not produce {', '.join(missing)}"})

    def objective_values(self, metric_keys) -> list[float]:
        return [float(self.metrics[k]) for k in metric_keys]


class Candidate(Message):
    """A proposal, prepared: the resolved spec and what the gate counted, or the outcome
    already decided (``outcome``) when it needs no training."""

    values: dict[str, Any] = {}
    spec_yaml: str | None = None  # the resolved spec with its provenance header; None: not a valid model
    summary: dict[str, Any] = {}  # the architecture at a glance (MLflow params)
    metrics: dict[str, float | None] = {}  # the gate's: params, gmacs, gflops, memory_estimated_gb
    seed: int | None = None
    train_steps: int | None = None
    rungs: tuple[int, ...] | None = None
    outcome: TrialOutcome | None = None  # decided without training: invalid, rejected, or a duplicate's result
    duplicate_of: int | None = None  # the finished trial of the same configuration whose result this is
    duplicate_rungs: list[dict[str, Any]] = []  # that trial's rung scores, recorded again as this trial's


class TrialRequest(Message):
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
    rung_samples: tuple[int, ...] | None = None  # images scored at each rung; None: the budget's fid_samples at every one
    run_dir: Path | None = None  # the rung checkpoints (needed with rungs)
    start_rung: int = 0  # > 0: continue an interrupted trial from the checkpoint of rung start_rung - 1

    def spec(self):
        import yaml

        from dicesearch.spec import parse_spec

        return parse_spec(yaml.safe_load(self.spec_yaml), "trial spec")


class TrialSettings(Message):
    """What every trial of one sweep (or comparison) shares."""

    data: DataSpec
    budget: Budget
    memory: MemoryBudget
    memory_batch: int  # the batch the memory budget is checked at
    seed: int
    reference_seed: int | None = None  # the real images every trial is scored against; None: each trial's seed
    replicates: int = 1
    rungs: tuple[int, ...] | None = None
    rung_samples: tuple[int, ...] | None = None  # images scored at each rung; None: the budget's fid_samples at every one
    device: str = "auto"
    threads: int | None = None
    time_limit_s: float | None = None
    metric_keys: tuple[str, ...]  # what the objective reads, e.g. ("fid_128",)
    directions: tuple[str, ...] = ("minimize",)  # one per metric key
    rung_keys: tuple[str, ...] | None = None  # the score each rung ranks by, e.g. ("fid_32", "fid_128", "fid_128"); None: metric_keys[0]

    def rung_key(self, index: int) -> str:
        """The score rung ``index`` ranks trials by: the objective's, at that rung's image count."""
        return self.rung_keys[index] if self.rung_keys else self.metric_keys[0]

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
            rung_samples=config.fidelity.samples if config.fidelity else None,
            device=device,
            threads=threads if threads is not None else config.budget.threads,  # the backend's own choice, else the budget's
            time_limit_s=config.trial_time_limit_s,
            metric_keys=tuple(config.metric_keys),
            directions=tuple(config.objective.directions),
            rung_keys=config.rung_keys,
        )

    def request(
        self, spec_yaml: str, workdir: Path | None, count_static: bool = True, run_dir: Path | None = None, start_rung: int = 0
    ) -> TrialRequest:
        """The request for ``spec_yaml`` under these settings alone (a sweep's trial, a calibration run)."""
        return self.request_for(Candidate(spec_yaml=spec_yaml), workdir, run_dir, start_rung, count_static=count_static)

    def request_for(
        self, candidate: Candidate, workdir: Path | None, run_dir: Path | None = None, start_rung: int = 0, *, count_static: bool | None = None
    ) -> TrialRequest:
        """The request for a prepared candidate: its own seed, steps and rungs where it has them."""
        budget = self.budget if candidate.train_steps is None else self.budget.model_copy(update={"train_steps": candidate.train_steps})
        rungs = candidate.rungs if candidate.rungs is not None else self.rungs
        if rungs is not None and candidate.train_steps is not None and candidate.rungs is None:
            rungs = scaled_rungs(self.rungs, candidate.train_steps)
        return TrialRequest(
            spec_yaml=candidate.spec_yaml, data=self.data, budget=budget, seed=self.seed if candidate.seed is None else candidate.seed,
            reference_seed=self.reference_seed, workdir=workdir, device=self.device, threads=self.threads,
            count_static=not candidate.metrics.get("params") if count_static is None else count_static,  # the gate counted them unless it failed
            replicates=self.replicates, rungs=rungs, run_dir=run_dir if rungs else None, start_rung=start_rung,
            rung_samples=self.rung_samples if rungs and candidate.rungs is None else None,  # a comparison's scoring points score the budget's N
        )  # fmt: skip


def scaled_rungs(rungs: tuple[int, ...], train_steps: int) -> tuple[int, ...]:
    """A sweep's rungs (as declared, the last the full budget) at the same fractions of a run of
    ``train_steps``: a compute-matched trial is scored at the same share of its own budget.
    Every rung keeps its own step (at least one more than the rung before)."""
    if train_steps < len(rungs):
        raise ValueError(f"the budget buys {train_steps} training step(s), fewer than the {len(rungs)} rungs to score at")
    last, out = rungs[-1], []
    for i, r in enumerate(rungs[:-1]):
        step = max(round(r * train_steps / last), out[-1] + 1 if out else 1)
        out.append(min(step, train_steps - (len(rungs) - 1 - i)))
    return (*out, train_steps)
