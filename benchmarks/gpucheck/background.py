"""CPU work done beside the GPU work: memory estimates in spawned worker processes.

The memory estimates (fake tensors, CPU only) of sections 1 and 2 take seconds each; on a
GPU machine they run in worker processes from the start of the check while the GPU
measures. Without a pool (the reduced CPU form) each is computed when it is asked for.
Tasks are module-level functions of picklable arguments (specs travel as YAML text).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from multiprocessing.pool import AsyncResult, Pool
from typing import Any


def worker_pool(workers: int) -> Pool:
    """Fresh (spawned) processes: they must not inherit the parent's CUDA state."""
    return multiprocessing.get_context("spawn").Pool(workers)


class Background:
    """Keyed results of ``fn(*args)``: started in ``pool`` now, or computed on ``result``."""

    def __init__(self, pool: Pool | None = None):
        self.pool = pool
        self.pending: dict[Any, AsyncResult | tuple[Callable, tuple]] = {}

    def submit(self, key, fn: Callable, *args) -> None:
        self.pending[key] = self.pool.apply_async(fn, args) if self.pool is not None else (fn, args)

    def result(self, key):
        job = self.pending[key]
        if isinstance(job, AsyncResult):
            return job.get()
        fn, args = job
        return fn(*args)

    def shutdown(self) -> None:
        """Stop the workers now, whatever they are doing (their results are no longer wanted)."""
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
