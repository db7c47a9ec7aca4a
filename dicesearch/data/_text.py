"""Helpers that keep user-facing errors on one line."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TypeVar

from dicesearch.errors import DataError

T = TypeVar("T")


def unwrap_worker_errors(batches: Iterator[T]) -> Iterator[T]:
    """Pass ``batches`` through; a ``DataError`` raised in a DataLoader worker, which torch
    re-raises with the worker's traceback in its message, is re-raised as its own one line."""
    try:
        yield from batches
    except DataError as exc:
        lines = str(exc).strip().splitlines()
        if len(lines) > 1:
            raise type(exc)(lines[-1].partition("Error: ")[2] or lines[-1]) from None
        raise
