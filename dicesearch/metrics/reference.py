"""Reference statistics of the real images, computed once and cached on disk.

A reference holds what every later evaluation against the same real data needs:
Gaussian statistics (mu, sigma) of the pool features (FID) and of the spatial features
(sFID), and the pool features themselves (precision/recall needs the real points, not
only their moments). They are cached as one ``.npz`` per key: dataset identity, number of
images N, subsample seed, network fingerprint and preprocessing version; change any of
them and another file is used.

Cache folder: ``$DICESEARCH_CACHE_DIR/fid`` if that variable is set, else
``~/.cache/dicesearch/fid``; or pass ``cache_dir``. Files are written to a temporary
name in the same folder and renamed into place (atomic on POSIX and Windows), so an
interrupted run never leaves a half-written cache file. A file that fails to load or
validate (bad zip/CRC, missing array, wrong shape, non-finite values, key mismatch) is
reported and recomputed.

One process at a time computes a missing file: the others wait on a lock file beside it
(``.<file>.lock``) and then load what it wrote. A sweep's first trials all miss the cache at
once on a new machine; without the lock each of them ran the Inception over the same N real
images (about 11 s at one thread for the default sweep's 128, in both of its first two trials).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from dicesearch.errors import DataError
from dicesearch.files import CACHE_ENV_VAR, cache_dir, give_ordinary_mode
from dicesearch.metrics.features import PREPROCESSING, InceptionFeatures
from dicesearch.metrics.frechet import GaussianStats, gaussian_stats

CACHE_SUBDIR = "fid"
FORMAT_VERSION = 1


def default_cache_dir() -> Path:
    """``$DICESEARCH_CACHE_DIR/fid``, or ``~/.cache/dicesearch/fid``."""
    return cache_dir(CACHE_SUBDIR)


@dataclass(frozen=True)
class ReferenceKey:
    """Everything that changes the reference statistics."""

    dataset_id: str  # caller's name for the real data, e.g. "imagenet256-train"
    n: int  # images used
    network: str  # InceptionNetwork.fingerprint
    seed: int = 0  # seed of the subsample of n images
    source_size: int | None = None  # images in the source, when known
    preprocessing: str = PREPROCESSING

    def __post_init__(self) -> None:
        if not self.dataset_id.strip():
            raise DataError("the reference dataset id must not be empty")
        if self.n < 2:
            raise DataError(f"reference statistics need at least 2 images, got n={self.n}")

    def as_json(self) -> str:
        return json.dumps({"format": FORMAT_VERSION, **asdict(self)}, sort_keys=True)

    def filename(self) -> str:
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", self.dataset_id).strip("-.")[:60] or "data"
        digest = hashlib.sha1(self.as_json().encode()).hexdigest()[:12]
        return f"{slug}-n{self.n}-seed{self.seed}-{digest}.npz"


@dataclass(frozen=True, eq=False)
class ReferenceStats:
    """Statistics of N real images under one network."""

    key: ReferenceKey
    pool: GaussianStats  # mu (2048,), sigma (2048, 2048)
    spatial: GaussianStats | None  # mu (2023,), sigma (2023, 2023); None without sFID
    pool_features: np.ndarray  # (N, 2048) float32, the network's output precision

    @property
    def n(self) -> int:
        return self.key.n

    @classmethod
    def from_features(cls, key: ReferenceKey, features: InceptionFeatures) -> ReferenceStats:
        if len(features) != key.n:
            raise DataError(f"reference key says n={key.n} but {len(features)} images were used")
        return cls(
            key=key,
            pool=gaussian_stats(features.pool),
            spatial=gaussian_stats(features.spatial) if features.spatial is not None else None,
            pool_features=np.asarray(features.pool, dtype=np.float32),
        )


class _CorruptCache(Exception):
    """A cache file that cannot be trusted; the caller recomputes it."""


def save_reference_stats(stats: ReferenceStats, path: str | Path) -> None:
    """Write ``stats`` to ``path`` (.npz) atomically: temporary file, fsync, rename."""
    arrays = {
        "meta": np.array(stats.key.as_json()),
        "pool_mu": stats.pool.mu,
        "pool_sigma": stats.pool.sigma,
        "pool_features": stats.pool_features,
    }
    if stats.spatial is not None:
        arrays["spatial_mu"] = stats.spatial.mu
        arrays["spatial_sigma"] = stats.spatial.sigma
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        give_ordinary_mode(tmp_name)  # not mkstemp's 0600
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise


def _finite(name: str, array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if array.shape != shape:
        raise _CorruptCache(f"{name} has shape {array.shape}, expected {shape}")
    if not np.isfinite(array).all():
        raise _CorruptCache(f"{name} holds NaN or inf")
    return array


def _load_validated(path: Path, key: ReferenceKey) -> ReferenceStats:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}  # reads and CRC-checks all
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise _CorruptCache(f"unreadable ({exc})") from exc
    for name in ("meta", "pool_mu", "pool_sigma", "pool_features"):
        if name not in arrays:
            raise _CorruptCache(f"missing array {name!r}")
    if str(arrays["meta"]) != key.as_json():
        raise _CorruptCache("its key does not match the requested one")
    dim = arrays["pool_mu"].shape[0] if arrays["pool_mu"].ndim == 1 else -1
    pool = GaussianStats(
        mu=_finite("pool_mu", arrays["pool_mu"], (dim,)),
        sigma=_finite("pool_sigma", arrays["pool_sigma"], (dim, dim)),
        n=key.n,
    )
    features = _finite("pool_features", arrays["pool_features"], (key.n, dim))
    spatial = None
    if ("spatial_mu" in arrays) != ("spatial_sigma" in arrays):
        raise _CorruptCache("only half of the spatial statistics are present")
    if "spatial_mu" in arrays:
        s_dim = arrays["spatial_mu"].shape[0] if arrays["spatial_mu"].ndim == 1 else -1
        spatial = GaussianStats(
            mu=_finite("spatial_mu", arrays["spatial_mu"], (s_dim,)),
            sigma=_finite("spatial_sigma", arrays["spatial_sigma"], (s_dim, s_dim)),
            n=key.n,
        )
    return ReferenceStats(key=key, pool=pool, spatial=spatial, pool_features=features)


def load_reference_stats(path: str | Path, key: ReferenceKey) -> ReferenceStats | None:
    """The cached stats at ``path`` if present and valid for ``key``; None otherwise
    (a warning says why an existing file was rejected)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return _load_validated(path, key)
    except _CorruptCache as exc:
        warnings.warn(f"ignoring FID reference cache {path}: {exc}; recomputing", stacklevel=2)
        return None


