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
