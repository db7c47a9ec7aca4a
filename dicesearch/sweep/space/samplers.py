"""How a search space is sampled: TPE for one objective, NSGA-II for several (both seeded)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

STARTUP_TRIALS = 3  # TPE's random draws before it models the history


def make_sampler(directions: Sequence[str], seed: int, history: Sequence[FrozenTrial] | None = None) -> optuna.samplers.BaseSampler:
    """TPE (three random trials first) for one objective, NSGA-II for a Pareto front, seeded.
    With ``history`` (one objective), TPE draws from those trials instead of the study's
    (:mod:`dicesearch.sweep.store.draw_order`)."""
    if len(directions) > 1:
        return optuna.samplers.NSGAIISampler(seed=seed)
    tpe = optuna.samplers.TPESampler(seed=seed, n_startup_trials=STARTUP_TRIALS)
    return tpe if history is None else FromHistory(tpe, directions[0], history)


class FromHistory(optuna.samplers.BaseSampler):
    """``sampler`` drawing every value from ``history`` (finished trials, and running ones for a
    constant liar), whatever the study holds: the study's trial only receives the values. The
    history is a study of its own in memory, what a sampler reads trials from, with a trial
    of its own that stands for the one drawn for (where a sampler writes what it drew)."""

    def __init__(self, sampler: optuna.samplers.BaseSampler, direction: str, history: Sequence[FrozenTrial]):
        self.sampler = sampler
        self.history = optuna.create_study(storage=optuna.storages.InMemoryStorage(), direction=direction)
        self.history.add_trials([t for t in history if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)])
        self.history.ask()
        self.stand_in = self.history.get_trials(deepcopy=False)[-1]

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self.sampler.infer_relative_search_space(self.history, self.stand_in)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self.sampler.sample_relative(self.history, self.stand_in, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution) -> Any:
        return self.sampler.sample_independent(self.history, self.stand_in, param_name, param_distribution)
