"""Improved precision/recall against a naive O(N^2) loop."""

from __future__ import annotations

import numpy as np
import pytest

from dicesearch.errors import DataError
from dicesearch.metrics.precision_recall import knn_sq_radii, precision_recall


def _naive_precision_recall(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float]:
    def radii(points):
        out = []
        for i, p in enumerate(points):
            dists = sorted(
                float(np.sqrt(np.sum((p - q) ** 2))) for j, q in enumerate(points) if j != i
            )
            out.append(dists[k - 1])
        return out

    def covered(queries, centres, centre_radii):
        hits = 0
        for q in queries:
            if any(np.sqrt(np.sum((q - c) ** 2)) <= r for c, r in zip(centres, centre_radii)):
                hits += 1
        return hits / len(queries)

    return covered(fake, real, radii(real)), covered(real, fake, radii(fake))


@pytest.mark.parametrize(
    ("n_real", "n_fake", "d", "k"), [(40, 30, 5, 3), (25, 60, 16, 3), (33, 33, 3, 1), (50, 20, 8, 5)]
)
def test_matches_naive_loop(n_real, n_fake, d, k):
    rng = np.random.default_rng(n_real * n_fake + d)
    real = rng.standard_normal((n_real, d))
    fake = 0.8 * rng.standard_normal((n_fake, d)) + 0.4
    # A tiny block budget forces many row blocks, exercising the batching.
    ours = precision_recall(real, fake, k=k, max_block_bytes=8 * 64 * 3)
    expected = _naive_precision_recall(real, fake, k)
    assert ours == pytest.approx(expected, abs=1e-12)
    assert 0.0 < ours[0] < 1.0 or 0.0 < ours[1] < 1.0  # a non-trivial case


def test_identical_sets_give_one():
    x = np.random.default_rng(7).standard_normal((64, 10))
    assert precision_recall(x, x.copy()) == (1.0, 1.0)


def test_far_apart_sets_give_zero():
    rng = np.random.default_rng(8)
    real = rng.standard_normal((30, 4))
    fake = rng.standard_normal((30, 4)) + 1000.0
    assert precision_recall(real, fake) == (0.0, 0.0)


def test_knn_radii_exclude_the_point_itself():
    points = np.array([[0.0], [1.0], [3.0], [7.0]])
    # k=1 neighbours: 0->1 (1), 1->0 (1), 3->1 (2), 7->3 (4); squared.
    np.testing.assert_array_equal(knn_sq_radii(points, k=1), [1.0, 1.0, 4.0, 16.0])
    # k=3: the farthest other point.
    np.testing.assert_array_equal(knn_sq_radii(points, k=3), [49.0, 36.0, 16.0, 49.0])


def test_too_few_samples_is_a_clear_error():
    with pytest.raises(DataError, match="at least 4 samples"):
        precision_recall(np.zeros((3, 2)), np.zeros((10, 2)))
