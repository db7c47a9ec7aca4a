"""A training step on k CPU threads as k chunks of the batch, one per worker thread, instead of torch's intra-op threads.

torch's intra-op threads split every op of a step k ways and wait for each other at its end:
thousands of waits a step for the digits models, whose ops are small. What a wait costs
depends on where the machine puts the two threads: on the project's 2-core VM the default
sweep's pick at two intra-op threads took 0.082 s a step in one table and 0.104 s in the next,
a few minutes later, against 0.126 s at one thread, and as two chunks 0.078 s and 0.091 s
(``benchmarks/sweep_speed.py --only chunks``, ``docs/benchmarks.md``). Here each of k worker threads runs the
forward and backward of its own chunk of the batch at one intra-op thread, and they meet once
a step, when every chunk's gradient is in. The rest of a chunked step (the batch's draws, the
optimiser, the EMA) runs at one intra-op thread too (``dicesearch.train.trainer``): those ops
are small, and on two intra-op threads OpenMP's worker, which spins a while after each op
before it sleeps, likely takes a core from the chunks' workers as the next step begins.
Measured on the 2-core VM, in turns in processes forked as trials are: the pick's chunked
step took 0.061 s with the rest at one thread against 0.069 s with it on two threads (the
base model: 0.054 s and 0.053 s).

The gradient is the batch's: the training loss is a mean over the batch (each stage's ε-MSE,
the VLB), so for chunks of n_c of the B samples ∇L = Σ_c (n_c / B) ∇L_c, and each chunk's
backward adds its share into ``.grad`` (PyTorch's AccumulateGrad adds under a lock). It is
not the one-thread step's bits: the batch's sums are split and added in another order, as
with torch's intra-op threads. With two chunks the result does not depend on which finishes
first (a + b = b + a in floating point), so a rerun gives the same bits.

That holds only for models whose samples never meet in the forward: a model with batch
norm or dropout (:func:`batch_independent`) trains on torch's threads as before. Chunks are
at least ``MIN_CHUNK`` samples, so a batch too small for k of them uses fewer worker threads.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import torch
from torch import nn

from dicesearch.speed.worker_threads import one_intra_op_thread

if TYPE_CHECKING:
    from dicesearch.train.diffusion import LossTerms

__all__ = ["MIN_CHUNK", "ThreadChunks", "batch_independent", "chunk_count"]

MIN_CHUNK = 16  # samples: below this the per-op overhead of a chunk outweighs the thread


def chunk_count(threads: int, batch_size: int) -> int:
    """Chunks (one worker thread each) for a batch at ``threads`` torch threads: 1 means torch's own threads."""
    return max(1, min(threads, batch_size // MIN_CHUNK))


def batch_independent(model: nn.Module) -> bool:
    """Whether no sample of a batch affects another's output: no batch norm, no active dropout."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._NormBase) and not isinstance(module, nn.modules.instancenorm._InstanceNorm):
            return False
        if isinstance(module, nn.modules.dropout._DropoutNd) and module.p > 0:
            return False
    return True


class ThreadChunks:
    """Forward and backward of one batch as chunks on worker threads (module docstring)."""

    def __init__(self):
        self._pool: ThreadPoolExecutor | None = None
        self._workers = 0

    def backward(self, batch_size: int, chunks: int, chunk_loss: Callable[[slice], LossTerms]) -> LossTerms:
        """Run ``chunk_loss(rows)`` and its backward, weighted n_c / B, for ``chunks`` contiguous row
        ranges of the batch, each on its own worker thread; returns the batch's loss terms (detached)."""
        bounds = [batch_size * c // chunks for c in range(chunks + 1)]
        rows = [slice(a, b) for a, b in zip(bounds, bounds[1:])]

        def work(part: slice) -> tuple[float, LossTerms]:
            share = (part.stop - part.start) / batch_size
            with torch.enable_grad():  # grad mode is per thread
                terms = chunk_loss(part)
                (terms.total * share).backward()
            return share, terms

        with one_intra_op_thread():
            parts = list(self._pool_of(chunks).map(work, rows))
        return _weighted(parts)

    def _pool_of(self, workers: int) -> ThreadPoolExecutor:
        if self._pool is None or self._workers != workers:
            self.close()
            self._pool, self._workers = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="train-chunk"), workers
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool, self._workers = None, 0


def _weighted(parts: list[tuple[float, LossTerms]]) -> LossTerms:
    """The batch's terms from its chunks': each a mean over its samples, weighted by its share."""
    total = sum(share * terms.total.detach() for share, terms in parts)
    mse = sum(share * terms.mse for share, terms in parts)
    vlb = None if parts[0][1].vlb is None else sum(share * terms.vlb for share, terms in parts)
    return dataclasses.replace(parts[0][1], total=total, mse=mse, vlb=vlb)
