"""Reading the YAML files users write (specs, search spaces, training and data settings).

Every problem is one line, ``file:line:column: what is wrong; how to fix it``, raised as
the caller's ``DicesearchError`` subclass; nothing here ever raises anything else:

* **Text.** A file is UTF-8 (a UTF-8 byte-order mark is dropped). UTF-16/32 text, NUL
  bytes and bytes that are not UTF-8 (Latin-1, binary files) are refused where they
  start. Files over ``MAX_BYTES`` are not specs.
* **Structure.** Nesting deeper than ``MAX_DEPTH`` (YAML's composer recurses, so
  ``[[[[...`` would end in a ``RecursionError``) and documents that expand, through
  anchors and aliases, to more than ``MAX_VALUES`` values (the "billion laughs") are
  refused before they are built.
* **Keys.** A key given twice in one mapping is an error (YAML loaders keep the last
  one silently); ``<<`` merges still override as YAML says.
* **Characters.** No string, key or value, may hold a control character (``\\e``,
  ``\\x1b``, ``\\u202e`` and the like, which YAML's escapes can produce), so text from a
  file reaches the terminal as text. Tabs and line breaks stay allowed.

Only ``yaml.SafeLoader`` is extended: nothing from a file is ever evaluated.
"""

from __future__ import annotations

import codecs
import os
import re
from pathlib import Path
from typing import Any

import yaml

from dicesearch.errors import DicesearchError, SpecError

MAX_BYTES = 16 * 2**20  # a spec is a few hundred bytes; a search space a few kilobytes
MAX_DEPTH = 64  # nesting levels (the deepest shipped file has 5)
MAX_VALUES = 200_000  # nodes after aliases are expanded

# C0 and C1 controls except tab and line feed, DEL, and the bidirectional overrides/isolates
CONTROL_CHARACTERS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")

_BOMS = (  # longest first: UTF-32-LE's mark begins with UTF-16-LE's
    (codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"),
)  # fmt: skip


class _Problem(yaml.MarkedYAMLError):
    """A problem this module finds, with its fix in the message (not 'malformed YAML')."""


def _where(source: str, line: int, column: int) -> str:
    return f"{source}:{line}:{column}"


def _byte_position(raw: bytes, offset: int) -> tuple[int, int]:
    line_start = raw.rfind(b"\n", 0, offset) + 1
    return raw.count(b"\n", 0, offset) + 1, offset - line_start + 1


def decode_text(raw: bytes, source: str, error: type[DicesearchError] = SpecError) -> str:
    """UTF-8 text of a file's bytes; anything else is one line naming where it goes wrong."""
    for bom, encoding in _BOMS:
        if raw.startswith(bom):
            raise error(f"{source}: the file is {encoding} text (it starts with a {encoding} byte-order mark); save it as UTF-8")
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8):]
    nul = raw.find(b"\x00")
    if nul >= 0:
        line, column = _byte_position(raw, nul)
        raise error(f"{_where(source, line, column)}: a NUL byte: this is a binary file or UTF-16/32 text, not a YAML text file; save it as UTF-8")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, column = _byte_position(raw, exc.start)
        raise error(
            f"{_where(source, line, column)}: byte 0x{raw[exc.start]:02x} is not UTF-8 (a Latin-1 or binary file?); "
            "save the file as UTF-8"
        ) from None


def read_text(path: str | os.PathLike, error: type[DicesearchError] = SpecError, what: str = "file") -> str:
    """The UTF-8 text of ``path`` (see :func:`decode_text`), or one line saying why not."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise error(f"{path}: {size / 2**20:,.0f} MiB is far too large for a {what}; give the YAML {what} itself")
        raw = path.read_bytes()
    except OSError as exc:
        raise error(f"{path}: cannot read the {what}: {exc.strerror or exc}") from None
    return decode_text(raw, str(path), error)


class Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with the limits above: depth, size, duplicate keys, control characters."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise _Problem(problem=f"nested more than {MAX_DEPTH} levels deep; a spec needs a handful", problem_mark=mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None:
            _check_size(node)
        return node

    def construct_scalar(self, node):
        value = super().construct_scalar(node)
        if isinstance(value, str):
            found = CONTROL_CHARACTERS.search(value)
            if found:
                raise _Problem(
                    problem=f"a string holds the control character U+{ord(found.group()):04X}; remove it "
                    "(text from a file must print as plain text)",
                    problem_mark=node.start_mark,
                )
        return value

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                    continue
                key = self.construct_object(key_node)
                if key in seen:
                    raise _Problem(
                        problem=f"the key '{key}' is given twice in one mapping (first on line {seen[key]}); keep one",
                        problem_mark=key_node.start_mark,
                    )
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def _check_size(root: yaml.Node) -> None:
    """Refuse a document that expands to more than MAX_VALUES nodes (aliases counted each time)."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node) -> int:  # depth <= MAX_DEPTH: recursion is safe
        known = sizes.get(id(node))
        if known is not None:
            return known
        sizes[id(node)] = 1  # a recursive alias counts once
        children = [] if isinstance(node, yaml.ScalarNode) else node.value
        total = 1
        for child in children:
            total += sum(size(part) for part in child) if isinstance(child, tuple) else size(child)
            if total > MAX_VALUES:
                break
        sizes[id(node)] = total
        return total

    if size(root) > MAX_VALUES:
        raise _Problem(
            problem=f"the document expands to more than {MAX_VALUES:,} values (anchors and aliases count each "
            "time they are used); write the values out",
            problem_mark=root.start_mark,
        )


def parse_yaml(text: str, source: str, error: type[DicesearchError] = SpecError) -> Any:
    """``yaml.safe_load`` with :class:`Loader`'s limits; every problem one ``error`` line."""
    loader = None
    try:
        loader = Loader(text)  # what yaml.safe_load does, with this module's SafeLoader
        return loader.get_single_data()
    except _Problem as exc:
        mark = exc.problem_mark
        raise error(f"{_where(source, mark.line + 1, mark.column + 1)}: {exc.problem}") from None
    except yaml.reader.ReaderError as exc:  # a raw control character
        before = text[: exc.position]
        line, column = before.count("\n") + 1, exc.position - (before.rfind("\n") + 1) + 1
        raise error(
            f"{_where(source, line, column)}: the control character U+{exc.character:04X} is not allowed in YAML; remove it"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = _where(source, mark.line + 1, mark.column + 1) if mark else source
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise error(f"{where}: malformed YAML: {problem} (check the indentation and the ':' after each key)") from None
    except RecursionError:  # not expected past MAX_DEPTH; never a traceback all the same
        raise error(f"{source}: nested too deeply to read; a spec needs a handful of levels") from None
    finally:
        if loader is not None:
            loader.dispose()


def compose(text: str) -> yaml.Node | None:
    """The node tree of ``text`` (for line numbers), or None if it does not parse."""
    try:
        return yaml.compose(text, Loader=Loader)
    except (yaml.YAMLError, RecursionError):
        return None


def load_yaml_file(path: str | os.PathLike, error: type[DicesearchError] = SpecError, what: str = "file") -> tuple[str, Any]:
    """(text, data) of a YAML file, every problem one ``error`` line naming the file and line."""
    text = read_text(path, error, what)
    return text, parse_yaml(text, str(path), error)


__all__ = ["CONTROL_CHARACTERS", "Loader", "MAX_BYTES", "MAX_DEPTH", "MAX_VALUES", "compose", "decode_text", "load_yaml_file", "parse_yaml", "read_text"]
