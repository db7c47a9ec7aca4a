"""Scores of k replicates of one configuration (k seeds of init, data order and noise) as one.

Each score s (fid_N, kid_N, precision_N, ...) becomes its mean over the replicates, with

* ``s_sd``: the sample standard deviation over replicates (ddof = 1): how much the score
  moves from one training seed to the next;
* ``s_lo`` .. ``s_hi``: the 95 % interval of the mean, mean ± t(0.975, k - 1) · sd / √k;
* ``s_r0``, ``s_r1``, ...: each replicate's own value.

The single-run uncertainties (the FID bootstrap, the KID subsets) are replaced: with k >= 2
the spread over seeds contains the spread over images. Timings (``*_seconds``) add up;
everything else (losses, rates, counts) is averaged.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from scipy import stats

_UNCERTAINTY_SUFFIXES = ("_sd", "_lo", "_hi")


def aggregate_replicates(runs: Sequence[dict[str, float]], scores: Iterable[str]) -> dict[str, float]:
    """One metrics dict for the replicates ``runs`` (each a dict of one run's metrics)."""
    if not runs:
        raise ValueError("no replicates to aggregate")
    if len(runs) == 1:
        return dict(runs[0])
    score_set = set(scores)
    k = len(runs)
    t = float(stats.t.ppf(0.975, k - 1))
    out: dict[str, float] = {}
    for key in runs[0]:
        values = [run.get(key) for run in runs]
        if any(v is None for v in values):
            continue
        if key in score_set:
            mean = math.fsum(values) / k
            sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (k - 1))
            out.update({key: mean, f"{key}_sd": sd, f"{key}_lo": mean - t * sd / math.sqrt(k), f"{key}_hi": mean + t * sd / math.sqrt(k)})
            out.update({f"{key}_r{r}": v for r, v in enumerate(values)})
        elif any(key == f"{s}{suffix}" for s in score_set for suffix in _UNCERTAINTY_SUFFIXES):
            continue  # one run's own uncertainty: replaced by the spread over replicates
        elif key.endswith("_seconds"):
            out[key] = math.fsum(values)
        else:
            out[key] = math.fsum(values) / k
    return out
