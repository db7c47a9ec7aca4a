"""Student's t over seeds: a mean with its interval, and the paired t-test of two models.

For values x_1 .. x_n (one per seed) with mean x̄ and sample standard deviation s (ddof = 1),
the level-L interval of the mean is x̄ ± t((1 + L) / 2, n - 1) · s / √n (Student 1908; the
one :mod:`dicesearch.metrics.replicates` reports for one model's scores).

The paired t-test (e.g. Wasserman, *All of Statistics*, Sec. 10.1) applies the same to the
seed-paired differences d_s = score(model, s) - score(baseline, s): t = d̄ / (s_d / √n) with
n - 1 degrees of freedom, two-sided p = 2 · P(T_{n-1} >= |t|). Pairing removes what a seed
does to both models alike (its images, noise and timesteps), which is most of the seed
spread, so the test is far sharper than comparing the two models' separate intervals. It
assumes the differences are roughly normal across seeds; with few seeds that cannot be
checked, and the t-test is known to be robust to moderate departures.

Edge cases:

* fewer than 2 shared seeds: no spread, so no interval and no p-value;
* 2 seeds: the test is valid (1 degree of freedom) but t(0.975, 1) = 12.7, so the 95 %
  interval is d̄ ± 9.0 s_d: significance needs the two differences to agree within about a
  ninth of their mean. Expect "inconclusive";
* all differences equal (no spread, up to rounding): t is x/0. A constant difference across
  seeds is no evidence of a difference (discrete scores such as precision at N images, in
  steps of 1/N, tie by chance at 2-3 seeds), and it gives no estimate of the noise, so the
  p-value is None (not computed) and the comparison stays inconclusive.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import special

from dicesearch.compare.results import Pairs

# differences whose range is below this fraction of their size count as equal (float rounding)
EQUAL_RELATIVE = 1e-12


@dataclass(frozen=True)
class MeanInterval:
    """The mean of ``n`` values with its Student-t interval at ``level``; ``sd``, ``lo`` and
    ``hi`` are None with fewer than 2 values."""

    n: int
    mean: float
    sd: float | None
    lo: float | None
    hi: float | None
    level: float

    @property
    def half_width(self) -> float | None:
        return None if self.lo is None else (self.hi - self.lo) / 2


def mean_interval(values: Sequence[float], level: float = 0.95) -> MeanInterval:
    """The mean of ``values`` and its level-``level`` t interval (module docstring)."""
    if not 0 < level < 1:
        raise ValueError(f"an interval's level must be in (0, 1), got {level}")
    n = len(values)
    if n == 0:
        raise ValueError("no values to average")
    mean = math.fsum(values) / n
    if n < 2:
        return MeanInterval(n, mean, None, None, None, level)
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(special.stdtrit(n - 1, (1 + level) / 2)) * sd / math.sqrt(n)  # t((1 + L) / 2, n - 1)
    return MeanInterval(n, mean, sd, mean - half, mean + half, level)


@dataclass(frozen=True)
class PairedTest:
    """The paired t-test of one model against the baseline on one score.

    ``interval``: the mean difference d̄ (model - baseline) with its interval (None without a
    shared seed); the interval's bounds, ``t`` and ``p`` (two-sided) are None when the test
    cannot be computed, and ``note`` says why."""

    seeds: tuple[int, ...]
    differences: tuple[float, ...]
    interval: MeanInterval | None
    t: float | None
    p: float | None
    note: str | None = None

    @property
    def mean(self) -> float | None:
        return None if self.interval is None else self.interval.mean

    @property
    def sd(self) -> float | None:
        return None if self.interval is None else self.interval.sd

    @property
    def lo(self) -> float | None:
        return None if self.interval is None else self.interval.lo

    @property
    def hi(self) -> float | None:
        return None if self.interval is None else self.interval.hi


def paired_t_test(pairs: Pairs, level: float = 0.95) -> PairedTest:
    """Paired t-test of the differences in ``pairs`` (module docstring, edge cases included)."""
    d = pairs.differences
    n = len(d)
    if n == 0:
        return PairedTest(pairs.seeds, d, None, None, None, "no seed has this score for both models")
    interval = mean_interval(d, level)
    if n < 2:
        return PairedTest(pairs.seeds, d, interval, None, None, "one shared seed: no spread to test against")
    if max(d) - min(d) <= EQUAL_RELATIVE * max(abs(v) for v in d):
        note = "the difference is the same at every seed: no spread to test against"
        flat = MeanInterval(n, interval.mean, 0.0, None, None, level)  # no interval to claim anything from
        return PairedTest(pairs.seeds, d, flat, None, None, note)
    t = interval.mean / (interval.sd / math.sqrt(n))
    p = float(2 * special.stdtr(n - 1, -abs(t)))  # 2 · P(T_{n-1} <= -|t|)
    note = "2 seeds: 1 degree of freedom, the interval is wide" if n == 2 else None
    return PairedTest(pairs.seeds, d, interval, t, p, note)
