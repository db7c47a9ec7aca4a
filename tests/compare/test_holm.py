"""Holm's adjusted p-values: a hand-worked example and the sequential procedure they encode."""

import numpy as np
import pytest

from dicesearch.compare.holm import holm_adjust


def test_a_hand_worked_example():
    # sorted: 0.005 (x4 = 0.02), 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04 -> max 0.06)
    assert holm_adjust([0.01, 0.04, 0.03, 0.005]) == pytest.approx((0.03, 0.06, 0.06, 0.02))
    # at alpha = 0.05: 0.005 <= 0.05/4 and 0.01 <= 0.05/3 are rejected, 0.03 > 0.05/2 stops


def test_adjusted_values_are_capped_at_one_and_a_single_test_is_unchanged():
    assert holm_adjust([0.5, 0.6]) == (1.0, 1.0)
    assert holm_adjust([0.037]) == (0.037,)
    assert holm_adjust([]) == ()


def _sequential_rejections(p, alpha):
    """Holm (1979) as written: reject in increasing order while p_(j) <= alpha / (m - j + 1)."""
    m, rejected = len(p), set()
    for j, index in enumerate(sorted(range(m), key=lambda i: p[i])):
        if p[index] > alpha / (m - j):
            break
        rejected.add(index)
    return rejected


@pytest.mark.parametrize("seed", range(20))
def test_the_adjusted_values_reject_what_the_sequential_procedure_rejects(seed):
    rng = np.random.default_rng(seed)
    m = int(rng.integers(1, 8))
    p = list(rng.uniform(0, 0.1, m) ** rng.uniform(0.5, 2))
    adjusted = holm_adjust(p)
    for alpha in (0.01, 0.05, 0.1):
        assert {i for i, a in enumerate(adjusted) if a <= alpha} == _sequential_rejections(p, alpha)
    assert all(pi <= a <= min(1.0, m * pi) for pi, a in zip(p, adjusted))  # between raw and Bonferroni


def test_p_values_outside_the_unit_interval_are_refused():
    with pytest.raises(ValueError):
        holm_adjust([0.2, 1.5])
    with pytest.raises(ValueError):
        holm_adjust([float("nan")])
