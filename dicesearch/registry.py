"""The plugin registry: discovers plugins through entry points and answers lookups.

Plugins (built-in and third-party alike) are modules listed in the ``dicesearch.plugins``
entry-point group. Each contributes block types and conditioning methods through the
hooks in :mod:`dicesearch.hookspecs`. A name claimed twice is an error naming both
distributions. Anything else wrong with one plugin (it fails to import, misspells a hook,
returns something that is not a type, a parameter model that declares ``kind`` or whose
defaults are not valid values) skips that plugin or type: it is reported once, as a
``PluginLoadWarning`` naming the plugin and its distribution, and the others load.
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
from pydantic import ValidationError

from dicesearch import hookspecs
from dicesearch.errors import PluginError, PluginLoadWarning, SpecError, one_line
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
    version: str = ""  # the distribution's version ("" when registered in-process)

    @property
    def name(self) -> str:
        return self.type.name


@dataclass(frozen=True)
class Skipped:
    """A plugin (or one type of it) that was not registered, and why."""

    plugin: str
    distribution: str
    reason: str
    name: str = ""  # the block/conditioning name when one type was skipped, "" for the whole plugin


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
        self.skipped: list[Skipped] = []
        self._distributions: dict[str, str] = {}  # plugin name -> distribution

    # -- loading -------------------------------------------------------------------------

    @classmethod
    def from_entry_points(cls, group: str = hookspecs.ENTRY_POINT_GROUP) -> Registry:
        """Load every plugin installed under the entry-point ``group``."""
        registry = cls()
        for ep in sorted(entry_points(group=group), key=lambda e: e.name):
            distribution = ep.dist.name if ep.dist is not None else "(unknown distribution)"
            version = (ep.dist.version or "") if ep.dist is not None else ""
            try:
                plugin = ep.load()
            except Exception as exc:  # a broken third-party plugin must not take the rest down
                registry._skip(
                    ep.name, distribution,
                    f"plugin '{ep.name}' from distribution '{distribution}' failed to import "
                    f"({ep.value}): {type(exc).__name__}: {one_line(exc, 300)}",
                )  # fmt: skip
                continue
            registry.add_plugin(plugin, name=ep.name, distribution=distribution, source=ep.value, version=version)
        return registry

    @classmethod
    def from_plugins(cls, *plugins: object, distribution: str = "(in-process)") -> Registry:
        """A registry of explicitly given plugin modules/objects (tests, notebooks)."""
        registry = cls()
        for plugin in plugins:
            name = getattr(plugin, "__name__", None) or type(plugin).__name__
            registry.add_plugin(plugin, name=name, distribution=distribution)
        return registry

    def _skip(self, plugin: str, distribution: str, message: str, name: str = "") -> None:
        """Record and report (once, as a PluginLoadWarning) a plugin or type that was not registered."""
        self.skipped.append(Skipped(plugin, distribution, message, name))
        self.load_errors.append(message)
        warnings.warn(message, PluginLoadWarning, stacklevel=3)

    def add_plugin(self, plugin: object, name: str, distribution: str, source: str = "", version: str = "") -> None:
        """Register one plugin and collect the types it contributes."""
        if isinstance(plugin, type):
            self._skip(
                name, distribution,
                f"plugin '{name}' from distribution '{distribution}' was skipped: it is a class; point the entry "
                "point at a module or an instance (pluggy would call its hooks without self)",
            )  # fmt: skip
            return
        try:
            self._pm.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:  # e.g. a hook that takes arguments its spec lacks
            detail = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
            if "can not be found in the hookspec" in detail:
                detail += " (dicesearch's hooks take no arguments; see dicesearch.hookspecs)"
            self._skip(name, distribution, f"plugin '{name}' from distribution '{distribution}' was skipped: {detail}")
            return
        except ValueError:  # the same name or object registered twice
            raise PluginError(self._duplicate_message(plugin, name, distribution)) from None
        self._distributions[name] = distribution
        problem = self._hook_problem(plugin)
        if problem:
            self._pm.unregister(plugin)
            self._skip(name, distribution, f"plugin '{name}' from distribution '{distribution}' was skipped: {problem}")
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
                    self._skip(
                        name, distribution,
                        f"plugin '{name}' from distribution '{distribution}' was skipped: {hook.name}() raised "
                        f"{type(exc).__name__}: {one_line(exc, 300)}",
                    )  # fmt: skip
                    continue
                for item in contributed:
                    self._add(table, item, expected, name, distribution, source or name, version)
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

    def _add(self, table: dict, item: object, expected: type, plugin: str, distribution: str, source: str, version: str) -> None:
        word = _KIND_WORDS[expected]
        problem = _type_problem(item, expected, word)
        if problem is not None:
            named = getattr(item, "name", "")
            what = f"{word} '{named}'" if isinstance(named, str) and named else f"an item of {expected.__name__}s"
            self._skip(
                plugin, distribution, f"plugin '{plugin}' from distribution '{distribution}': {what} was skipped: {problem}",
                named if isinstance(named, str) else "",
            )  # fmt: skip
            return
        if item.name in table:
            other = table[item.name]
            raise PluginError(
                f"{word} '{item.name}' is registered twice: by plugin '{other.plugin}' of "
                f"distribution '{other.distribution}' and by plugin '{plugin}' of distribution "
                f"'{distribution}'; uninstall one of them"
            )
        table[item.name] = Registered(item, plugin, distribution, source, version)

    def skipped_note(self, name: str) -> str:
        """Why ``name`` may be unknown: the plugins that were skipped (empty if none)."""
        if not self.skipped:
            return ""
        matching = [s for s in self.skipped if name in (s.name, s.plugin)] or self.skipped
        listed = ", ".join(sorted({f"'{s.name or s.plugin}' from distribution '{s.distribution}'" for s in matching}))
        return f"; installed but skipped as broken (see the warning): {listed}"

    # -- lookups -------------------------------------------------------------------------

    def unknown(self, word: str, name: str) -> str:
        """The message for an unknown block / conditioning method: the known ones, the closest,
        and the plugins that were skipped."""
        table = self.blocks if word == "block" else self.conditionings
        return unknown_name_message(word, name, table) + self.skipped_note(name)

    def block(self, name: str) -> BlockType:
        try:
            return self.blocks[name].type
        except KeyError:
            raise SpecError(self.unknown("block", name)) from None

    def conditioning(self, name: str) -> ConditioningType:
        try:
            return self.conditionings[name].type
        except KeyError:
            raise SpecError(self.unknown("conditioning method", name)) from None

    @functools.cached_property
    def spec_types(self):
        """The spec models whose block and conditioning unions hold this registry's plugins."""
        from dicesearch.spec.models import build_spec_types

        return build_spec_types(self)


