"""A bootstrap interval for FID: resample the generated features, keep the reference fixed.

FID_N of one set of N generated images is one draw of a noisy estimator. Resampling the N
generated feature vectors with replacement (``resamples`` times, seeded) and scoring each
resample against the same reference statistics gives the spread that comes from which N
images were drawn: a standard deviation and an interval. It does not include the spread
from training (another seed trains another model); a sweep's ``replicates`` measure that.

The interval is the resamples' percentile interval moved to sit around the point estimate
F: [F + q_lo - m, F + q_hi - m], with q the resamples' quantiles and m their mean. A resample
repeats images (about 63 % of them are distinct), so its covariance is estimated from fewer
points and its FID carries more of the estimator's upward 1/N bias: with N = 128 Inception
features every resample scores above F, and both the plain percentile interval and the
basic (reverse-percentile) one miss F altogether. The resamples' *spread* is what measures
how much FID_N moves with the draw of images; their *location* is the duplicates' artefact,
so it is taken out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dicesearch.errors import DataError
from dicesearch.metrics.frechet import GaussianStats, frechet_distance_to_samples

DEFAULT_RESAMPLES = 200
LARGE_N_RESAMPLES = 20  # N > D needs a D x D decomposition per resample: seconds each


@dataclass(frozen=True)
class BootstrapInterval:
    """The point estimate, its bootstrap interval and the resamples' standard deviation."""

    value: float
    lo: float
    hi: float
    std: float
    resamples: int
    level: float


def resample_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n) row indices drawn with replacement, from a generator seeded by ``seed``."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def bootstrap_fids(features: np.ndarray, reference: GaussianStats, indices: np.ndarray) -> np.ndarray:
    """FID of each resample ``features[indices[b]]`` against ``reference``: (resamples,)."""
    x = np.asarray(features, dtype=np.float64)  # (N, D)
    n, dim = x.shape
    if n - 1 >= dim:  # no small-matrix shortcut: score each resample directly
        return np.array([frechet_distance_to_samples(x[idx], reference) for idx in indices])
    ref_sigma = 0.5 * (reference.sigma + reference.sigma.T)  # (D, D)
    gram_ref = x @ ref_sigma @ x.T  # (N, N) G
    gram = x @ x.T  # (N, N) K
    ref_proj = x @ reference.mu  # (N,) X μ_r
    ref_terms = float(reference.mu @ reference.mu) + float(np.trace(ref_sigma))
    out = np.empty(len(indices))
    for b, idx in enumerate(indices):
        sub = np.ix_(idx, idx)
        gram_b = gram[sub]  # (N, N) K_II
        cov_trace = float(np.trace(_centred(gram_b))) / (n - 1)
        small = _centred(gram_ref[sub]) / (n - 1)  # (N, N), symmetric PSD
        eigvals = np.linalg.eigvalsh(0.5 * (small + small.T))
        floor = n * np.finfo(np.float64).eps * float(np.abs(eigvals).max(initial=0.0))
        root_trace = float(np.sqrt(np.where(eigvals > floor, eigvals, 0.0)).sum())
        mean_sq = float(gram_b.sum()) / n**2 - 2.0 * float(ref_proj[idx].mean())
        out[b] = max(mean_sq + cov_trace + ref_terms - 2.0 * root_trace, 0.0)
    return out


def _centred(m: np.ndarray) -> np.ndarray:
    """P M P for P = I - 11ᵀ/N, in O(N²): subtract row and column means, add back the mean."""
    return m - m.mean(axis=1, keepdims=True) - m.mean(axis=0, keepdims=True) + m.mean()


def fid_bootstrap(
    features: np.ndarray, reference: GaussianStats, *, resamples: int | None = None, level: float = 0.95, seed: int = 0
) -> BootstrapInterval:
    """FID of ``features`` (N, D) against ``reference``, with its bootstrap interval (module docstring)."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise DataError(f"a bootstrap of FID needs (N >= 2, D) features, got shape {x.shape}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    count = resamples or (DEFAULT_RESAMPLES if x.shape[0] <= x.shape[1] else LARGE_N_RESAMPLES)
    point = frechet_distance_to_samples(x, reference)
    fids = bootstrap_fids(x, reference, resample_indices(x.shape[0], count, seed))
    tail = (1.0 - level) / 2.0
    q_lo, q_hi = np.quantile(fids, [tail, 1.0 - tail])
    shift = point - float(fids.mean())
    lo, hi = max(0.0, float(q_lo) + shift), float(q_hi) + shift
    return BootstrapInterval(value=point, lo=lo, hi=hi, std=float(fids.std(ddof=1)), resamples=count, level=level)
