"""Files and folders dicesearch writes: ordinary permissions, and names that stay where they belong.

* Files written through a temporary file (``tempfile.mkstemp`` makes it 0600) get the
  mode an ordinary ``open()`` would give them, 0666 less the umask, before they are
  renamed into place: a sample grid in a shared results folder is readable by the
  colleagues the umask lets read it.
* A name taken from a file (a study, a spec, a run) becomes at most one path component
  (:func:`safe_component`), so it never places anything outside the folder the user chose.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

_UMASK_LOCK = threading.Lock()  # os.umask is process-wide: read it back at once, one thread at a time


def current_umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def ordinary_file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file: 0666 less the umask."""
    return 0o666 & ~current_umask()


def ordinary_folder_mode() -> int:
    """The mode ``mkdir`` gives a new folder: 0777 less the umask."""
    return 0o777 & ~current_umask()


def give_ordinary_mode(path: str | os.PathLike) -> None:
    """chmod a just-written temporary file (0600 from ``mkstemp``) to :func:`ordinary_file_mode`."""
    os.chmod(path, ordinary_file_mode())


CACHE_ENV_VAR = "DICESEARCH_CACHE_DIR"


def cache_dir(name: str) -> Path:
    """``$DICESEARCH_CACHE_DIR/<name>``, else ``~/.cache/dicesearch/<name>``: what runs keep for the next
    (``fid``: FID reference statistics; ``data-checks``: the files that passed ``dicesearch.data.verify``)."""
    root = os.environ.get(CACHE_ENV_VAR)
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "dicesearch"
    return base / name


def safe_component(name: str, fallback: str = "run") -> str:
    """``name`` as one harmless path component: 'DiT-XL/2' -> 'DiT-XL-2', '../../etc' -> 'etc'.

    Letters, digits, '.', '_' and '-' are kept, every other run of characters becomes one
    '-'; leading dots and dashes are dropped, so the result is never '.', '..', hidden or
    absolute. An empty result is ``fallback``.
    """
    text = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-").lstrip(".-")
    return text[:120] or fallback


def inside(folder: Path, name: str) -> Path:
    """``folder / safe_component(name)``: a child of ``folder`` whatever ``name`` holds."""
    return folder / safe_component(name)


__all__ = [
    "CACHE_ENV_VAR",
    "cache_dir",
    "current_umask",
    "give_ordinary_mode",
    "inside",
    "ordinary_file_mode",
    "ordinary_folder_mode",
    "safe_component",
]
