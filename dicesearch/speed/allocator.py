"""Keep freed tensor memory in the process instead of handing it back to the kernel.

A training step of a small model frees and re-allocates the same few-MB activations
hundreds of times. glibc's malloc serves blocks above its mmap threshold (128 KiB at first,
adapting up to 32 MiB) with fresh ``mmap`` pages and trims the heap's free top above its
trim threshold, so many of those allocations come back as new, zero-filled pages whose
first touch faults: on the 2-core machine ~3,300 page faults per step of the default
space's base model at batch 64. ``keep_freed_memory()`` sets the thresholds with
``mallopt`` so that freed blocks stay in the heap (~300 faults per step, a few per cent of
the step's time, ``benchmarks/trial_speed.py``). The process keeps its peak heap: fine for
a trial process, which trains one model and exits.

Only glibc has these knobs; elsewhere (macOS, musl) the call does nothing and says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_MMAP_THRESHOLD = 32 * 2**20  # glibc's largest (HEAP_MAX / 2 on 64-bit): blocks below it come from the heap
_TRIM_THRESHOLD = 2**31 - 1  # never trim the heap's free top
_TOP_PAD = 64 * 2**20  # grow the heap in 64 MiB steps


@functools.cache
def keep_freed_memory() -> bool:
    """Set the process's malloc thresholds (module docstring); True where glibc took them."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    settings = ((_M_MMAP_THRESHOLD, _MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD), (_M_TOP_PAD, _TOP_PAD))
    return all(mallopt(option, value) == 1 for option, value in settings)
