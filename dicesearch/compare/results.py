"""What ``dicesearch compare`` measured: per model its costs and, per seed, one run's scores.

The runs are paired by construction: at one seed every model trains on the same images,
labels, timesteps and noise, samples from the same noise and is scored against the same
reference statistics. A run's scores are keyed by the names the metrics record (``fid_128``,
``precision_128``, ...); a score a run lacks is simply absent (a classifier-free run has no
``is_N``), and that seed then drops out of that score's pairs.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType


def _frozen_scores(scores: Mapping[str, float], where: str) -> Mapping[str, float]:
    """A read-only copy with plain floats (numpy and torch scalars welcome); refuses NaN and inf."""
    bad = {k: v for k, v in scores.items() if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v)}
    if bad:
        raise ValueError(f"{where}: scores must be finite numbers; leave a score out instead of recording {bad}")
    return MappingProxyType({str(k): float(v) for k, v in scores.items()})


@dataclass(frozen=True)
class Costs:
    """A model's costs, as in DICE Tab. 1: parameters, multiply-adds per forward (GMACs, what
    DiT calls Gflops), training steps, training FLOPs and sampling throughput (None: unmeasured)."""

    params: int
    gmacs: float
    train_steps: int
    train_flops: float
    samples_per_second: float | None = None


@dataclass(frozen=True)
class CurvePoint:
    """Scores of one run at one training-compute point (an ``eval_at`` step)."""

    train_flops: float
    scores: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.train_flops) and self.train_flops > 0):
            raise ValueError(f"a curve point's training FLOPs must be positive, got {self.train_flops}")
        object.__setattr__(self, "scores", _frozen_scores(self.scores, f"curve point at {self.train_flops:.3g} FLOPs"))


@dataclass(frozen=True)
class Run:
    """One model trained at one seed: its final scores, its ``eval_at`` curve (may be empty)
    and the PNG of its sample grid (None: not saved)."""

    seed: int
    scores: Mapping[str, float]
    curve: tuple[CurvePoint, ...] = ()
    samples: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "seed", int(self.seed))
        object.__setattr__(self, "scores", _frozen_scores(self.scores, f"seed {self.seed}"))
        object.__setattr__(self, "curve", tuple(sorted(self.curve, key=lambda p: p.train_flops)))


@dataclass(frozen=True)
class ModelResult:
    """One compared model: its name (as the table shows it), its costs and its runs, one per seed."""

    name: str
    costs: Costs
    runs: tuple[Run, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "runs", tuple(sorted(self.runs, key=lambda r: r.seed)))
        seeds = [r.seed for r in self.runs]
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"model {self.name!r} has two runs at one seed: {seeds}")

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(r.seed for r in self.runs)

    def run_at(self, seed: int) -> Run | None:
        return next((r for r in self.runs if r.seed == seed), None)

    def values(self, metric: str) -> tuple[float, ...]:
        """``metric`` over the runs that recorded it, in seed order."""
        return tuple(r.scores[metric] for r in self.runs if metric in r.scores)


@dataclass(frozen=True)
class Pairs:
    """One score of a model and of the baseline at the seeds both recorded it."""

    seeds: tuple[int, ...]
    model: tuple[float, ...]
    baseline: tuple[float, ...]

    @property
    def differences(self) -> tuple[float, ...]:
        """d_s = score(model, s) - score(baseline, s)."""
        return tuple(m - b for m, b in zip(self.model, self.baseline, strict=True))


def paired_scores(model: ModelResult, baseline: ModelResult, metric: str) -> Pairs:
    """``metric`` of ``model`` and ``baseline`` at every seed both have it for."""
    seeds = [r.seed for r in model.runs if metric in r.scores and (b := baseline.run_at(r.seed)) is not None and metric in b.scores]
    return Pairs(
        tuple(seeds),
        tuple(model.run_at(s).scores[metric] for s in seeds),
        tuple(baseline.run_at(s).scores[metric] for s in seeds),
    )


def find_model(models: Sequence[ModelResult], name: str) -> ModelResult:
    """The model called ``name``; a loud error naming the others if there is none."""
    for model in models:
        if model.name == name:
            return model
    raise ValueError(f"no model called {name!r}; the models are {', '.join(m.name for m in models)}")
