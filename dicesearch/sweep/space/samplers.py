"""How a search space is sampled: TPE for one objective, NSGA-II for several (both seeded)."""

from __future__ import annotations

from collections.abc import Sequence

import optuna


def make_sampler(directions: Sequence[str], seed: int) -> optuna.samplers.BaseSampler:
    """TPE (three random trials first) for one objective, NSGA-II for a Pareto front, seeded."""
    if len(directions) > 1:
        return optuna.samplers.NSGAIISampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=3)
