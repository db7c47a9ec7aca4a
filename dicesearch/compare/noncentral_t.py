"""The noncentral t distribution's CDF and survival function, robust where scipy's return NaN.

T' = (Z + λ) / √(V / ν) with Z standard normal and V ~ χ²_ν independent has

    P(T' <= x) = E_V[ Φ(x · √(V / ν) - λ) ]

(Johnson, Kotz & Balakrishnan, *Continuous Univariate Distributions* vol. 2, ch. 31), and
-T' is noncentral t with -λ, so P(T' > x) = P(T'_{ν, -λ} <= -x).

``scipy.special.nctdtr`` (Boost's algorithm, the one ``scipy.stats.nct`` uses too) is fast
but returns NaN in parts of the plane a power analysis visits: far tails at large λ (a CDF
below about 1e-6 once λ exceeds about 5, and the upper tail once λ exceeds about 37). There
the expectation above is integrated numerically over V instead, between its 1e-15 and
1 - 1e-15 quantiles.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import integrate, special

_TAIL = 1e-15  # the χ² mass left out of the numerical integral, each side


def noncentral_t_cdf(df, noncentrality, x) -> np.ndarray:
    """P(T'_{df, noncentrality} <= x), elementwise over the broadcast inputs."""
    df, noncentrality, x = np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in (df, noncentrality, x)))
    cdf = np.atleast_1d(np.array(special.nctdtr(df, noncentrality, x), dtype=float))
    missing = ~np.isfinite(cdf)
    if missing.any():
        flat = [np.atleast_1d(a).ravel() for a in (df, noncentrality, x)]
        cdf.ravel()[missing.ravel()] = [cdf_by_quadrature(*(float(a[i]) for a in flat)) for i in np.flatnonzero(missing)]
    return cdf.reshape(np.shape(df))


def noncentral_t_sf(df, noncentrality, x) -> np.ndarray:
    """P(T'_{df, noncentrality} > x), by reflection: P(T'_{df, -noncentrality} <= -x)."""
    return noncentral_t_cdf(df, -np.asarray(noncentrality, dtype=float), -np.asarray(x, dtype=float))


def cdf_by_quadrature(df: float, noncentrality: float, x: float) -> float:
    """P(T' <= x) as the integral of Φ(x · √(v / df) - λ) against the χ²_df density (module docstring)."""
    half = df / 2
    log_norm = half * math.log(2) + special.gammaln(half)

    def integrand(v: float) -> float:
        density = math.exp((half - 1) * math.log(v) - v / 2 - log_norm)  # χ²_df at v
        return special.ndtr(x * math.sqrt(v / df) - noncentrality) * density

    lo, hi = special.chdtri(df, 1 - _TAIL), special.chdtri(df, _TAIL)  # the χ² quantiles 1e-15, 1 - 1e-15
    value, _ = integrate.quad(integrand, lo, hi, limit=200, epsabs=1e-13)
    return float(min(1.0, max(0.0, value)))
