"""CPU work done beside the GPU work: memory estimates in spawned worker processes.

The memory estimates (fake tensors, CPU only) of sections 1 and 2 take seconds each; on a
GPU machine they run in worker processes from the start of the check while the GPU
measures. Without a pool (the reduced CPU form) each is computed when it is asked for.
Tasks are module-level functions of picklable arguments (specs travel as YAML text).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """Fresh (spawned) processes: they must not inherit the parent's CUDA state."""
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))


class Background:
    """Keyed results of ``fn(*args)``: submitted to ``executor`` now, or computed on ``result``."""

    def __init__(self, executor: ProcessPoolExecutor | None = None):
        self.executor = executor
        self.pending: dict[Any, Future | tuple[Callable, tuple]] = {}

    def submit(self, key, fn: Callable, *args) -> None:
        self.pending[key] = self.executor.submit(fn, *args) if self.executor is not None else (fn, args)

    def result(self, key):
        job = self.pending[key]
        if isinstance(job, Future):
            return job.result()
        fn, args = job
        return fn(*args)

    def shutdown(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)
