"""Fréchet distance between two Gaussians fitted to feature sets.

Source: Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule Converge to a
Local Nash Equilibrium" (FID). For N(mu1, S1) and N(mu2, S2):

    d^2 = ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))

The same distance on a different feature space gives sFID (Nash et al. 2021).

Numerics. ``S1 S2`` is not symmetric, and with fewer samples than dimensions (500 images,
2048 features) both covariances are singular, which is where a general matrix square
root (``scipy.linalg.sqrtm``) is slow and returns spurious imaginary parts. We use that
AB and BA share their eigenvalues: with R = S1^(1/2) (a symmetric PSD root from ``eigh``),
S1 S2 = R (R S2) has the eigenvalues of R S2 R, which is symmetric PSD. So

    tr((S1 S2)^(1/2)) = sum_i sqrt(lambda_i(R S2 R)),

computed in float64 with two symmetric eigendecompositions. Every quantity stays real,
and eigenvalues below ``eigh``'s rounding floor (D * eps * max eigenvalue), including the
slightly negative ones rounding produces, are treated as exact zeros.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dicesearch.errors import DataError


@dataclass(frozen=True, eq=False)
class GaussianStats:
    """Mean and unbiased covariance of a feature set (float64)."""

    mu: np.ndarray  # (D,)
    sigma: np.ndarray  # (D, D), symmetric PSD
    n: int  # number of feature vectors they were estimated from

    @property
    def dim(self) -> int:
        return int(self.mu.shape[0])


def gaussian_stats(features: np.ndarray) -> GaussianStats:
    """Fit a Gaussian to ``features`` (N, D): mean (D,) and unbiased covariance (D, D)."""
    feats = np.asarray(features, dtype=np.float64)  # (N, D)
    if feats.ndim != 2:
        raise DataError(f"features must be a 2-D array (N, D), got shape {feats.shape}")
    if feats.shape[0] < 2:
        raise DataError(f"a covariance needs at least 2 feature vectors, got {feats.shape[0]}")
    if not np.isfinite(feats).all():
        raise DataError("features contain NaN or inf; check the images fed to the network")
    mu = feats.mean(axis=0)  # (D,)
    sigma = np.cov(feats, rowvar=False, ddof=1)  # (D, D)
    return GaussianStats(mu=mu, sigma=np.atleast_2d(sigma), n=int(feats.shape[0]))


def _denoised(eigvals: np.ndarray) -> np.ndarray:
    """Eigenvalues (D,) of a symmetric PSD matrix with the rounding floor set to zero.

    ``eigh`` is accurate to about D * eps * max|lambda| in absolute terms, so smaller
    eigenvalues (the null space of a covariance estimated from fewer samples than
    dimensions) are noise; taking their square root would turn 1e-13 into 3e-7 per
    eigenvalue and bias the trace by thousands of them.
    """
    floor = eigvals.shape[0] * np.finfo(np.float64).eps * float(np.abs(eigvals).max(initial=0.0))
    return np.where(eigvals > floor, eigvals, 0.0)


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    """Symmetric square root (D, D) of a symmetric PSD matrix (D, D)."""
    eigvals, eigvecs = np.linalg.eigh(sigma)  # (D,), (D, D)
    _check_psd(eigvals, "covariance")
    return (eigvecs * np.sqrt(_denoised(eigvals))) @ eigvecs.T  # (D, D)


def _check_psd(eigvals: np.ndarray, what: str) -> None:
    scale = max(1.0, float(np.abs(eigvals).max(initial=0.0)))
    if eigvals.size and eigvals.min() < -1e-6 * scale:
        raise ValueError(
            f"{what} is not positive semi-definite (eigenvalue {eigvals.min():.3g}); "
            "pass a covariance matrix"
        )


def _symmetrize(m: np.ndarray) -> np.ndarray:
    return 0.5 * (m + m.T)


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr((sigma1 @ sigma2)^(1/2)) for symmetric PSD (D, D) matrices, in float64."""
    s1 = _symmetrize(np.asarray(sigma1, dtype=np.float64))  # (D, D)
    s2 = _symmetrize(np.asarray(sigma2, dtype=np.float64))  # (D, D)
    root1 = _psd_sqrt(s1)  # (D, D)
    inner = _symmetrize(root1 @ s2 @ root1)  # (D, D), similar to s1 @ s2
    eigvals = np.linalg.eigvalsh(inner)  # (D,)
    _check_psd(eigvals, "the covariance product")
    return float(np.sqrt(_denoised(eigvals)).sum())


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """Squared Fréchet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2).

    mu: (D,), sigma: (D, D). Returns a float >= 0 (FID when the inputs are Inception
    pool features, Heusel et al. 2017).
    """
    m1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))  # (D,)
    m2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))  # (D,)
    s1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))  # (D, D)
    s2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))  # (D, D)
    dim = m1.shape[0]
    if m2.shape != (dim,) or s1.shape != (dim, dim) or s2.shape != (dim, dim):
        raise ValueError(
            "Fréchet distance needs matching shapes, got "
            f"mu {m1.shape} / {m2.shape}, sigma {s1.shape} / {s2.shape}"
        )
    diff = m1 - m2  # (D,)
    value = float(diff @ diff) + float(np.trace(s1) + np.trace(s2))
    value -= 2.0 * trace_sqrt_product(s1, s2)
    # Exact arithmetic gives value >= 0; clip rounding residue (~1e-12 * trace) only.
    return max(value, 0.0)


def frechet_distance_between(a: GaussianStats, b: GaussianStats) -> float:
    """``frechet_distance`` for two fitted ``GaussianStats``."""
    return frechet_distance(a.mu, a.sigma, b.mu, b.sigma)


def frechet_distance_to_samples(features: np.ndarray, reference: GaussianStats) -> float:
    """Fréchet distance between the Gaussian fitted to ``features`` (N, D) and ``reference``.

    Same value as ``frechet_distance_between(gaussian_stats(features), reference)``. With
    fewer samples than dimensions (500 generated images, 2048 features) the fitted
    covariance is S = A^T A with A the centred samples over sqrt(N - 1), (N, D), and the
    nonzero eigenvalues of S R equal those of the small symmetric PSD matrix A R A^T
    (N, N): one N x N eigendecomposition instead of two D x D ones, and no null space
    whose rounding noise could leak into the square roots.
    """
    stats = gaussian_stats(features)  # validates; mu (D,), sigma (D, D)
    feats = np.asarray(features, dtype=np.float64)  # (N, D)
    n, dim = feats.shape
    if dim != reference.dim:
        raise ValueError(f"features have {dim} dimensions, the reference {reference.dim}")
    if n - 1 >= dim:
        return frechet_distance_between(stats, reference)
    a = (feats - stats.mu) / np.sqrt(n - 1)  # (N, D)
    ref_sigma = _symmetrize(np.asarray(reference.sigma, dtype=np.float64))  # (D, D)
    small = _symmetrize(a @ ref_sigma @ a.T)  # (N, N)
    eigvals = np.linalg.eigvalsh(small)  # (N,)
    _check_psd(eigvals, "the covariance product")
    diff = stats.mu - reference.mu  # (D,)
    value = float(diff @ diff) + float(np.sum(a * a)) + float(np.trace(ref_sigma))
    value -= 2.0 * float(np.sqrt(_denoised(eigvals)).sum())
    return max(value, 0.0)
