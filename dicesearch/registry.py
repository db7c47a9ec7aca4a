"""The plugin registry: discovers plugins through entry points and answers lookups.

Plugins (built-in and third-party alike) are modules listed in the ``dicesearch.plugins``
entry-point group. Each contributes block types and conditioning methods through the
hooks in :mod:`dicesearch.hookspecs`. A name claimed twice is an error naming both
distributions; a plugin that fails to import is reported and skipped, the others load.
"""

from __future__ import annotations

import difflib
import functools
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Generic, TypeVar

import pluggy

from dicesearch import hookspecs
from dicesearch.errors import PluginError, SpecError
from dicesearch.plugin_api import BlockParams, BlockType, ConditioningParams, ConditioningType

T = TypeVar("T", BlockType, ConditioningType)

_KIND_WORDS = {BlockType: "block", ConditioningType: "conditioning method"}


@dataclass(frozen=True)
class Registered(Generic[T]):
    """A registered type and where it came from."""

    type: T
    plugin: str  # the entry-point (or registration) name
    distribution: str  # the installed package that provides it
    source: str = ""  # the module (or object) the entry point names

    @property
    def name(self) -> str:
        return self.type.name


def closest(name: str, known: Iterable[str]) -> str | None:
    """The known name a typo most likely meant: a prefix match first, else difflib's best."""
    known = sorted(known)
    prefixed = [k for k in known if k.startswith(name) or name.startswith(k)]
    if prefixed:
        return min(prefixed, key=lambda k: abs(len(k) - len(name)))
    matches = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    return matches[0] if matches else None


def unknown_name_message(word: str, name: str, known: Iterable[str]) -> str:
    known = sorted(known)
    hint = closest(name, known)
    did_you_mean = f"; did you mean '{hint}'?" if hint else ""
    return f"unknown {word} '{name}'; known: {', '.join(known) or '(none installed)'}{did_you_mean}"


