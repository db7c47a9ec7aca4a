"""The paired-t power and the seeds-needed count against brute force and simulation."""

import numpy as np
import pytest
from scipy import stats

from dicesearch.compare.seeds_needed import paired_t_power, seeds_needed


def _simulated_power(effect, sd, seeds, alpha, sims, rng):
    d = rng.normal(effect, sd, (sims, seeds))
    return float(np.mean(stats.ttest_1samp(d, 0.0, axis=1).pvalue < alpha))


@pytest.mark.parametrize(("effect", "sd", "seeds"), [(3.0, 4.0, 5), (-2.0, 1.5, 3), (1.0, 4.0, 20)])
def test_the_power_formula_matches_a_simulation(effect, sd, seeds):
    rng = np.random.default_rng(7)
    sims = 20_000
    simulated = _simulated_power(effect, sd, seeds, 0.05, sims, rng)
    formula = paired_t_power(effect, sd, seeds, 0.05)
    assert abs(simulated - formula) < 4 * np.sqrt(formula * (1 - formula) / sims) + 1e-3


@pytest.mark.parametrize(("effect", "sd", "alpha"), [(3.0, 4.0, 0.05), (0.5, 4.0, 0.05), (6.0, 2.0, 0.05), (3.0, 4.0, 0.0167)])
def test_the_count_is_the_smallest_that_reaches_the_power(effect, sd, alpha):
    got = seeds_needed(effect, sd, alpha, 0.8)
    brute = next(n for n in range(2, 10_000) if paired_t_power(effect, sd, n, alpha) >= 0.8)
    assert got.count == brute
    normal = ((stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(0.8)) * sd / effect) ** 2
    assert normal - 1 <= got.count <= normal + 4  # the t-test needs a little more than the normal approximation


def test_at_the_count_a_simulation_reaches_the_power_and_one_seed_fewer_does_not():
    effect, sd = 3.0, 4.0
    n = seeds_needed(effect, sd).count
    rng = np.random.default_rng(11)
    assert n == 16  # Cohen's d = 0.75: 16 pairs (G*Power, matched pairs, two-sided, 80 %)
    at = _simulated_power(effect, sd, n, 0.05, 20_000, rng)
    fewer = _simulated_power(effect, sd, n - 1, 0.05, 20_000, rng)
    assert 0.79 <= at <= 0.84
    assert fewer < 0.80 + 0.01


def test_a_huge_difference_needs_two_seeds_or_a_few_at_a_strict_level():
    assert seeds_needed(30.0, 1.0).count == 2  # the power search visits the noncentral t's far tails
    assert seeds_needed(30.0, 1.0, alpha=0.001).count == next(n for n in range(2, 50) if paired_t_power(30.0, 1.0, n, 0.001) >= 0.8)
    assert 0.8 <= paired_t_power(30.0, 1.0, 2) <= 1.0


@pytest.mark.parametrize(("d", "pairs"), [(0.2, 199), (0.5, 34), (0.8, 15)])
def test_the_count_matches_published_sample_sizes(d, pairs):
    """G*Power's matched-pairs t-test (two-sided, alpha 0.05, power 0.8) for Cohen's d."""
    assert seeds_needed(d, 1.0).count == pairs


@pytest.mark.parametrize(("effect", "sd", "reason"), [(2.0, None, "fewer than 2 seeds"), (2.0, 0.0, "no spread"), (0.0, 3.0, "zero")])
def test_what_is_not_estimable(effect, sd, reason):
    got = seeds_needed(effect, sd)
    assert got.count is None and reason in got.reason and got.text() == "not estimable"


def test_a_tiny_difference_needs_more_seeds_than_are_searched():
    got = seeds_needed(1e-6, 5.0)
    assert got.count is None and got.more_than == 1_000_000 and got.text() == "> 1,000,000"
