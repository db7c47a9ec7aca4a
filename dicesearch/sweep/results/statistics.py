"""Scores with their uncertainty, and which trials the data cannot tell apart from the best.

Every score a trial records comes with ``<key>_sd`` and a 95 % interval ``<key>_lo`` ..
``<key>_hi``: over seed replicates when the sweep has ``replicates`` >= 2, else over
bootstrap resamples of the generated images (FID) or subsets (KID), which leave out the
training seed's share and so understate the spread (:mod:`dicesearch.metrics`).

The rule for the table's mark: a trial is *not shown to differ* from the best (``≈``) when
the difference of the two scores is within 1.96 standard errors of the difference,
sqrt(sd_a^2 + sd_b^2) from the two trials' own sds: a two-sided 5 % z-test of the
difference, treating the two scores as independent (each trial's spread is its own). It is
not a claim that the two are equal (that needs a margin and a paired comparison: ``dicesearch
compare``), and two 95 % intervals may overlap while the scores differ at the 5 % level,
which is why the mark does not use overlap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dicesearch.metrics.score import Score

Z_95 = 1.959964  # the two-sided 5 % point of the standard normal


def tied(a: Score, b: Score) -> bool:
    """Whether ``a`` and ``b`` are not shown to differ: |a - b| <= 1.96 sqrt(sd_a^2 + sd_b^2)
    (equal values only, if either has no sd)."""
    if a.sd is None or b.sd is None:
        return a.value == b.value
    return abs(a.value - b.value) <= Z_95 * math.hypot(a.sd, b.sd)


@dataclass(frozen=True)
class RankAgreement:
    """How well one ranking of trials predicts another: Spearman's ρ and Kendall's τ, each
    with a percentile bootstrap interval over resampled trials (pairs drawn with replacement)."""

    n: int
    spearman: float
    spearman_lo: float
    spearman_hi: float
    kendall: float
    kendall_lo: float
    kendall_hi: float

    def text(self) -> str:
        return (
            f"Spearman's rho {self.spearman:.2f} [{self.spearman_lo:.2f}, {self.spearman_hi:.2f}], "
            f"Kendall's tau {self.kendall:.2f} [{self.kendall_lo:.2f}, {self.kendall_hi:.2f}] over {self.n} trials (95 % bootstrap intervals)"
        )


def rank_agreement(first: list[float], second: list[float], resamples: int = 2000, seed: int = 0) -> RankAgreement:
    """ρ and τ between paired scores ``first`` and ``second`` (at least 3 pairs), with intervals.

    A resample whose values are all tied on one side has no rank correlation; it is left out
    of the interval (so a tiny study's interval is drawn from fewer resamples).
    """
    import numpy as np
    from scipy import stats

    x, y = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    if x.shape != y.shape or x.ndim != 1 or len(x) < 3:
        raise ValueError(f"rank agreement needs at least 3 paired scores, got {len(x)} and {len(y)}")
    rho, tau = float(stats.spearmanr(x, y).statistic), float(stats.kendalltau(x, y).statistic)
    rng = np.random.default_rng(seed)
    rhos, taus = [], []
    for _ in range(resamples):
        idx = rng.integers(0, len(x), len(x))
        if np.ptp(x[idx]) == 0 or np.ptp(y[idx]) == 0:
            continue
        rhos.append(stats.spearmanr(x[idx], y[idx]).statistic)
        taus.append(stats.kendalltau(x[idx], y[idx]).statistic)
    (rho_lo, rho_hi), (tau_lo, tau_hi) = (np.quantile(v, [0.025, 0.975]) if v else (math.nan, math.nan) for v in (rhos, taus))
    return RankAgreement(len(x), rho, float(rho_lo), float(rho_hi), tau, float(tau_lo), float(tau_hi))
