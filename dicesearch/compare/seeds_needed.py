"""How many seeds would resolve a difference of the observed size: paired-t power analysis.

With n seed-paired differences of true mean μ and standard deviation σ, the paired t
statistic follows a noncentral t distribution with n - 1 degrees of freedom and
noncentrality λ = (μ / σ) · √n (Cohen 1988, *Statistical Power Analysis*, ch. 2; the
calculation G*Power and statsmodels' ``TTestPower`` make). The two-sided test at level α
rejects with probability

    power(n) = P(T'_{n-1, λ} > c) + P(T'_{n-1, λ} < -c),   c = t(1 - α/2, n - 1),

and the seeds needed are the smallest n >= 2 with power(n) >= the target (80 % by default).

Here μ and σ are the *observed* mean and sd of the differences, so the answer is a guide,
not a promise: from 3 seeds σ has 2 degrees of freedom and may be off by a factor of two
either way, and a difference that happened to come out large gives too small a count. It is
"not estimable" with fewer than 2 seeds, with differences of no spread, or with a mean
difference of exactly zero (no finite n resolves it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special

from dicesearch.compare.noncentral_t import noncentral_t_cdf, noncentral_t_sf

MOST_SEEDS = 1_000_000  # above this the count is reported as "more than"


@dataclass(frozen=True)
class SeedsNeeded:
    """Seeds for a paired t-test at level ``alpha`` to detect the observed difference with
    probability ``power``; ``count`` is None when not estimable (``reason`` says why)."""

    count: int | None
    alpha: float
    power: float
    reason: str | None = None
    more_than: int | None = None  # set when the count exceeds what is searched

    def text(self) -> str:
        """``16``, ``> 1,000,000`` or ``not estimable``."""
        if self.count is not None:
            return str(self.count)
        return f"> {self.more_than:,}" if self.more_than is not None else "not estimable"


def paired_t_power(effect: float, sd: float, seeds: int, alpha: float = 0.05) -> float:
    """Probability that a two-sided paired t-test at level ``alpha`` over ``seeds`` pairs
    rejects, when the differences have mean ``effect`` and standard deviation ``sd``."""
    if seeds < 2 or sd <= 0:
        raise ValueError(f"power needs at least 2 seeds and a positive sd, got {seeds} and {sd}")
    return float(_power_curve(effect, sd, np.array([seeds]), alpha)[0])


def _power_curve(effect: float, sd: float, seeds: np.ndarray, alpha: float) -> np.ndarray:
    """:func:`paired_t_power` at each of ``seeds`` (vectorised: scipy's t quantile ufunc and
    the noncentral-t tails of :mod:`dicesearch.compare.noncentral_t`)."""
    df = seeds - 1
    critical = special.stdtrit(df, 1 - alpha / 2)  # t(1 - α/2, n - 1)
    noncentrality = abs(effect) / sd * np.sqrt(seeds)
    return noncentral_t_sf(df, noncentrality, critical) + noncentral_t_cdf(df, noncentrality, -critical)


def seeds_needed(effect: float, sd: float | None, alpha: float = 0.05, power: float = 0.8) -> SeedsNeeded:
    """The fewest seeds giving ``power`` against a true difference ``effect`` with spread ``sd``
    (module docstring). Power grows with n, so the answer is the first n >= 2 whose power
    reaches the target, searched in windows around the normal approximation
    ((z(1 - α/2) + z(power)) · sd / effect)² (the t-test needs a little more than it)."""
    if not (0 < alpha < 1 and 0 < power < 1):
        raise ValueError(f"alpha and power must lie in (0, 1), got {alpha} and {power}")
    if sd is None or not math.isfinite(sd) or not math.isfinite(effect):
        return SeedsNeeded(None, alpha, power, "fewer than 2 seeds: no spread to plan from")
    if sd <= 0:
        return SeedsNeeded(None, alpha, power, "the differences have no spread")
    if effect == 0:
        return SeedsNeeded(None, alpha, power, "the mean difference is zero")
    z = special.ndtri(1 - alpha / 2) + special.ndtri(power)  # z(1 - α/2) + z(power)
    normal = (z * sd / abs(effect)) ** 2
    if normal > MOST_SEEDS:
        return SeedsNeeded(None, alpha, power, "the difference is tiny against its spread", more_than=MOST_SEEDS)
    start, width = max(2, math.floor(normal) - 1), 8
    while True:
        window = np.arange(start, start + width)
        reached = np.flatnonzero(_power_curve(effect, sd, window, alpha) >= power)
        if reached.size and reached[0] == 0 and start > 2:
            start = max(2, start - width)  # reached already at the window's start: look lower
        elif reached.size:
            return SeedsNeeded(int(window[reached[0]]), alpha, power)
        else:
            start, width = start + width, 2 * width
