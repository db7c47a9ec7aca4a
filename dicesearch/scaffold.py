"""``dicesearch new-plugin NAME``: a block-plugin package that installs and passes its tests as made.

The package is a third party's, not part of dicesearch: a ``pyproject.toml`` declaring the
entry point, the plugin module (parameters, block, hook) under ``src/`` and a test that
runs dicesearch's contract checks on the block. The files come from the templates in
``dicesearch/templates/plugin/`` (``string.Template``, ``${name}`` placeholders).
"""

from __future__ import annotations

import importlib.util
import keyword
import re
from dataclasses import dataclass
from importlib import resources
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from string import Template

from dicesearch.errors import DicesearchError

_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")

# template file -> path in the new package ({module} and {name} filled in)
FILES = {
    "pyproject.toml.tmpl": "pyproject.toml",
    "README.md.tmpl": "README.md",
    "block.py.tmpl": "src/{module}/__init__.py",
    "test_block.py.tmpl": "tests/test_{name}.py",
}


@dataclass(frozen=True)
class PluginNames:
    """Every name a plugin package derives from its block name."""

    name: str  # the block kind and the entry point's name: my_block
    module: str  # the import package: dicesearch_my_block
    distribution: str  # what pip installs: dicesearch-my-block
    class_prefix: str  # MyBlock (MyBlockParams, MyBlockBlock)

    @classmethod
    def of(cls, name: str) -> PluginNames:
        return cls(
            name=name,
            module=f"dicesearch_{name}",
            distribution=f"dicesearch-{name.replace('_', '-')}",
            class_prefix="".join(part.capitalize() for part in name.split("_")),
        )


def check_name(name: str, registry=None) -> PluginNames:
    """The names for block ``name``, or a DicesearchError saying why it cannot be used."""
    if not _NAME.match(name):
        raise DicesearchError(
            f"new-plugin: '{name}' is not a valid block name; use lowercase letters, digits and "
            "underscores, starting with a letter (e.g. my_block)"
        )
    if keyword.iskeyword(name):
        raise DicesearchError(f"new-plugin: '{name}' is a Python keyword; choose another block name")
    if registry is None:
        from dicesearch.registry import default_registry

        registry = default_registry()
    taken = registry.blocks.get(name)
    if taken is not None:
        raise DicesearchError(
            f"new-plugin: block '{name}' is already registered by plugin '{taken.plugin}' of distribution "
            f"'{taken.distribution}'; choose another name (`dicesearch plugins` lists the taken ones)"
        )
    plugins = {r.plugin: r.distribution for table in (registry.blocks, registry.conditionings) for r in table.values()}
    if name in plugins:  # the entry point's name would collide, even if the block's would not
        raise DicesearchError(
            f"new-plugin: '{name}' is already the name of a plugin of distribution '{plugins[name]}'; "
            "choose another name"
        )
    names = PluginNames.of(name)
    if importlib.util.find_spec(names.module) is not None:
        raise DicesearchError(
            f"new-plugin: a module named '{names.module}' is already importable; choose another block name"
        )
    return names


def render(names: PluginNames) -> dict[str, str]:
    """Relative path -> file text of the package for ``names``."""
    try:
        dicesearch_version = version("dicesearch")
    except PackageNotFoundError:  # running from a source tree that is not installed
        dicesearch_version = "0.1"
    values = {
        "name": names.name,
        "module": names.module,
        "distribution": names.distribution,
        "class_prefix": names.class_prefix,
        "dicesearch_version": dicesearch_version,
    }
    templates = resources.files("dicesearch.templates.plugin")
    return {
        target.format(name=names.name, module=names.module): Template((templates / source).read_text()).substitute(values)
        for source, target in FILES.items()
    }


def new_plugin(name: str, output: str | Path | None = None, registry=None) -> tuple[PluginNames, Path]:
    """Write the package for block ``name`` to ``output`` (default ``./dicesearch-NAME``).

    Refuses (DicesearchError) a name that is invalid or taken, and an ``output`` that exists.
    """
    names = check_name(name, registry)
    folder = Path(output) if output is not None else Path(names.distribution)
    if folder.exists():
        raise DicesearchError(
            f"new-plugin: {folder} already exists; remove it or pass another folder with --output"
        )
    files = render(names)
    for relative, text in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return names, folder
