from pathlib import Path

import pytest
import torch
from venvs import FreshVenv, build_dicesearch_wheel


@pytest.fixture(autouse=True)
def _deterministic_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session", autouse=True)
def _no_mlruns_in_the_checkout():
    """MLflow's default artifact root is the working directory's ``mlruns``: a test (or a
    benchmark it runs) that opens a tracking store from the checkout writes its artifacts
    there. A session that starts without that folder must end without it."""
    mlruns = Path(__file__).resolve().parents[1] / "mlruns"
    existed = mlruns.exists()
    yield
    if not existed and mlruns.exists():
        pytest.fail(f"a test wrote MLflow artifacts into {mlruns}: open its tracking store from a folder of its own (monkeypatch.chdir(tmp_path))")


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


@pytest.fixture
def thread_offers(monkeypatch) -> list:
    """What the trials of a sweep or comparison run in this process are offered at their
    reports (None: their own threads), recorded as the trial processes ask."""
    import dicesearch.sweep.lifecycle.trial as lifecycle_trial

    offered, run_trial = [], lifecycle_trial.run_trial

    def recording(request, on_report, threads=None, **kwargs):
        def asked():
            offered.append(threads() if threads is not None else None)
            return offered[-1]

        return run_trial(request, on_report, threads=asked, **kwargs)

    monkeypatch.setattr(lifecycle_trial, "run_trial", recording)
    return offered
