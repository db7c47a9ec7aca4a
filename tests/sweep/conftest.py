import os

import pytest


@pytest.fixture(autouse=True)
def _shared_fid_cache(tmp_path_factory, monkeypatch):
    """Reference statistics are cached once for the whole session, not in ~/.cache."""
    cache = tmp_path_factory.getbasetemp() / "fid-cache"
    cache.mkdir(exist_ok=True)
    monkeypatch.setenv("DICESEARCH_CACHE_DIR", str(cache))
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))



@pytest.fixture
def sweep_kit(request, tmp_path, monkeypatch):
    """A :class:`sweep_kit.SweepKit` in a fresh working directory, for the backend the test module
    names in ``SWEEP_BACKEND`` (default: optuna)."""
    from sweep_kit import SweepKit

    monkeypatch.chdir(tmp_path)
    return SweepKit(tmp_path, getattr(request.module, "SWEEP_BACKEND", "optuna"))