class Registry:
    """Block types and conditioning methods contributed by plugins."""

    def __init__(self) -> None:
        self._pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self._pm.add_hookspecs(hookspecs)
        self.blocks: dict[str, Registered[BlockType]] = {}
        self.conditionings: dict[str, Registered[ConditioningType]] = {}
        self.load_errors: list[str] = []
        self._distributions: dict[str, str] = {}  # plugin name -> distribution

    # -- loading -------------------------------------------------------------------------

    @classmethod
    def from_entry_points(cls, group: str = hookspecs.ENTRY_POINT_GROUP) -> Registry:
        """Load every plugin installed under the entry-point ``group``."""
        registry = cls()
        for ep in sorted(entry_points(group=group), key=lambda e: e.name):
            distribution = ep.dist.name if ep.dist is not None else "(unknown distribution)"
            try:
                plugin = ep.load()
            except Exception as exc:  # a broken third-party plugin must not take the rest down
                registry._report(
                    f"plugin '{ep.name}' from distribution '{distribution}' failed to import "
                    f"({ep.value}): {type(exc).__name__}: {exc}"
                )
                continue
            registry.add_plugin(plugin, name=ep.name, distribution=distribution, source=ep.value)
        return registry

    @classmethod
    def from_plugins(cls, *plugins: object, distribution: str = "(in-process)") -> Registry:
        """A registry of explicitly given plugin modules/objects (tests, notebooks)."""
        registry = cls()
        for plugin in plugins:
            name = getattr(plugin, "__name__", None) or type(plugin).__name__
            registry.add_plugin(plugin, name=name, distribution=distribution)
        return registry

    def _report(self, message: str) -> None:
        self.load_errors.append(message)
        warnings.warn(message, stacklevel=3)

    def add_plugin(self, plugin: object, name: str, distribution: str, source: str = "") -> None:
        """Register one plugin and collect the types it contributes."""
        if isinstance(plugin, type):
            raise PluginError(
                f"plugin '{name}' from distribution '{distribution}' is a class; point the entry "
                "point at a module or an instance (pluggy would call its hooks without self)"
            )
        try:
            self._pm.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:  # e.g. a hook that takes arguments its spec lacks
            detail = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
            if "can not be found in the hookspec" in detail:
                detail += " (dicesearch's hooks take no arguments; see dicesearch.hookspecs)"
            self._report(f"plugin '{name}' from distribution '{distribution}' was skipped: {detail}")
            return
        except ValueError:  # the same name or object registered twice
            raise PluginError(self._duplicate_message(plugin, name, distribution)) from None
        self._distributions[name] = distribution
        problem = self._hook_problem(plugin)
        if problem:
            self._pm.unregister(plugin)
            self._report(f"plugin '{name}' from distribution '{distribution}' was skipped: {problem}")
            return
        for hook, table, expected in (
            (self._pm.hook.dicesearch_block_types, self.blocks, BlockType),
            (self._pm.hook.dicesearch_conditioning_types, self.conditionings, ConditioningType),
        ):
            for impl in hook.get_hookimpls():
                if impl.plugin is not plugin:
                    continue
                try:
                    contributed = list(impl.function() or [])
                except Exception as exc:
                    self._report(
                        f"plugin '{name}' from distribution '{distribution}': {hook.name}() raised "
                        f"{type(exc).__name__}: {exc}"
                    )
                    continue
                for item in contributed:
                    self._add(table, item, expected, name, distribution, source or name)
        self.__dict__.pop("spec_types", None)  # the spec union depends on what is registered

    def _duplicate_message(self, plugin: object, name: str, distribution: str) -> str:
        other = self._pm.get_name(plugin)
        if other is not None and other != name:
            return (
                f"plugin '{name}' from distribution '{distribution}' is the module already registered as plugin "
                f"'{other}' from distribution '{self._distributions.get(other, '?')}'; list each module once "
                "in the dicesearch.plugins entry-point group"
            )
        return (
            f"plugin name '{name}' is registered twice: by distribution '{self._distributions.get(name, '?')}' "
            f"and by distribution '{distribution}'; rename one entry point in the dicesearch.plugins group, "
            "or uninstall one of them"
        )

    def _hook_problem(self, plugin: object) -> str | None:
        """Why a just-registered plugin's hooks cannot be used, or None."""
        try:
            self._pm.check_pending()  # hook implementations that match no hookspec
        except pluggy.PluginValidationError as exc:
            return f"{exc}; known hooks: dicesearch_block_types, dicesearch_conditioning_types"
        hooked = {caller.name for caller in self._pm.get_hookcallers(plugin) or []}
        undecorated = [attr for attr in dir(plugin)
                       if attr.startswith("dicesearch_") and callable(getattr(plugin, attr))
                       and attr not in hooked]
        if undecorated:
            return (f"{', '.join(undecorated)} lacks the @hookimpl decorator "
                    "(from dicesearch.plugin_api import hookimpl)")
        return None

    def _add(self, table: dict, item: object, expected: type, plugin: str, distribution: str, source: str) -> None:
        word = _KIND_WORDS[expected]
        if not isinstance(item, expected):
            raise PluginError(
                f"plugin '{plugin}' from distribution '{distribution}' returned {item!r} "
                f"where a {expected.__name__} was expected"
            )
        base = BlockParams if expected is BlockType else ConditioningParams
        if not item.name.isidentifier():
            raise PluginError(
                f"plugin '{plugin}' from distribution '{distribution}': {word} name "
                f"'{item.name}' must be a Python identifier (letters, digits, underscores)"
            )
        if not (isinstance(item.params, type) and issubclass(item.params, base)):
            raise PluginError(
                f"plugin '{plugin}' from distribution '{distribution}': the params of {word} "
                f"'{item.name}' must subclass dicesearch.plugin_api.{base.__name__}"
            )
        if "kind" in item.params.model_fields:
            raise PluginError(
                f"plugin '{plugin}' from distribution '{distribution}': the params of {word} "
                f"'{item.name}' must not declare 'kind' (the registry adds it)"
            )
        if item.name in table:
            other = table[item.name]
            raise PluginError(
                f"{word} '{item.name}' is registered twice: by plugin '{other.plugin}' of "
                f"distribution '{other.distribution}' and by plugin '{plugin}' of distribution "
                f"'{distribution}'; uninstall one of them"
            )
        table[item.name] = Registered(item, plugin, distribution, source)

    # -- lookups -------------------------------------------------------------------------

    def block(self, name: str) -> BlockType:
        try:
            return self.blocks[name].type
        except KeyError:
            raise SpecError(unknown_name_message("block", name, self.blocks)) from None

    def conditioning(self, name: str) -> ConditioningType:
        try:
            return self.conditionings[name].type
        except KeyError:
            raise SpecError(unknown_name_message("conditioning method", name, self.conditionings)) from None

    @functools.cached_property
    def spec_types(self):
        """The spec models whose block and conditioning unions hold this registry's plugins."""
        from dicesearch.spec.models import build_spec_types

        return build_spec_types(self)


@functools.lru_cache(maxsize=1)
def default_registry() -> Registry:
    """The registry of every installed plugin (loaded once per process)."""
    registry = Registry.from_entry_points()
    if not registry.blocks:
        raise PluginError(
            "no block plugins are installed; reinstall dicesearch (`pip install -e .`) so its "
            "entry points are registered"
        )
    return registry
