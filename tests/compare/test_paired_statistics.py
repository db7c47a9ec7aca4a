"""The t interval and the paired t-test against scipy and a naive loop, and their edge cases."""

import math

import numpy as np
import pytest
from scipy import stats

from dicesearch.compare.paired import mean_interval, paired_t_test
from dicesearch.compare.results import Pairs


def _pairs(model, baseline):
    return Pairs(tuple(range(len(model))), tuple(map(float, model)), tuple(map(float, baseline)))


@pytest.mark.parametrize("n", [2, 3, 5, 12])
@pytest.mark.parametrize("level", [0.95, 0.9])
def test_the_paired_test_matches_scipy(n, level):
    rng = np.random.default_rng(100 + n)
    baseline = 40 + rng.normal(0, 4, n)
    model = baseline + rng.normal(-2, 3, n)
    test = paired_t_test(_pairs(model, baseline), level)
    reference = stats.ttest_rel(model, baseline)
    ci = reference.confidence_interval(confidence_level=level)
    assert test.t == pytest.approx(float(reference.statistic), rel=1e-10)
    assert test.p == pytest.approx(float(reference.pvalue), rel=1e-10)
    assert (test.interval.lo, test.interval.hi) == pytest.approx((float(ci.low), float(ci.high)), rel=1e-10)
    assert test.mean == pytest.approx(float(np.mean(model - baseline)), rel=1e-12)


def test_the_paired_test_matches_a_naive_computation():
    model, baseline = [41.0, 47.5, 39.0, 44.0], [44.0, 49.0, 43.5, 45.0]
    d = [m - b for m, b in zip(model, baseline)]  # -3, -1.5, -4.5, -1
    n = len(d)
    mean = sum(d) / n
    var = 0.0
    for v in d:
        var += (v - mean) ** 2
    sd = math.sqrt(var / (n - 1))
    t = mean / (sd / math.sqrt(n))
    p = 2 * (1 - stats.t.cdf(abs(t), n - 1))
    half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    test = paired_t_test(_pairs(model, baseline), 0.95)
    assert mean == -2.5
    assert test.mean == pytest.approx(mean)
    assert test.sd == pytest.approx(sd)
    assert test.t == pytest.approx(t)
    assert test.p == pytest.approx(p)
    assert test.interval.lo == pytest.approx(mean - half)
    assert test.interval.hi == pytest.approx(mean + half)
    assert test.seeds == (0, 1, 2, 3) and test.differences == tuple(d)


def test_the_mean_interval_matches_scipy_t_interval():
    values = [38.2, 41.9, 35.0, 44.4, 40.1]
    got = mean_interval(values, 0.95)
    lo, hi = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert (got.lo, got.hi) == pytest.approx((lo, hi), rel=1e-12)
    assert got.sd == pytest.approx(np.std(values, ddof=1), rel=1e-12)
    assert got.half_width == pytest.approx((hi - lo) / 2, rel=1e-12)


def test_two_seeds_have_one_degree_of_freedom_and_a_wide_interval():
    test = paired_t_test(_pairs([30.0, 33.0], [40.0, 41.0]), 0.95)  # d = -10, -8
    assert test.p == pytest.approx(float(stats.ttest_rel([30.0, 33.0], [40.0, 41.0]).pvalue))
    assert test.interval.half_width == pytest.approx(stats.t.ppf(0.975, 1) * math.sqrt(2) / math.sqrt(2))
    assert test.interval.lo < -20 and test.interval.hi > 0  # a 9 FID gain at two seeds is not resolved
    assert "2 seeds" in test.note


@pytest.mark.parametrize(
    ("model", "baseline"),
    [([41.0, 45.0, 40.0], [41.0, 45.0, 40.0]), ([0.5078125, 0.5], [0.5, 0.4921875]), ([42.1, 44.3, 39.9], [40.1, 42.3, 37.9])],
    ids=["identical", "precision-steps", "constant-offset-with-rounding"],
)
def test_differences_without_spread_give_no_p_value(model, baseline):
    test = paired_t_test(_pairs(model, baseline), 0.95)
    assert test.p is None and test.t is None and test.lo is None and test.hi is None
    assert test.mean == pytest.approx(float(np.mean(np.subtract(model, baseline))))
    assert "same at every seed" in test.note


def test_fewer_than_two_shared_seeds_give_no_interval():
    one = paired_t_test(_pairs([40.0], [42.0]))
    assert one.p is None and one.interval.lo is None and one.mean == -2.0
    none = paired_t_test(Pairs((), (), ()))
    assert none.p is None and none.interval is None and none.mean is None and "no seed" in none.note
