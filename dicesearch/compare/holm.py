"""Holm's step-down correction: p-values adjusted so that the family-wise error rate is at most α.

Holm (1979), "A simple sequentially rejective multiple test procedure", Scand. J. Statist. 6.
Sort the m p-values p_(1) <= ... <= p_(m); the adjusted value of the i-th smallest is

    p~_(i) = min(1, max over j <= i of (m - j + 1) · p_(j)),

and rejecting every hypothesis whose adjusted p is below α rejects at least one true null
with probability at most α, whatever the dependence between the tests. It never rejects
less than Bonferroni (m · p) and needs no assumption beyond the valid single p-values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def holm_adjust(p_values: Sequence[float]) -> tuple[float, ...]:
    """Holm-adjusted p-values, in the order given. A comparison that could not be tested
    still belongs to the family: pass it as 1.0 (it is then never rejected, and it keeps m
    as large as the number of comparisons made, the conservative side)."""
    for p in p_values:
        if not (isinstance(p, (int, float)) and 0 <= p <= 1) or math.isnan(p):
            raise ValueError(f"p-values must lie in [0, 1], got {p}")
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, index in enumerate(order):  # rank j - 1 for the j-th smallest
        running = max(running, (m - rank) * p_values[index])
        adjusted[index] = min(1.0, running)
    return tuple(adjusted)
