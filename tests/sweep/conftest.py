import os

import pytest


@pytest.fixture(autouse=True)
def _shared_fid_cache(tmp_path_factory, monkeypatch):
    """Reference statistics are cached once for the whole session, not in ~/.cache."""
    cache = tmp_path_factory.getbasetemp() / "fid-cache"
    cache.mkdir(exist_ok=True)
    monkeypatch.setenv("DICESEARCH_CACHE_DIR", str(cache))
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))

