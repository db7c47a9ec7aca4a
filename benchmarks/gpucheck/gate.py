"""The batch the memory gate allows: the largest one the estimator fits in 24 GiB.

Candidates are 1-7 and then multiples of 8 up to 1024 (more than any flagship preset
fits), searched by bisection (the peak grows with the batch): at most eight estimates.
"""

from __future__ import annotations

from collections.abc import Callable

BUDGET_BYTES = 24 * 2**30  # a "24 GB" card, as the sweep's gate counts it (GiB)
CANDIDATES = (*range(1, 8), *range(8, 1025, 8))


def largest_fitting(fits: Callable[[int], bool], candidates: tuple[int, ...] = CANDIDATES) -> int:
    """The largest candidate for which ``fits`` holds, given it is monotone (0 if none does)."""
    lo, hi = -1, len(candidates)  # fits(candidates[lo]) holds, fits(candidates[hi]) does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(candidates[mid]):
            lo = mid
        else:
            hi = mid
    return candidates[lo] if lo >= 0 else 0


def gate_batch(spec_yaml: str, precision: str = "fp16", candidates: tuple[int, ...] = CANDIDATES, budget_bytes: int = BUDGET_BYTES) -> int:
    """The largest candidate batch whose estimated training step (EMA, no checkpointing) fits.

    ``spec_yaml``: the spec as ``dump_spec`` writes it (so this can run in a worker process).
    """
    import yaml

    from dicesearch.analysis.memory import estimate_training_memory
    from dicesearch.spec import parse_spec

    spec = parse_spec(yaml.safe_load(spec_yaml), source="gpu_check")
    return largest_fitting(lambda b: estimate_training_memory(spec, b, precision).fits(budget_bytes), candidates)
