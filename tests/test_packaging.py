"""Every package in the source tree is listed for installation (setuptools won't find them)."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_every_python_package_is_installed():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    on_disk = {
        ".".join(path.parent.relative_to(ROOT).parts)
        for path in (ROOT / "dicesearch").rglob("__init__.py")
    }
    missing = on_disk - listed
    assert not missing, f"add these to [tool.setuptools] packages in pyproject.toml: {sorted(missing)}"
    assert config["package-dir"]["dicesearch_plugins"] == "plugins"


def test_every_plugin_module_is_registered_through_the_entry_point_group():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = set(config["project"]["entry-points"]["dicesearch.plugins"].values())
    modules = {f"dicesearch_plugins.{path.stem}" for path in (ROOT / "plugins").glob("*.py") if path.stem != "__init__"}
    assert modules == declared, f"declare in pyproject.toml: {sorted(modules - declared)}; stale: {sorted(declared - modules)}"
