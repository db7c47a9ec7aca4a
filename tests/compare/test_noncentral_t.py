"""The noncentral t CDF: the quadrature agrees with scipy where scipy answers, and fills its NaNs."""

import numpy as np
import pytest
from scipy import special

from dicesearch.compare.noncentral_t import cdf_by_quadrature, noncentral_t_cdf, noncentral_t_sf


@pytest.mark.parametrize(("df", "nc", "x"), [(1, 0.0, 0.5), (1, 40.0, 12.7), (3, 2.0, 1.5), (3, 2.0, -4.3), (15, 3.1, 2.13), (100, 3.0, 2.0), (1e6, 4.0, 1.96)])
def test_the_quadrature_agrees_with_scipy_where_scipy_has_an_answer(df, nc, x):
    assert cdf_by_quadrature(df, nc, x) == pytest.approx(float(special.nctdtr(df, nc, x)), rel=1e-8, abs=1e-14)


def test_no_nan_where_scipy_has_one_and_the_tails_obey_their_bounds():
    df = np.array([1, 2, 3, 4, 5, 8, 15, 30, 100, 1000, 1e5])[:, None]
    nc = np.linspace(0, 60, 121)[None, :]
    for alpha in (0.05, 0.001):
        critical = special.stdtrit(df, 1 - alpha / 2)
        scipy_lower = special.nctdtr(df, nc, -critical)
        lower, upper, beyond = noncentral_t_cdf(df, nc, -critical), noncentral_t_cdf(df, nc, critical), noncentral_t_sf(df, nc, critical)
        assert np.isnan(scipy_lower).any()  # the gap this module exists for
        assert np.isfinite(lower).all() and np.isfinite(upper).all() and np.isfinite(beyond).all()
        assert ((0 <= lower) & (lower <= upper + 1e-15) & (upper <= 1)).all()  # (scipy is not monotone below 1e-150)
        assert upper + beyond == pytest.approx(np.ones_like(upper), abs=1e-9)
        # T' < 0 needs Z < -λ: the lower tail is at most Φ(-λ)
        assert (lower <= special.ndtr(-nc) + 1e-15).all()
        finite = np.isfinite(scipy_lower)
        assert lower[finite] == pytest.approx(scipy_lower[finite], rel=1e-12, abs=1e-300)


def test_the_cdf_matches_a_simulation():
    rng = np.random.default_rng(3)
    df, nc = 4, 2.5
    draws = (rng.standard_normal(200_000) + nc) / np.sqrt(rng.chisquare(df, 200_000) / df)
    for x in (-1.0, 1.0, 2.776, 5.0):
        assert float(noncentral_t_cdf(df, nc, x)) == pytest.approx(np.mean(draws <= x), abs=0.004)
        assert float(noncentral_t_sf(df, nc, x)) == pytest.approx(np.mean(draws > x), abs=0.004)
        assert cdf_by_quadrature(df, nc, x) == pytest.approx(np.mean(draws <= x), abs=0.004)
