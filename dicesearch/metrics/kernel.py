"""Kernel inception distance (KID): an unbiased MMD² between generated and real features.

Source: Bińkowski et al. 2018, "Demystifying MMD GANs", Sec. 4. With the cubic polynomial
kernel k(x, y) = (x·y / d + 1)³ on d-dimensional Inception pool features, X the m
generated and Y the n real feature vectors, the unbiased estimator is

    MMD²_u = 1/(m(m-1)) Σ_{i≠j} k(x_i, x_j) + 1/(n(n-1)) Σ_{i≠j} k(y_i, y_j) - 2/(mn) Σ_{i,j} k(x_i, y_j).

Unlike FID it has no bias in the number of samples, so small-N scores compare with large-N
ones in expectation; only its variance grows as N shrinks. As in the paper (and
torch-fidelity / clean-fid), KID is reported as the mean over ``subsets`` random subsets of
``subset_size`` vectors from each side, with the standard deviation over those subsets.
Computed in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dicesearch.errors import DataError

DEFAULT_SUBSETS = 100
MAX_SUBSET_SIZE = 1000  # the paper's and torch-fidelity's subset size


@dataclass(frozen=True)
class KernelDistance:
    """KID: the mean of the subset estimates and their standard deviation."""

    value: float
    std: float
    subsets: int
    subset_size: int


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """k(x_i, y_j) = (x_i·y_j / d + 1)³ for x (m, d), y (n, d) -> (m, n), float64."""
    d = x.shape[1]
    return (np.asarray(x, np.float64) @ np.asarray(y, np.float64).T / d + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """The unbiased MMD² of the module docstring, x (m, d) against y (n, d); m, n >= 2."""
    return _mmd2_from_kernels(polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y))


def default_subset_size(n: int) -> int:
    """Half the samples, at most 1000: subsets of all N vectors would all be the same set."""
    return max(2, min(MAX_SUBSET_SIZE, n // 2))


def kernel_inception_distance(
    generated: np.ndarray,
    reference: np.ndarray,
    *,
    subsets: int = DEFAULT_SUBSETS,
    subset_size: int | None = None,
    seed: int = 0,
) -> KernelDistance:
    """KID of ``generated`` (m, d) against ``reference`` (n, d) pool features (module docstring).

    Each subset draws ``subset_size`` rows from each side without replacement, from a
    generator seeded by ``seed``: the same features always give the same value.
    """
    x, y = np.asarray(generated, np.float64), np.asarray(reference, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise DataError(f"KID needs two (N, D) feature sets of one D, got {x.shape} and {y.shape}")
    size = subset_size or default_subset_size(min(len(x), len(y)))
    if not 2 <= size <= min(len(x), len(y)):
        raise DataError(f"a KID subset of {size} needs 2 to {min(len(x), len(y))} samples per side")
    rng = np.random.default_rng(seed)
    # every kernel value once (N² d), then each subset is an O(s²) lookup
    k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    estimates = np.empty(subsets)
    for s in range(subsets):
        i = rng.choice(len(x), size, replace=False)
        j = rng.choice(len(y), size, replace=False)
        estimates[s] = _mmd2_from_kernels(k_xx[np.ix_(i, i)], k_yy[np.ix_(j, j)], k_xy[np.ix_(i, j)])
    std = float(estimates.std(ddof=1)) if subsets > 1 else 0.0
    return KernelDistance(value=float(estimates.mean()), std=std, subsets=subsets, subset_size=size)


def _mmd2_from_kernels(k_xx: np.ndarray, k_yy: np.ndarray, k_xy: np.ndarray) -> float:
    m, n = k_xx.shape[0], k_yy.shape[0]
    within_x = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    within_y = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(within_x + within_y - 2.0 * k_xy.mean())
