"""The trials' FID reference statistics, computed once at the start of a sweep, beside it.

Every trial of a sweep scores against the same N real images' statistics, cached on disk
the first time they are computed (:mod:`dicesearch.metrics.reference`). On a machine that
has never scored that data, a sweep's first trials all found the cache empty, and each ran
the Inception over the same N images (the default sweep: about 11 s at one thread, in both
of its first two trials). The cache's lock now lets one process compute while the others
wait; this computes it before any trial needs it, in a process of its own forked from the
preloading server (whose Inception is already loaded), started as soon as the sweep's
checks have passed: it takes the core the sweep's own start (its stores, its first trials'
gates) leaves idle, and the first trials find the file written, or wait less for it.

Only on a CPU, and only where trial processes are forked from the preloading server
(Linux); a GPU computes the statistics in about a second, and a spawned process would first
import everything again. Where the statistics are cached already it only reads them. Whatever
goes wrong here is left for the trials to meet and report: the process never fails the sweep.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable


def _compute(data, budget, seeds: tuple[int, ...], environment: dict[str, str]) -> None:
    """The child: each reference seed's statistics, into the cache (one thread), under the
    sweep's environment as it is now (the cache folder may have been set since the server started)."""
    from dicesearch.sweep.lifecycle.process import child_starts

    child_starts(environment)
    try:
        import torch

        from dicesearch.data import load_dataset
        from dicesearch.objective import budget_reference

        torch.set_num_threads(1)
        dataset = load_dataset(data)
        for seed in seeds:
            budget_reference(dataset, data, budget, seed)
    except BaseException:  # noqa: BLE001 - a trial meets the same problem and reports it
        pass


class ReferenceAhead:
    """The process computing a sweep's reference statistics; :meth:`close` ends it.

    It is started from a thread of its own: a process forked from the preloading server starts
    only once the server has done its imports (up to about 2 s after the sweep's checks on the
    2-core machine), and the sweep's start goes on meanwhile."""

    def __init__(self, process) -> None:
        self.process = process
        self._starting = threading.Thread(target=process.start, name="reference-ahead", daemon=True)
        self._starting.start()

    @classmethod
    def start(cls, data, budget, seeds: Iterable[int], device: str = "auto") -> ReferenceAhead | None:
        """Start computing the statistics of ``seeds``' reference images (``budget.fid_samples``
        of ``data``); None where it is not worth a process (module docstring)."""
        from dicesearch.devices import resolve_device
        from dicesearch.sweep.lifecycle.process import trial_context

        context = trial_context()
        if context.get_start_method() != "forkserver" or resolve_device(device).type != "cpu":
            return None
        process = context.Process(target=_compute, args=(data, budget, tuple(dict.fromkeys(seeds)), dict(os.environ)), daemon=True)
        return cls(process)

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the process to end; its exit code (None: still running after ``timeout``)."""
        self._starting.join(timeout)
        if self.process.pid is None:
            return None
        self.process.join(timeout)
        return self.process.exitcode

    def close(self) -> None:
        """End the process if it is still running (the sweep stopped early: the cache's file is
        written under another name and renamed into place, so nothing is left half-written)."""
        self._starting.join()
        if self.process.pid is None:  # its start failed: nothing to end
            return
        if self.process.is_alive():
            self.process.terminate()
        self.process.join(timeout=10)
