"""Helpers for one-line error messages."""

from __future__ import annotations


def one_line(exc: BaseException, limit: int = 200) -> str:
    """An exception's message squeezed onto one line (for wrapping in a ``DataError``)."""
    text = " ".join(str(exc).split())
    return text[:limit] or type(exc).__name__
