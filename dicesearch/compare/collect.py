"""A comparison's runs read back from its study: per model its costs and, per seed, one run.

The study is the source of truth (the trial records of :mod:`dicesearch.sweep.store.schema`);
this turns it into the verdict's typed inputs (:mod:`dicesearch.compare.results`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dicesearch.compare.results import Costs, CurvePoint, ModelResult, Run
from dicesearch.numbers import finite
from dicesearch.sweep.store.queries import is_scored
from dicesearch.sweep.store.schema import ATTR_METRICS, ATTR_REASON, ATTR_RUNGS, ATTR_SAMPLES, ATTR_STATUS, NOT_COUNTED


@dataclass(frozen=True)
class Unscored:
    """A run that ended without scores: which, and why."""

    model: str
    seed: int
    status: str
    reason: str


def _latest_runs(study) -> dict[tuple[str, int], object]:
    """The last finished record of each (model, seed): a run interrupted and run again counts once."""
    latest = {}
    for trial in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        if trial.state.is_finished() and trial.user_attrs.get(ATTR_STATUS) not in NOT_COUNTED and "model" in trial.params:
            latest[(trial.params["model"], int(trial.params["seed"]))] = trial
    return latest


def model_results(study, plan, score_keys: list[str]) -> tuple[list[ModelResult], list[Unscored]]:
    """Every planned model with its scored runs (``score_keys``: fid_128, ...), and the runs that
    ended without scores. A model none of whose runs scored has no result."""
    latest = _latest_runs(study)
    results, unscored = [], []
    for model in plan.models:
        runs, metrics_seen = [], []
        for seed in plan.seeds:
            trial = latest.get((model.name, seed))
            if trial is None:
                continue
            attrs = trial.user_attrs
            if not is_scored(trial):
                unscored.append(Unscored(model.name, seed, attrs.get(ATTR_STATUS, trial.state.name.lower()), attrs.get(ATTR_REASON, "")))
                continue
            metrics = attrs.get(ATTR_METRICS) or {}
            metrics_seen.append(metrics)
            scores = {k: float(metrics[k]) for k in score_keys if finite(metrics.get(k))}
            curve = tuple(
                CurvePoint(int(r["steps"]) * model.step_flops, {k: float(r[k]) for k in score_keys if finite(r.get(k))})
                for r in attrs.get(ATTR_RUNGS) or []
            )  # fmt: skip
            samples = attrs.get(ATTR_SAMPLES)
            runs.append(Run(seed, scores, curve, Path(samples) if samples and Path(samples).is_file() else None))
        if runs:
            results.append(ModelResult(model.name, _costs(model, metrics_seen), tuple(runs)))
    return results, unscored


def _costs(model, metrics: list[dict]) -> Costs:
    """DICE Tab. 1's columns: parameters and multiply-adds (counted), the training steps and
    FLOPs the budget bought, and sampling throughput (the mean over the model's runs)."""
    first = metrics[0]
    rates = [m["samples_per_second"] for m in metrics if finite(m.get("samples_per_second"))]
    return Costs(
        params=int(first.get("params") or 0),
        gmacs=float(first.get("gmacs") or 0.0),
        train_steps=model.steps,
        train_flops=model.train_flops,
        samples_per_second=sum(rates) / len(rates) if rates else None,
    )


__all__ = ["Unscored", "model_results"]
