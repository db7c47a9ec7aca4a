import importlib
import tomllib
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torch
from venvs import FreshVenv, build_dicesearch_wheel

ROOT = Path(__file__).parents[1]


def _test_this_checkout() -> None:
    """Make the session test this checkout's plugins, whatever install the environment has.

    ``pip install -e .`` maps the ``dicesearch_plugins`` package to the plugins/ folder of
    the checkout it ran in and records pyproject.toml's entry points as they were then.
    Until it runs again here (or while the installed copy is another worktree), plugins
    added in this checkout are invisible to ``default_registry()`` and the presets that
    use them cannot load. So this checkout's plugins/ folder goes first on the package's
    path, and the entry points pyproject.toml declares but the installed metadata lacks
    are added, in-process and as the same distribution, to the default registry. With an
    up-to-date install of this checkout it changes nothing.
    """
    import dicesearch_plugins

    from dicesearch.hookspecs import ENTRY_POINT_GROUP
    from dicesearch.registry import default_registry

    plugins_dir = str(ROOT / "plugins")
    if plugins_dir not in list(dicesearch_plugins.__path__):
        dicesearch_plugins.__path__.insert(0, plugins_dir)
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = config["project"]["entry-points"][ENTRY_POINT_GROUP]
    installed = {entry.name for entry in entry_points(group=ENTRY_POINT_GROUP)}
    registry = default_registry()  # cached: every later call returns this object
    for name, module in sorted(declared.items()):
        if name not in installed:
            registry.add_plugin(importlib.import_module(module), name=name, distribution="dicesearch", source=module)


_test_this_checkout()


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
