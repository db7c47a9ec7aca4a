"""KID, the FID bootstrap and the Inception Score, each against an independent computation."""

import math

import numpy as np
import pytest
import torch

from dicesearch.errors import DataError
from dicesearch.metrics import (
    fid_bootstrap,
    gaussian_stats,
    inception_score,
    kernel_inception_distance,
    load_logits_network,
)
from dicesearch.metrics.bootstrap import bootstrap_fids, resample_indices
from dicesearch.metrics.frechet import frechet_distance_between
from dicesearch.metrics.kernel import mmd2_unbiased


def _features(n: int, d: int, shift: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) * 0.5 + shift + rng.normal(size=d) * 0.1


def _naive_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """The unbiased MMD² of Bińkowski et al. with k(a, b) = (a·b/d + 1)^3, as three double loops."""
    d = x.shape[1]

    def k(a, b):
        return (sum(float(p) * float(q) for p, q in zip(a, b)) / d + 1.0) ** 3

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2.0 * xy


def test_mmd2_equals_the_double_loop_in_float64():
    x, y = _features(9, 5, 0.0, 1), _features(7, 5, 0.3, 2)
    assert mmd2_unbiased(x, y) == pytest.approx(_naive_mmd2(x, y), rel=1e-12, abs=1e-12)


def test_kid_is_the_mean_and_sd_of_seeded_subset_estimates():
    x, y = _features(20, 6, 0.0, 3), _features(24, 6, 0.4, 4)
    kid = kernel_inception_distance(x, y, subsets=7, subset_size=5, seed=11)
    rng = np.random.default_rng(11)  # the same draws, in the same order, scored by the double loop
    expected = [_naive_mmd2(x[rng.choice(20, 5, replace=False)], y[rng.choice(24, 5, replace=False)]) for _ in range(7)]
    assert kid.value == pytest.approx(np.mean(expected), rel=1e-10)
    assert kid.std == pytest.approx(np.std(expected, ddof=1), rel=1e-10)
    assert (kid.subsets, kid.subset_size) == (7, 5)


def test_kid_is_unbiased_near_zero_for_one_distribution_and_grows_with_the_shift():
    same = kernel_inception_distance(_features(200, 8, 0.0, 5), _features(200, 8, 0.0, 5) + 0, seed=0)
    assert abs(same.value) < 1e-12 + 3 * same.std  # identical features: zero in expectation
    x = _features(200, 8, 0.0, 6)
    near, far = (kernel_inception_distance(x, _features(200, 8, s, 7), seed=0).value for s in (0.2, 1.0))
    assert 0 < near < far
    assert kernel_inception_distance(x, _features(200, 8, 1.0, 7)).subset_size == 100  # half of N by default


def test_kid_refuses_what_it_cannot_compute():
    with pytest.raises(DataError, match="one D"):
        kernel_inception_distance(np.zeros((4, 3)), np.zeros((4, 2)))
    with pytest.raises(DataError, match="needs 2 to 4 samples"):
        kernel_inception_distance(np.zeros((4, 3)), np.zeros((6, 3)), subset_size=5)


@pytest.mark.parametrize(("n", "d"), [(12, 40), (30, 8)])  # fewer samples than dimensions (the shortcut), and more
def test_each_bootstrap_fid_equals_the_fid_of_that_resample(n, d):
    x, ref = _features(n, d, 0.0, 8), gaussian_stats(_features(3 * d, d, 0.3, 9))
    indices = resample_indices(n, 5, seed=3)
    expected = [frechet_distance_between(gaussian_stats(x[idx]), ref) for idx in indices]
    np.testing.assert_allclose(bootstrap_fids(x, ref, indices), expected, rtol=1e-9, atol=1e-9)


def test_the_bootstrap_interval_is_the_resamples_spread_around_the_point():
    x, ref = _features(16, 32, 0.0, 10), gaussian_stats(_features(64, 32, 0.5, 11))
    interval = fid_bootstrap(x, ref, resamples=50, seed=4)
    direct = [frechet_distance_between(gaussian_stats(x[idx]), ref) for idx in np.random.default_rng(4).integers(0, 16, size=(50, 16))]
    point = frechet_distance_between(gaussian_stats(x), ref)
    q_lo, q_hi = np.quantile(direct, [0.025, 0.975])
    shift = point - np.mean(direct)
    assert interval.value == pytest.approx(point, rel=1e-9)
    assert (interval.lo, interval.hi) == (pytest.approx(q_lo + shift, rel=1e-9), pytest.approx(q_hi + shift, rel=1e-9))
    assert interval.std == pytest.approx(np.std(direct, ddof=1), rel=1e-9)
    assert interval.lo < point < interval.hi
    assert q_lo > point and 2 * point - q_lo < point  # why neither the percentile nor the basic interval: both miss F
    assert fid_bootstrap(x, ref, resamples=50, seed=4) == interval  # seeded: the same every time


def _naive_inception_score(logits: np.ndarray, splits: int) -> tuple[float, float]:
    scores = []
    for part in np.array_split(logits, splits):
        p = np.exp(part) / np.exp(part).sum(axis=1, keepdims=True)
        marginal = p.mean(axis=0)
        kl = [sum(pi * math.log(pi / qi) for pi, qi in zip(row, marginal) if pi > 0) for row in p]
        scores.append(math.exp(sum(kl) / len(kl)))
    return float(np.mean(scores)), float(np.std(scores))


def test_inception_score_equals_the_formula_and_its_limits():
    logits = np.random.default_rng(12).normal(size=(40, 6)) * 3
    score = inception_score(logits, splits=4)
    assert (score.value, score.std) == pytest.approx(_naive_inception_score(logits, 4), rel=1e-10)
    assert inception_score(np.zeros((20, 5)), splits=2).value == pytest.approx(1.0)  # no confidence: IS = 1
    confident = np.full((36, 3), -50.0)
    confident[np.arange(36), np.arange(36) % 3] = 50.0  # sure of each image, every class equally often per split
    assert inception_score(confident, splits=3).value == pytest.approx(3.0, rel=1e-6)  # IS = number of classes
    with pytest.raises(DataError, match="needs"):
        inception_score(np.zeros((3, 4)), splits=10)


class _TinyClassifier(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.adaptive_avg_pool2d(x, 1).flatten(1) @ torch.ones(3, 4)  # (N, 4)


def test_a_user_given_classifier_is_checked_for_logits(tmp_path):
    good = tmp_path / "classifier.pt"
    torch.jit.save(torch.jit.script(_TinyClassifier()), str(good))
    module = load_logits_network(good)
    assert module(torch.zeros(5, 3, 299, 299)).shape == (5, 4)
    pooled = tmp_path / "pooled.pt"
    torch.jit.save(torch.jit.script(torch.nn.Flatten(0)), str(pooled))
    with pytest.raises(DataError, match="must return \\(N, K\\) logits"):
        load_logits_network(pooled)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    with pytest.raises(DataError, match="not a TorchScript module"):
        load_logits_network(junk)
