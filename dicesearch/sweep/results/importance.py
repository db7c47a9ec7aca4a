"""Which parameter explains the score: fANOVA's share of the score's variance, with its spread.

Two questions get called "parameter importance", and they have different answers:

* **What explains the score?** fANOVA (Hutter, Hoos and Leyton-Brown 2014) fits a random
  forest to (parameters -> score) and splits the variance of its predictions into each
  parameter's share. A parameter that moves every trial's score a lot gets a large share.
  This is what a reader of an importance plot usually wants to know, and what this module
  draws (``EVALUATOR``).
* **What separates the best trials from the rest?** PED-ANOVA (Optuna 5's default
  evaluator) compares the parameter distributions of the top quantile with the rest. On one
  default sweep it gave the conditioning method, which decided every trial's first-rung score
  (every TD-LN trial was worse than every adaLN-Zero one), "< 0.01": among the best trials all
  use adaLN-Zero, so it does not separate *them*; fANOVA on the same trials gave it 0.86-0.92.

The forest is random, so the shares are estimated over ``SEEDS`` forest seeds: the plot
shows their mean and the range they span, and says which evaluator and question it is.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import optuna

EVALUATOR = "fANOVA"
QUESTION = "the share of the score's variance each parameter explains"
SEEDS = tuple(range(5))


@dataclass(frozen=True)
class Importance:
    """One parameter's share of the score's variance: the mean over forest seeds and their range."""

    name: str
    shares: tuple[float, ...]  # one per forest seed, each normalised over the parameters

    @property
    def mean(self) -> float:
        return sum(self.shares) / len(self.shares)

    @property
    def low(self) -> float:
        return min(self.shares)

    @property
    def high(self) -> float:
        return max(self.shares)


def fanova_importances(study: optuna.Study, target: Callable | None = None, seeds: Sequence[int] = SEEDS) -> list[Importance]:
    """Every varied parameter's fANOVA share of the (first) objective, largest mean first."""
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    per_seed = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for seed in seeds:
            per_seed.append(get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=seed), target=target, normalize=True))
    names = sorted({name for shares in per_seed for name in shares})
    importances = [Importance(name, tuple(float(shares.get(name, 0.0)) for shares in per_seed)) for name in names]
    return sorted(importances, key=lambda i: (-i.mean, i.name))


def importance_figure(importances: Sequence[Importance], target_name: str):
    """Horizontal bars (mean share) with the range over forest seeds, titled with the evaluator and its question."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.5, 0.55 * len(importances) + 1.9), dpi=110)
    axes = figure.subplots()
    shown = list(reversed(importances))  # the largest at the top
    y = list(range(len(shown)))
    means = [i.mean for i in shown]
    axes.barh(y, means, color="#4c72b0")
    axes.errorbar(means, y, xerr=[[m - i.low for m, i in zip(means, shown)], [i.high - m for m, i in zip(means, shown)]], fmt="none", ecolor="black", capsize=4)
    for yi, importance in zip(y, shown):
        axes.text(min(importance.high + 0.02, 0.98), yi, f"{importance.mean:.2f}", va="center", fontsize=9)
    axes.set_yticks(y, [i.name for i in shown])
    axes.set_xlim(0, 1)
    axes.set_xlabel(f"share of the variance of {target_name} (mean; bar: range over {len(importances[0].shares) if importances else 0} forest seeds)")
    axes.set_title(f"{EVALUATOR}: {QUESTION}", fontsize=10)
    figure.tight_layout()
    return figure


__all__ = ["EVALUATOR", "QUESTION", "SEEDS", "Importance", "fanova_importances", "importance_figure"]
