"""Field paths into a model spec: ``stages[1].block.kind``, ``stages[*].depth``, ``conditioning.kind``.

A path is a dotted list of keys; ``[i]`` indexes a list (``.i`` works too) and ``[*]``
means every item (one sampled value applied to all stages).
"""

from __future__ import annotations

import copy
import re
from typing import Any, Union

Token = Union[str, int]  # noqa: UP007; "*" is the wildcard
_TOKEN = re.compile(r"([^.\[\]]+)|\[(\d+|\*)\]")


def parse_path(path: str) -> tuple[Token, ...]:
    """'stages[1].block.kind' -> ('stages', 1, 'block', 'kind')."""
    tokens: list[Token] = []
    pos = 0
    for match in _TOKEN.finditer(path):
        between = path[pos : match.start()]
        if between not in ("", "."):
            raise ValueError(f"cannot parse parameter path {path!r} near {between!r}")
        name, index = match.groups()
        if name is not None:
            tokens.append(int(name) if name.isdigit() else name)
        else:
            tokens.append("*" if index == "*" else int(index))
        pos = match.end()
    if not tokens or path[pos:] not in ("",):
        raise ValueError(f"cannot parse parameter path {path!r}; write it like stages[0].block.kind")
    return tuple(tokens)


def format_tokens(tokens: tuple[Token, ...]) -> str:
    out = ""
    for t in tokens:
        out += f"[{t}]" if isinstance(t, int) or t == "*" else (f".{t}" if out else t)
    return out


def expand(data: Any, tokens: tuple[Token, ...]) -> list[tuple[Token, ...]]:
    """Concrete paths a (possibly wildcard) path denotes in ``data``."""
    if not tokens:
        return [()]
    head, rest = tokens[0], tokens[1:]
    if head == "*":
        if not isinstance(data, list):
            raise KeyError(f"[*] needs a list, found {type(data).__name__}")
        return [(i, *tail) for i in range(len(data)) for tail in expand(data[i], rest)]
    if isinstance(head, int):
        if not isinstance(data, list) or head >= len(data):
            raise KeyError(f"index [{head}] is out of range")
        return [(head, *tail) for tail in expand(data[head], rest)]
    if isinstance(data, dict):
        return [(head, *tail) for tail in expand(data.get(head, {}), rest)] if rest else [(head,)]
    raise KeyError(f"'{head}' cannot be looked up in a {type(data).__name__}")


def get(data: Any, tokens: tuple[Token, ...], default: Any = None) -> Any:
    for t in tokens:
        try:
            data = data[t]
        except (KeyError, IndexError, TypeError):
            return default
    return data


def assign(data: dict, tokens: tuple[Token, ...], value: Any) -> dict:
    """A copy of ``data`` with every concrete path of ``tokens`` set to ``value``."""
    data = copy.deepcopy(data)
    for concrete in expand(data, tokens):
        target = data
        for t in concrete[:-1]:
            if isinstance(t, str) and t not in target:
                target[t] = {}
            target = target[t]
        target[concrete[-1]] = value
    return data
