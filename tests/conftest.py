from pathlib import Path

import pytest
import torch
from venvs import FreshVenv, build_dicesearch_wheel


@pytest.fixture(autouse=True)
def _deterministic_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def registry():
    from dicesearch.registry import default_registry

    return default_registry()


# -- fresh virtual environments (tests/venvs.py) ----------------------------------------------


@pytest.fixture(scope="session")
def dicesearch_wheel(tmp_path_factory) -> Path:
    """A wheel of this checkout, built once per session."""
    return build_dicesearch_wheel(tmp_path_factory.mktemp("dicesearch-wheel"))


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory, dicesearch_wheel):
    """Make a FreshVenv with this checkout's dicesearch installed (one per call)."""

    def make(name: str = "venv") -> FreshVenv:
        scratch = tmp_path_factory.mktemp(name)
        env = FreshVenv(scratch / "venv", scratch)
        env.pip_install(str(dicesearch_wheel), cwd=scratch)
        return env

    return make
