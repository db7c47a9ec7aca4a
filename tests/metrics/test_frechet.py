"""Fréchet distance against scipy, analytic cases and an exact low-rank computation."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from dicesearch.errors import DataError
from dicesearch.metrics.frechet import (
    frechet_distance,
    frechet_distance_between,
    frechet_distance_to_samples,
    gaussian_stats,
    trace_sqrt_product,
)


def _scipy_frechet(x: np.ndarray, y: np.ndarray) -> float:
    """Textbook FID with scipy's general matrix square root, written independently."""
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    root = scipy.linalg.sqrtm(s1 @ s2)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(root).real)


def _correlated(rng: np.random.Generator, n: int, d: int, shift: float = 0.0) -> np.ndarray:
    mixing = rng.standard_normal((d, d)) / np.sqrt(d)
    return rng.standard_normal((n, d)) @ mixing + shift  # (n, d)


@pytest.mark.parametrize("d", [8, 48])
def test_matches_scipy_sqrtm_on_random_features(d):
    rng = np.random.default_rng(d)
    x = _correlated(rng, 400, d)
    y = _correlated(rng, 300, d, shift=0.3)
    ours = frechet_distance_between(gaussian_stats(x), gaussian_stats(y))
    assert ours == pytest.approx(_scipy_frechet(x, y), rel=1e-8)
    assert ours > 0.1


def test_identical_distributions_give_zero():
    rng = np.random.default_rng(0)
    for n, d in [(500, 32), (20, 64)]:  # full rank and rank-deficient covariance
        stats = gaussian_stats(_correlated(rng, n, d))
        value = frechet_distance_between(stats, stats)
        assert value == pytest.approx(0.0, abs=1e-10 * np.trace(stats.sigma))


def test_shifted_mean_equal_covariances_gives_squared_mean_distance():
    rng = np.random.default_rng(1)
    d = 24
    sigma = gaussian_stats(_correlated(rng, 200, d)).sigma
    mu1 = rng.standard_normal(d)
    delta = rng.standard_normal(d)
    value = frechet_distance(mu1, sigma, mu1 + delta, sigma)
    assert value == pytest.approx(float(delta @ delta), rel=1e-9)


def test_diagonal_covariances_match_closed_form():
    rng = np.random.default_rng(2)
    d = 40
    a, b = rng.uniform(0.1, 3.0, d), rng.uniform(0.0, 3.0, d)
    b[:5] = 0.0  # degenerate directions are allowed
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    expected = float(np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2))
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)


def test_rank_deficient_trace_matches_exact_low_rank_formula():
    # n < d, as with 500 images and 2048 features. With A the centred, scaled samples
    # (S1 = A^T A), the nonzero eigenvalues of S1 S2 are those of the small n x n
    # matrix A S2 A^T, which gives an exact reference without a D x D square root.
    rng = np.random.default_rng(3)
    n, d = 30, 256
    x = np.abs(rng.standard_normal((n, d)))
    y = np.abs(rng.standard_normal((n, d))) + 0.1
    s1, s2 = gaussian_stats(x).sigma, gaussian_stats(y).sigma
    a = (x - x.mean(0)) / np.sqrt(n - 1)  # (n, d)
    small = a @ s2 @ a.T  # (n, n)
    exact = float(np.sqrt(np.clip(np.linalg.eigvalsh(small), 0, None)).sum())
    assert trace_sqrt_product(s1, s2) == pytest.approx(exact, rel=1e-8)
    assert trace_sqrt_product(s2, s1) == pytest.approx(exact, rel=1e-8)  # symmetric


def test_gaussian_stats_are_mean_and_unbiased_covariance():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((50, 6))
    stats = gaussian_stats(x)
    centred = x - x.sum(0) / 50
    assert stats.n == 50
    np.testing.assert_allclose(stats.mu, x.sum(0) / 50, rtol=1e-12)
    np.testing.assert_allclose(stats.sigma, centred.T @ centred / 49, rtol=1e-12)
    assert stats.mu.dtype == np.float64 and stats.sigma.dtype == np.float64


def test_bad_inputs_raise_one_line_errors():
    with pytest.raises(DataError, match="at least 2"):
        gaussian_stats(np.zeros((1, 4)))
    with pytest.raises(DataError, match="NaN"):
        gaussian_stats(np.array([[0.0, np.nan], [1.0, 2.0]]))
    with pytest.raises(ValueError, match="matching shapes"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="positive semi-definite"):
        frechet_distance(np.zeros(2), -np.eye(2), np.zeros(2), np.eye(2))


@pytest.mark.parametrize(("n", "d"), [(12, 200), (300, 20)])  # N x N route, then D x D
def test_distance_to_samples_equals_distance_between_fitted_gaussians(n, d):
    rng = np.random.default_rng(n + d)
    x = np.abs(_correlated(rng, n, d))
    ref = gaussian_stats(np.abs(_correlated(rng, 3 * d, d, shift=0.2)))
    expected = frechet_distance_between(gaussian_stats(x), ref)
    assert frechet_distance_to_samples(x, ref) == pytest.approx(expected, rel=1e-9)
    same = gaussian_stats(x)
    assert frechet_distance_to_samples(x, same) == pytest.approx(0.0, abs=1e-10 * np.trace(same.sigma))