def _type_problem(item: object, expected: type, word: str) -> str | None:
    """Why a contributed type cannot be registered, or None."""
    if not isinstance(item, expected):
        return f"{item!r:.80} is not a {expected.__name__}"
    base = BlockParams if expected is BlockType else ConditioningParams
    if not isinstance(item.name, str) or not item.name.isidentifier():
        return f"the name {item.name!r} must be a Python identifier (letters, digits, underscores)"
    if not (isinstance(item.params, type) and issubclass(item.params, base)):
        return f"its params must subclass dicesearch.plugin_api.{base.__name__}"
    if "kind" in item.params.model_fields:
        return "its params declare 'kind', which the registry adds; remove that field"
    if not callable(item.build):
        return "its build is not callable; give build(params, ctx) -> module"
    from dicesearch.spec.models import tagged_params_model

    try:  # the model a spec validates against: the params plus the ``kind`` tag
        tagged = tagged_params_model(item.params, item.name, "Block" if word == "block" else "Conditioning", item.description)
    except Exception as exc:
        return f"its params model cannot be used in a spec: {type(exc).__name__}: {one_line(exc, 200)}"
    return _defaults_problem(tagged, item.name)


def _defaults_problem(params: type, kind: str) -> str | None:
    """A default that is not a valid value of its own field (``order: PositiveInt = "two"``)."""
    defaults = {"kind": kind}
    for field_name, field in params.model_fields.items():
        if field_name != "kind" and not field.is_required():
            try:
                defaults[field_name] = field.get_default(call_default_factory=True)
            except Exception as exc:
                return f"the default factory of '{field_name}' raised {type(exc).__name__}: {one_line(exc, 200)}"
    try:
        params.model_validate(defaults)
    except ValidationError as exc:
        bad = [e for e in exc.errors(include_url=False) if e["type"] != "missing"]
        if bad:
            field_name = ".".join(str(part) for part in bad[0]["loc"]) or "(the model)"
            shown = repr(defaults.get(bad[0]["loc"][0], "")) if bad[0]["loc"] else ""
            return (
                f"the default of '{field_name}' ({shown:.40}) is not a valid value: {one_line(Exception(bad[0]['msg']), 160)}; "
                "fix the default in its params model"
            )
    except Exception as exc:  # a validator of the plugin's own that raises something else
        return f"validating its defaults raised {type(exc).__name__}: {one_line(exc, 200)}"
    return None


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
