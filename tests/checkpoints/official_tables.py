"""The official models' state-dict layouts recorded in tests/checkpoints/official/*.txt (data, not code).

Each file was written from the official model's ``state_dict()`` (its header names the
repository, the constructor and the total count); ``{a..b}`` in a key stands for every
index from a to b. ``synthetic_state`` makes random tensors of those shapes.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch

HERE = Path(__file__).parent / "official"
_RANGE = re.compile(r"\{(\d+)\.\.(\d+)\}")


def read_table(name: str) -> dict[str, tuple[int, ...]]:
    """Official key -> shape, in the official state dict's order."""
    table: dict[str, tuple[int, ...]] = {}
    for line in (HERE / name).read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, shape_text = line.split()
        shape = tuple(int(n) for n in shape_text.split(","))
        found = _RANGE.search(key)
        indices = range(int(found.group(1)), int(found.group(2)) + 1) if found else [None]
        for i in indices:
            table[key if i is None else key[: found.start()] + str(i) + key[found.end() :]] = shape
    return table


def recorded_count(name: str) -> tuple[int, int]:
    """(tensors, values) from the file's header line."""
    header = next(line for line in (HERE / name).read_text().splitlines() if "tensors," in line)
    found = re.search(r"(\d+) tensors, ([\d,]+) values", header)
    return int(found.group(1)), int(found.group(2).replace(",", ""))


def values(table: dict[str, tuple[int, ...]]) -> int:
    return sum(math.prod(shape) for shape in table.values())


def synthetic_state(table: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random N(0, 0.02^2) tensors of the table's shapes (every one non-zero, adaLN included)."""
    g = torch.Generator().manual_seed(seed)
    return {key: torch.randn(shape, generator=g) * 0.02 for key, shape in table.items()}
