"""Work split over worker threads that each run torch at one intra-op thread.

torch's intra-op threads split every op and wait for each other at its end; for the small ops
of these models that wait costs more than the split gains (``dicesearch.speed.chunks``). The
other way to use k cores is k worker threads, each running whole ops of its own share of the
work at one intra-op thread. torch's thread count is per thread, and a new thread takes the
count set when it runs its first op: :func:`one_intra_op_thread` sets it to one around the
workers and restores it after. Used by training's batch chunks (``dicesearch.speed.chunks``),
the eager Inception's micro-batches (``dicesearch.metrics.inception_eager``) and sampling's
parts of a batch (``dicesearch.train.sampling``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

__all__ = ["each_on_one_thread", "one_intra_op_thread"]

Item = TypeVar("Item")
Result = TypeVar("Result")


@contextlib.contextmanager
def one_intra_op_thread() -> Iterator[int]:
    """torch at one intra-op thread inside, for worker threads started or reused there; yields
    the count before, which it restores on the way out (also on an error)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # before the workers' first op: each takes it as its own count
    try:
        yield threads
    finally:
        torch.set_num_threads(threads)


def each_on_one_thread(function: Callable[[Item], Result], items: Sequence[Item], workers: int, name: str) -> list[Result]:
    """``[function(item) for item in items]``, in order, at one intra-op thread: on ``workers``
    worker threads (named ``name``) taking the items in turn, or on this thread if ``workers``
    is 1. Grad modes are per thread: ``function`` sets its own."""
    with one_intra_op_thread():
        if workers <= 1:
            return [function(item) for item in items]
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name) as pool:
            return list(pool.map(function, items))
