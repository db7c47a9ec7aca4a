"""What a spec was made with: the dicesearch version and, for every block and conditioning
method it uses, the plugin distribution and version that provided it.

Recorded where a spec leaves dicesearch to be used again: a comment header on exported
specs (``dicesearch export``) and run folders' ``spec.yaml``, and each sweep trial's record
(and so its MLflow tags). When such a spec is loaded, a kind that is no longer installed is
named with the distribution that provided it; ``export`` and ``train`` warn, in one line,
when an installed plugin is missing or has another version. The header is made of YAML
comments, so the spec itself (and every tool that reads it) is unchanged::

    # made with dicesearch 0.1.0
    # uses block 'gmlp' from dicesearch-gmlp 0.1.0
    # uses conditioning method 'adaln_zero' from dicesearch 0.1.0
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

WORDS = ("block", "conditioning method")
_USES = re.compile(r"^# uses (block|conditioning method) '(\w+)' from (\S+) (\S+)$")
_MADE = re.compile(r"^# made with dicesearch (\S+)$")


def dicesearch_version() -> str:
    try:
        return version("dicesearch")
    except PackageNotFoundError:
        from dicesearch import __version__

        return __version__


@dataclass(frozen=True)
class PluginUse:
    """One kind a spec uses and where it came from."""

    word: str  # "block" or "conditioning method"
    kind: str
    distribution: str
    version: str

    def text(self) -> str:
        return f"{self.word} '{self.kind}' from {self.distribution} {self.version or '?'}"


@dataclass(frozen=True)
class Provenance:
    dicesearch: str
    uses: tuple[PluginUse, ...]

    def get(self, word: str, kind: str) -> PluginUse | None:
        return next((u for u in self.uses if u.word == word and u.kind == kind), None)

    # -- as a comment header ------------------------------------------------------------------

    def header(self) -> str:
        lines = [f"# made with dicesearch {self.dicesearch}"] + [f"# uses {u.text()}" for u in self.uses]
        return "\n".join(lines) + "\n"

    @classmethod
    def from_header(cls, text: str) -> Provenance | None:
        """The provenance in the leading comment lines of ``text``, or None if it has none."""
        made, uses = None, []
        for line in text.splitlines():
            if not line.startswith("#"):
                if line.strip():
                    break
                continue
            if match := _MADE.match(line.rstrip()):
                made = match.group(1)
            elif match := _USES.match(line.rstrip()):
                uses.append(PluginUse(*match.groups()))
        return cls(made, tuple(uses)) if made is not None or uses else None

    # -- as plain data (a trial's user attribute) and as MLflow tags ---------------------------

    def as_data(self) -> dict[str, Any]:
        return {"dicesearch": self.dicesearch, "uses": [[u.word, u.kind, u.distribution, u.version] for u in self.uses]}

    @classmethod
    def from_data(cls, data: Any) -> Provenance | None:
        if not isinstance(data, dict):
            return None
        uses = tuple(PluginUse(*map(str, item)) for item in data.get("uses", []) if isinstance(item, list) and len(item) == 4)
        return cls(str(data.get("dicesearch", "")), uses)

    def mlflow_tags(self) -> dict[str, str]:
        """``dicesearch.version`` and ``dicesearch.block.<kind>`` / ``dicesearch.conditioning.<kind>``."""
        tags = {"dicesearch.version": self.dicesearch}
        for use in self.uses:
            tags[f"dicesearch.{use.word.split()[0]}.{use.kind}"] = f"{use.distribution} {use.version}".strip()
        return tags


def spec_provenance(spec, registry) -> Provenance:
    """What ``spec`` uses, as installed in ``registry`` now."""
    wanted = [("conditioning method", spec.conditioning.kind)] + [("block", s.block.kind) for s in spec.stages]
    uses, seen = [], set()
    for word, kind in wanted:
        if (word, kind) in seen:
            continue
        seen.add((word, kind))
        table = registry.blocks if word == "block" else registry.conditionings
        registered = table.get(kind)
        if registered is not None:
            uses.append(PluginUse(word, kind, registered.distribution, registered.version))
    return Provenance(dicesearch_version(), tuple(uses))



def file_mismatch(path, registry=None) -> str | None:
    """:func:`mismatch_warning` for a spec file's header (None: no file, no header, no difference)."""
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None  # reading it for real says why
    if registry is None:
        from dicesearch.registry import default_registry

        registry = default_registry()
    return mismatch_warning(Provenance.from_header(text), registry, str(path))


def differences(recorded: Provenance, registry) -> list[str]:
    """How the installed plugins differ from those ``recorded`` (one phrase each)."""
    out = []
    for use in recorded.uses:
        table = registry.blocks if use.word == "block" else registry.conditionings
        now = table.get(use.kind)
        if now is None:
            out.append(f"{use.text()} is not installed (pip install '{use.distribution}=={use.version}')")
        elif now.distribution != use.distribution:
            out.append(f"{use.text()} now comes from {now.distribution} {now.version}")
        elif use.version and now.version and now.version != use.version:
            out.append(f"{use.text()} is {now.version} here")
    return out


def mismatch_warning(recorded: Provenance | None, registry, what: str) -> str | None:
    """One line for ``export``/``train`` when installed plugins differ from ``recorded``, else None."""
    if recorded is None:
        return None
    found = differences(recorded, registry)
    if not found:
        return None
    return f"{what} was made with other plugins than are installed: {'; '.join(found)}; results may differ"


def recorded_origin(recorded: Provenance | None, word: str, kind: str) -> str:
    """'; this spec was made with block 'gmlp' from dicesearch-gmlp 0.1.0 (pip install ...)' or ''."""
    use = recorded.get(word, kind) if recorded is not None else None
    if use is None:
        return ""
    return f"; this spec was made with {use.text()}, not installed here (pip install '{use.distribution}=={use.version}')"


__all__ = [
    "PluginUse",
    "Provenance",
    "differences",
    "dicesearch_version",
    "file_mismatch",
    "mismatch_warning",
    "recorded_origin",
    "spec_provenance",
]
