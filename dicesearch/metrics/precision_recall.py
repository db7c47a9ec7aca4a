"""Improved precision and recall of a generative model.

Source: Kynkäänniemi et al. 2019, "Improved Precision and Recall Metric for Assessing
Generative Models". Each set of feature vectors approximates its manifold by the union of
balls centred on its points, the radius of each ball being the distance to that point's
k-th nearest neighbour in the same set (k = 3; the point itself is not its own neighbour).

- precision: fraction of generated points inside the real manifold (realism);
- recall: fraction of real points inside the generated manifold (coverage).

A point on a ball's boundary counts as inside (distance <= radius).

Memory. All pairwise distances of 50k x 50k points would take 20 GB in float64, so the
distance matrix is built in row blocks whose size fits ``max_block_bytes``; each block is
reduced (k-th smallest / any-inside) before the next one is built. Distances are squared
Euclidean in float64 (||a||^2 + ||b||^2 - 2 a.b, clipped at 0), compared squared to squared
radii, so no square root is taken.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from dicesearch.errors import DataError

DEFAULT_K = 3
DEFAULT_MAX_BLOCK_BYTES = 128 * 2**20  # one (rows x columns) float64 distance block


def _as_features(x: np.ndarray, name: str) -> np.ndarray:
    feats = np.asarray(x, dtype=np.float64)  # (N, D)
    if feats.ndim != 2:
        raise DataError(f"{name} must be a 2-D array (N, D), got shape {feats.shape}")
    if not np.isfinite(feats).all():
        raise DataError(f"{name} contain NaN or inf")
    return feats


def _row_blocks(n_rows: int, n_cols: int, max_block_bytes: int) -> Iterator[slice]:
    rows = max(1, int(max_block_bytes) // (8 * max(1, n_cols)))
    for start in range(0, n_rows, rows):
        yield slice(start, min(start + rows, n_rows))


def _sq_distances(a: np.ndarray, b: np.ndarray, b_sq_norms: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances (A, B) between rows of a (A, D) and b (B, D)."""
    a_sq = np.einsum("ij,ij->i", a, a)  # (A,)
    d2 = a_sq[:, None] + b_sq_norms[None, :] - 2.0 * (a @ b.T)  # (A, B)
    return np.maximum(d2, 0.0, out=d2)


def knn_sq_radii(
    features: np.ndarray, k: int = DEFAULT_K, *, max_block_bytes: int = DEFAULT_MAX_BLOCK_BYTES
) -> np.ndarray:
    """Squared distance (N,) from each row of ``features`` (N, D) to its k-th nearest
    neighbour among the other rows."""
    feats = _as_features(features, "features")
    n = feats.shape[0]
    if k < 1:
        raise DataError(f"k must be >= 1, got {k}")
    if n <= k:
        raise DataError(f"k-NN radii with k={k} need at least {k + 1} samples, got {n}")
    sq_norms = np.einsum("ij,ij->i", feats, feats)  # (N,)
    radii = np.empty(n, dtype=np.float64)  # (N,)
    for rows in _row_blocks(n, n, max_block_bytes):
        d2 = _sq_distances(feats[rows], feats, sq_norms)  # (R, N)
        local = np.arange(rows.stop - rows.start)
        d2[local, local + rows.start] = np.inf  # a point is not its own neighbour
        radii[rows] = np.partition(d2, k - 1, axis=1)[:, k - 1]  # (R,)
    return radii


def fraction_inside(
    queries: np.ndarray,
    support: np.ndarray,
    support_sq_radii: np.ndarray,
    *,
    max_block_bytes: int = DEFAULT_MAX_BLOCK_BYTES,
) -> float:
    """Fraction of ``queries`` (Q, D) inside at least one ball (centre ``support`` (S, D),
    squared radius ``support_sq_radii`` (S,))."""
    q = _as_features(queries, "query features")
    s = _as_features(support, "support features")
    if q.shape[1] != s.shape[1]:
        raise DataError(f"feature sizes differ: {q.shape[1]} vs {s.shape[1]}")
    sq_radii = np.asarray(support_sq_radii, dtype=np.float64)  # (S,)
    if sq_radii.shape != (s.shape[0],):
        raise DataError(f"need one radius per support point, got {sq_radii.shape} for {s.shape[0]}")
    if q.shape[0] == 0:
        raise DataError("no query features to evaluate")
    s_sq_norms = np.einsum("ij,ij->i", s, s)  # (S,)
    inside = 0
    for rows in _row_blocks(q.shape[0], s.shape[0], max_block_bytes):
        d2 = _sq_distances(q[rows], s, s_sq_norms)  # (R, S)
        inside += int(np.count_nonzero((d2 <= sq_radii[None, :]).any(axis=1)))
    return inside / q.shape[0]


def precision_recall(
    real: np.ndarray,
    generated: np.ndarray,
    k: int = DEFAULT_K,
    *,
    max_block_bytes: int = DEFAULT_MAX_BLOCK_BYTES,
) -> tuple[float, float]:
    """Improved (precision, recall) of ``generated`` (M, D) against ``real`` (N, D)."""
    real_f = _as_features(real, "real features")
    gen_f = _as_features(generated, "generated features")
    real_r = knn_sq_radii(real_f, k, max_block_bytes=max_block_bytes)  # (N,)
    gen_r = knn_sq_radii(gen_f, k, max_block_bytes=max_block_bytes)  # (M,)
    precision = fraction_inside(gen_f, real_f, real_r, max_block_bytes=max_block_bytes)
    recall = fraction_inside(real_f, gen_f, gen_r, max_block_bytes=max_block_bytes)
    return precision, recall
