"""Turn pydantic validation errors into one line each: file, line, field path, fix."""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ValidationError

from dicesearch.errors import SpecError
from dicesearch.provenance import recorded_origin
from dicesearch.registry import closest, unknown_name_message
from dicesearch.spec.models import SpecFieldError

Path = tuple[typing.Union[str, int], ...]  # noqa: UP007


def format_path(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _union_members(annotation: Any) -> list[tuple[type[BaseModel], str | None]] | None:
    """Members of a (possibly Annotated) union of models, each with its tag if it has one."""
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType):
        return None
    members = []
    for arg in typing.get_args(annotation):
        tag = None
        if typing.get_origin(arg) is typing.Annotated:
            arg, *meta = typing.get_args(arg)
            tag = next((m.tag for m in meta if hasattr(m, "tag")), None)
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            members.append((arg, tag if tag is not None else _kind_of(arg)))
    return members


def _kind_of(model: type[BaseModel]) -> str | None:
    field = model.model_fields.get("kind")
    if field is None:
        return None
    args = typing.get_args(field.annotation)
    return args[0] if len(args) == 1 else None


def walk(root: type[BaseModel], loc: Path) -> tuple[Path, type[BaseModel] | None]:
    """Follow a pydantic error location through the spec's types.

    Returns the user-facing path (discriminator tags that pydantic inserts are dropped)
    and the model class the path ends in (None when it ends in a plain value).
    """
    path: list[str | int] = []
    current: Any = root
    parts = list(loc)
    while parts:
        part = parts.pop(0)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(part) if isinstance(part, str) else None
            path.append(part)
            current = field.annotation if field is not None else None
            continue
        members = _union_members(current)
        if members is not None:
            chosen = next((m for m, tag in members if tag == part), None)
            if chosen is not None:  # pydantic's tag entry: consume it, don't show it
                current = chosen
                continue
            current = None
            path.append(part)
            continue
        if typing.get_origin(current) is tuple and isinstance(part, int):
            current = typing.get_args(current)[0]
            path.append(part)
            continue
        if typing.get_origin(current) is dict:
            current = typing.get_args(current)[1]
            path.append(part)
            continue
        path.append(part)
        current = None
    if _union_members(current):
        current = None
    return tuple(path), current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _unknown(where: str, name: str, known: list[str], registry, recorded) -> str:
    """An unknown kind: the known ones, the closest, skipped plugins, the distribution it came from."""
    message = registry.unknown(where, name) if registry is not None else unknown_name_message(where, name, known)
    return message + recorded_origin(recorded, where, name)


def explain(error: dict, root: type[BaseModel], registry=None, recorded=None) -> tuple[Path, str]:
    """One pydantic error -> (path, message with the fix). ``registry`` adds the plugins
    that were skipped, ``recorded`` (a spec's provenance header) the distribution a kind
    came from, to an unknown kind's message."""
    kind = error["type"]
    ctx = error.get("ctx") or {}
    path, _ = walk(root, error["loc"])
    if kind == "value_error" and isinstance(ctx.get("error"), SpecFieldError):
        exc = ctx["error"]
        return path + tuple(exc.path), exc.message
    if kind == "extra_forbidden":
        parent_path, parent = walk(root, error["loc"][:-1])
        key = str(error["loc"][-1])
        allowed = sorted(parent.model_fields) if parent is not None else []
        hint = closest(key, allowed)
        msg = f"unknown key '{key}'"
        if allowed:
            msg += f"; allowed here: {', '.join(allowed)}"
        if hint:
            msg += f"; did you mean '{hint}'?"
        return path, msg
    if kind == "missing":
        return path, f"required field missing; add '{path[-1]}: <value>'" if path else "required field missing"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        where = "conditioning method" if "conditioning" in path else "block"
        known = [t.strip("'") for t in str(ctx.get("expected_tags", "")).split(", ") if t]
        if kind == "union_tag_not_found":
            return path + ("kind",), f"missing 'kind'; choose a {where}: {', '.join(known)}"
        return path + ("kind",), _unknown(where, str(ctx.get("tag")), known, registry, recorded)
    if kind == "literal_error" and path and path[-1] == "kind":
        where = "conditioning method" if "conditioning" in path else "block"
        known = [t.strip("'") for t in str(ctx.get("expected", "")).replace(" or ", ", ").split(", ") if t]
        return path, _unknown(where, str(error.get("input")), known, registry, recorded)
    if kind == "literal_error":
        return path, f"{_describe(error.get('input'))} is not allowed; choose one of {ctx.get('expected')}"
    if kind == "boolean_for_number":  # dicesearch.filemodel: the message says it all
        return path, error["msg"]
    if kind == "finite_number":
        return path, f"{_describe(error.get('input'))} is not a finite number; write a number (nan and inf are not allowed)"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return path, f"expected a mapping of keys to values, got {_describe(error.get('input'))}"
    msg = error["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if "input" in error and kind not in ("value_error",):
        msg += f" (got {_describe(error['input'])})"
    return path, msg


def format_errors(
    exc: ValidationError,
    root: type[BaseModel],
    source: str,
    locate: Callable[[Path], int | None] | None = None,
    registry=None,
    recorded=None,
    prefix: Path = (),
) -> list[str]:
    """Every problem as one line: ``source:line: path: message`` (``prefix`` + the path, for
    a model inside another file, e.g. a search space's inline ``base``)."""
    errors = exc.errors(include_url=False)
    # pydantic reports a too-short tuple after dropping its invalid items: noise next to the real error
    errors = [
        e for e in errors
        if not (e["type"] == "too_short" and any(o is not e and o["loc"][: len(e["loc"])] == e["loc"] for o in errors))
    ]
    lines = []
    for error in errors:
        path, message = explain(error, root, registry, recorded)
        path = (*prefix, *path)
        line = locate(path) if locate else None
        where = f"{source}:{line}" if line else source
        lines.append(f"{where}: {format_path(path)}: {message}")
    return lines


def validation_error(
    exc: ValidationError,
    root: type[BaseModel],
    source: str,
    locate: Callable[[Path], int | None] | None = None,
    list_hint: str = "",
    registry=None,
    recorded=None,
    prefix: Path = (),
) -> SpecError:
    """One ``SpecError`` for a failed validation: the first problem's line, a count of the
    rest (``list_hint`` says how to see them) and every line in ``.lines``."""
    lines = format_errors(exc, root, source, locate, registry, recorded, prefix)
    more = f" (and {len(lines) - 1} more{'; ' + list_hint if list_hint else ''})" if len(lines) > 1 else ""
    error = SpecError(lines[0] + more)
    error.lines = lines
    return error
