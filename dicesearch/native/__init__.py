"""Native kernels: C sources shipped in this package, compiled on the machine that runs them.

``load_library("depthwise")`` compiles ``depthwise.c`` with the machine's C compiler
(``$CC``, else ``cc``) for its own processor (``-O3 -march=native``) the first time it is
asked for on that machine, caches the shared library, and opens it with ``ctypes``. A
foreign call through ``ctypes`` releases the GIL, so worker threads (a trial's chunks) run
the kernels side by side.

The cache is the runs' cache folder's ``native`` (``$DICESEARCH_CACHE_DIR/native``, else
``~/.cache/dicesearch/native``): one file per source, flags, compiler and processor (a hash
of all four, and of the headers the sources share, ``vectors.h``, in the name), written
under a temporary name and renamed into place, so processes that build at once never see
half a file. Nothing in it comes from a project's
files: only this package's sources are ever compiled.

Where there is no compiler, a build fails or ``DICESEARCH_NATIVE=0`` is set, ``load_library``
returns None and ``why_unavailable(name)`` says why in one line; callers then use
PyTorch's kernels, which compute the same products (see each caller). ``DICESEARCH_NATIVE``
may also name the libraries to use, comma-separated (``DICESEARCH_NATIVE=depthwise``: the
depthwise kernels but not ``merge_norm``), to measure one against PyTorch's alone.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

from dicesearch.files import cache_dir, give_ordinary_mode

__all__ = ["FLAGS", "call", "load_library", "why_unavailable"]

FLAGS = ("-O3", "-march=native", "-ffp-contract=fast", "-std=c11", "-shared", "-fPIC")  # contract: fused multiply-adds
SOURCES = Path(__file__).parent
_log = logging.getLogger(__name__)
_why: dict[str, str] = {}


def why_unavailable(name: str) -> str | None:
    """One line on why ``load_library(name)`` returned None in this process; None if it did not."""
    return _why.get(name)


def _processor() -> str:
    """What ``-march=native`` compiles for: the processor's name and feature flags."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    keep = [line for line in lines if line.split(":")[0].strip() in ("model name", "flags", "Features")]
    return "\n".join(dict.fromkeys(keep))  # the first processor's lines (all cores alike)


def _compiler_version(compiler: str) -> str:
    done = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30)
    return done.stdout


@functools.cache
def load_library(name: str) -> ctypes.CDLL | None:
    """The compiled ``<name>.c`` of this package, built if need be (module docstring), or None."""
    switch = os.environ.get("DICESEARCH_NATIVE", "1").strip()
    if switch == "0":
        return _unavailable(name, "DICESEARCH_NATIVE=0 is set")
    if switch != "1" and name not in {part.strip() for part in switch.split(",")}:
        return _unavailable(name, f"DICESEARCH_NATIVE={switch} does not name {name}")
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None:
        return _unavailable(name, f"no C compiler found (looked for {os.environ.get('CC', 'cc')!r}; set CC to one)")
    try:
        source = (SOURCES / f"{name}.c").read_bytes()
        headers = [path.read_bytes() for path in sorted(SOURCES.glob("*.h"))]  # what the sources include
        key = hashlib.sha256(b"\0".join([source, *headers, " ".join(FLAGS).encode(), _compiler_version(compiler).encode(),
                                         _processor().encode(), platform.machine().encode()])).hexdigest()[:16]  # fmt: skip
        library = cache_dir("native") / f"{name}-{key}.so"
        if not library.exists():
            _build(compiler, SOURCES / f"{name}.c", library)
        return ctypes.CDLL(str(library))
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", None) or str(exc)
        return _unavailable(name, f"building {name}.c failed: {detail.strip().splitlines()[-1] if detail.strip() else exc}")


def call(function, *args, what: str) -> None:
    """Call a kernel of a loaded library, tensors passed as pointers to their data; its nonzero
    status (it could not allocate its buffers) raises MemoryError naming ``what``."""
    import torch

    if function(*(ctypes.c_void_p(a.data_ptr()) if isinstance(a, torch.Tensor) else a for a in args)) != 0:
        raise MemoryError(f"{what}: {function.__name__} could not allocate its buffers")


def _build(compiler: str, source: Path, library: Path) -> None:
    library.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(prefix=f".{library.name}.", dir=library.parent)
    os.close(handle)
    try:
        subprocess.run([compiler, *FLAGS, "-o", partial, str(source)], check=True, capture_output=True, text=True, timeout=120)
        give_ordinary_mode(partial)
        os.replace(partial, library)  # atomic: a process building beside this one renames its own copy
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    _log.info("built %s", library)


def _unavailable(name: str, why: str) -> None:
    _why[name] = why
    _log.info("native %s kernels unavailable: %s; using PyTorch's", name, why)
    return None
