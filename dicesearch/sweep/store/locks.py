"""A lock around creating a store that lives in one sqlite file.

Two sweep processes opening a fresh sqlite store at the same moment both create its tables
(and MLflow also migrates them), which fails or leaves the file half-made. Holding a lock
file beside it lets one process at a time do that; other URLs (journal files, servers)
handle concurrent creation themselves and get no lock.
"""

from __future__ import annotations

import contextlib

SQLITE_PREFIX = "sqlite:///"


def sqlite_creation_lock(url: str, timeout_s: float = 300):
    """A ``<file>.lock`` FileLock for a ``sqlite:///<file>`` URL, else a no-op context."""
    if not url.startswith(SQLITE_PREFIX):
        return contextlib.nullcontext()
    from filelock import FileLock

    return FileLock(url[len(SQLITE_PREFIX):] + ".lock", timeout=timeout_s)
