"""Reference statistics: computed once per key, atomic writes, corrupt files recomputed."""

from __future__ import annotations

import multiprocessing
import os
import time
import warnings

import numpy as np
import pytest

from dicesearch.metrics.features import InceptionFeatures
from dicesearch.metrics.frechet import gaussian_stats
from dicesearch.metrics.reference import (
    ReferenceKey,
    cached_reference_stats,
    default_cache_dir,
)


class CountingCompute:
    """Stands in for feature extraction: returns seeded random features, counts calls."""

    def __init__(self, n: int, spatial: bool = True) -> None:
        self.n, self.spatial, self.calls = n, spatial, 0

    def __call__(self) -> InceptionFeatures:
        self.calls += 1
        rng = np.random.default_rng(self.n)
        pool = rng.random((self.n, 16)).astype(np.float32).astype(np.float64)
        spatial = rng.random((self.n, 12)) if self.spatial else None
        return InceptionFeatures(pool=pool, spatial=spatial)


def _key(n: int = 10, **kw) -> ReferenceKey:
    return ReferenceKey(dataset_id="toy/set v1", n=n, network="sha1-test", **kw)


def test_second_call_hits_the_cache(tmp_path):
    compute = CountingCompute(10)
    first = cached_reference_stats(_key(), compute, tmp_path)
    (path,) = tmp_path.glob("*.npz")
    mtime = path.stat().st_mtime_ns
    second = cached_reference_stats(_key(), compute, tmp_path)
    assert compute.calls == 1
    assert path.stat().st_mtime_ns == mtime
    expected = gaussian_stats(CountingCompute(10)().pool)
    for stats in (first, second):
        np.testing.assert_array_equal(stats.pool.mu, expected.mu)
        np.testing.assert_array_equal(stats.pool.sigma, expected.sigma)
    np.testing.assert_array_equal(second.pool_features, first.pool_features)
    np.testing.assert_array_equal(second.spatial.sigma, first.spatial.sigma)
    assert not list(tmp_path.glob("*.tmp"))  # no temporary left behind


def test_different_key_fields_give_different_files(tmp_path):
    small, large = CountingCompute(10), CountingCompute(12)
    cached_reference_stats(_key(10), small, tmp_path)
    cached_reference_stats(_key(12), large, tmp_path)
    cached_reference_stats(_key(10, seed=1), small, tmp_path)
    names = sorted(p.name for p in tmp_path.glob("*.npz"))
    assert len(names) == 3 and small.calls == 2 and large.calls == 1
    assert any("-n12-" in name for name in names)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "flip_byte", "empty"])
def test_corrupt_file_is_detected_and_recomputed(tmp_path, damage):
    compute = CountingCompute(10)
    cached_reference_stats(_key(), compute, tmp_path)
    (path,) = tmp_path.glob("*.npz")
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x93NUMPY garbage" * 10)
    elif damage == "flip_byte":  # one bit of payload, values stay finite: the zip CRC
        payload = CountingCompute(10)().pool.astype(np.float32).tobytes()  # pool_features
        pos = data.find(payload) + len(payload) // 2
        assert pos > len(payload) // 2
        path.write_bytes(data[:pos] + bytes([data[pos] ^ 0xFF]) + data[pos + 1 :])
    else:
        path.write_bytes(b"")
    with pytest.warns(UserWarning, match="ignoring FID reference cache"):
        stats = cached_reference_stats(_key(), compute, tmp_path)
    assert compute.calls == 2
    np.testing.assert_array_equal(stats.pool.mu, gaussian_stats(CountingCompute(10)().pool).mu)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rewritten file loads cleanly, from the cache
        cached_reference_stats(_key(), compute, tmp_path)
    assert compute.calls == 2


def test_file_of_another_key_is_not_trusted(tmp_path):
    compute = CountingCompute(10)
    cached_reference_stats(_key(), compute, tmp_path)
    (path,) = tmp_path.glob("*.npz")
    other = _key(seed=5)
    os.replace(path, tmp_path / other.filename())  # right name, wrong content
    with pytest.warns(UserWarning, match="key does not match"):
        cached_reference_stats(other, compute, tmp_path)
    assert compute.calls == 2


def test_interrupted_write_leaves_no_cache_file(tmp_path, monkeypatch):
    def crash(*args, **kwargs):
        args[0].write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        cached_reference_stats(_key(), CountingCompute(10), tmp_path)
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []  # the empty lock file stays


def test_reference_without_spatial_round_trips(tmp_path):
    compute = CountingCompute(10, spatial=False)
    cached_reference_stats(_key(), compute, tmp_path)
    again = cached_reference_stats(_key(), compute, tmp_path)
    assert again.spatial is None and compute.calls == 1


def test_cache_dir_follows_env_var(tmp_path, monkeypatch):
    monkeypatch.setenv("DICESEARCH_CACHE_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path / "fid"
    monkeypatch.delenv("DICESEARCH_CACHE_DIR")
    assert default_cache_dir().parts[-3:] == (".cache", "dicesearch", "fid")
    compute = CountingCompute(10)
    monkeypatch.setenv("DICESEARCH_CACHE_DIR", str(tmp_path))
    cached_reference_stats(_key(), compute, None)
    assert len(list((tmp_path / "fid").glob("*.npz"))) == 1


class _SlowCompute(CountingCompute):
    """Computes slowly and leaves one file in ``marks`` per call, visible across processes."""

    def __init__(self, n: int, marks) -> None:
        super().__init__(n)
        self.marks = marks

    def __call__(self) -> InceptionFeatures:
        (self.marks / f"computed-by-{os.getpid()}").touch()
        time.sleep(0.5)  # long enough that every process misses the cache before the first writes it
        return super().__call__()


def _load_or_compute(cache, marks, out) -> None:
    stats = cached_reference_stats(_key(), _SlowCompute(10, marks), cache)
    np.save(out, stats.pool.sigma)


def test_processes_that_miss_at_once_compute_it_once(tmp_path):
    """A sweep's first trials all find the cache empty: one computes, the others wait for its file."""
    cache, marks = tmp_path / "cache", tmp_path / "marks"
    marks.mkdir()
    context = multiprocessing.get_context("spawn")
    outs = [tmp_path / f"sigma-{i}.npy" for i in range(3)]
    processes = [context.Process(target=_load_or_compute, args=(cache, marks, out)) for out in outs]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
        assert process.exitcode == 0
    assert len(list(marks.iterdir())) == 1  # computed by one process only
    expected = gaussian_stats(CountingCompute(10)().pool).sigma
    for out in outs:
        np.testing.assert_array_equal(np.load(out), expected)
    assert len(list(cache.glob("*.npz"))) == 1


def test_a_folder_that_cannot_hold_the_lock_still_computes(tmp_path, monkeypatch):
    """Where no lock file can be made, the statistics are computed without one (and the cache,
    which cannot be written there either, warns as before)."""
    from filelock import FileLock

    def refuse(self, *args, **kwargs):
        raise PermissionError("read-only folder")

    monkeypatch.setattr(FileLock, "acquire", refuse)
    compute = CountingCompute(10)
    stats = cached_reference_stats(_key(), compute, tmp_path)
    assert compute.calls == 1
    np.testing.assert_array_equal(stats.pool.mu, gaussian_stats(CountingCompute(10)().pool).mu)