def cached_reference_stats(
    key: ReferenceKey,
    compute: Callable[[], InceptionFeatures],
    cache_dir: str | Path | None = None,
) -> ReferenceStats:
    """Reference stats for ``key``: from the cache, or ``compute()``-d and cached.

    ``compute`` returns the features of exactly ``key.n`` real images; it is called only
    on a cache miss (or when the cached file is corrupt).
    """
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    path = folder / key.filename()
    cached = load_reference_stats(path, key)
    if cached is not None:
        return cached
    with _computing(path):  # another process may be computing it: wait, then read what it wrote
        cached = load_reference_stats(path, key)
        if cached is not None:
            return cached
        stats = ReferenceStats.from_features(key, compute())
        try:
            save_reference_stats(stats, path)
        except OSError as exc:
            warnings.warn(
                f"could not write FID reference cache {path} ({exc}); set {CACHE_ENV_VAR} to a "
                "writable folder to avoid recomputing it",
                stacklevel=2,
            )
    return stats


@contextlib.contextmanager
def _computing(path: Path, timeout_s: float = 3600.0):
    """Hold ``.<file>.lock`` beside ``path`` while this process computes it. Where the folder
    cannot hold a lock file (read-only), compute without one: the cache cannot be written
    there either."""
    from filelock import FileLock, Timeout

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path.with_name(f".{path.name}.lock")), timeout=timeout_s)
        lock.acquire()
    except (OSError, Timeout):
        yield
        return
    try:
        yield
    finally:
        lock.release()
