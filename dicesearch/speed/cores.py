"""The cores a finished neighbour left idle: how many threads a trial process may use, and whether it keeps them.

A sweep runs ``parallelism`` trial processes of ``budget.threads`` torch threads each (one: the
fastest for these small models on a shared CPU, ``docs/benchmarks.md``). Towards its end fewer
trials are left than workers: with rungs, the last configuration trains from 400 to 1600
steps while the other worker has nothing to claim, and that worker's core sits idle. Two
pieces hand it over:

* the sweep offers every running trial its own threads plus its share of the idle workers'
  (:func:`offered_threads`): two workers, one of them idle, one trial left: two threads;
* the trial process (:class:`ThreadOffers`) takes an offer only where the cores are idle in
  fact: its own steps timed at its own threads over a report window, and over that window
  the machine's idle time (``/proc/stat``, the CPUs this process may run on: :class:`IdleCores`)
  at least the offered extra threads less ``IDLE_SLACK`` (or, where the window was busier, a
  probe of ``PROBE_S`` at the report says they are idle now: the neighbour may have ended within
  the window, and a rung's scoring may follow the report). Where another job holds the core
  the sweep thinks idle, intra-op threads wait for each other at every op: on the 2-core
  machine at load average 5, two threads took 5.1 s a step against one thread's 0.28 s.
  Then it times the steps at the offered count over the next window and keeps them only if
  a step takes at most ``KEEP_RATIO`` of its own-threads step; else it goes back, and tries
  that count again only after ``RETRY_WINDOWS`` windows at its own threads, twice as many
  after each time it did not pay, and under the same idle test. (It used to never try again:
  one slow window, the end's plots drawn beside it, left the default sweep's full-budget
  trial at one thread for its last 100 s, 1200 steps at 89 ms against 55 ms.) When the offer
  shrinks (the idle worker claimed a trial), the trial goes back at its next report.

With more threads a trial trains its batch as that many chunks, one per worker thread of one
intra-op thread (``dicesearch.speed.chunks``; torch's own intra-op threads wait for each other
at every op: on the 2-core VM, for the default sweep's pick, they gave 1.2x to 1.5x one
thread's steps per second from one hour to the next, the chunks 1.4x to 1.7x,
``benchmarks/sweep_speed.py --only chunks``, ``docs/benchmarks.md``), samples its batch as
as many parts on worker threads of one intra-op thread each (``dicesearch.train.sampling``:
the same bits; 2.0x for the default sweep's pick, ``--only sampling``), and extracts Inception
features on as many worker threads (``dicesearch.metrics.inception_eager``: the same bits; 1.9x). The chunks
sum the batch's gradient in another order (``tests/speed/test_chunks.py``: to float rounding
of one thread's): like the fast kernels, a trial's scores may differ from a one-thread run by
what rounding grows into.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import torch

__all__ = ["IDLE_SLACK", "KEEP_RATIO", "PROBE_S", "RETRY_WINDOWS", "IdleCores", "ThreadOffers", "idle_now", "offered_threads"]

KEEP_RATIO = 0.9  # an offer is kept only if a step takes at most this fraction of the own-threads step
RETRY_WINDOWS = 4  # own-threads windows before a count that did not pay is tried again (doubled after each time)
IDLE_SLACK = 0.25  # taking k extra threads needs at least k - IDLE_SLACK cores idle over the last window
PROBE_S = 0.05  # a window busier than that: the cores idle over this long at the report decide


def offered_threads(base: int, running: int, idle_workers: int) -> int:
    """Threads for each of ``running`` trials of ``base`` threads when ``idle_workers`` workers of
    ``base`` threads each have nothing to run: their threads shared out, whole threads only."""
    if running <= 0 or idle_workers <= 0:
        return base
    return base + (base * idle_workers) // running


class IdleCores:
    """Cores idle since the last call (idle + iowait time of the CPUs this process may run on,
    from ``/proc/stat``); None where the file is missing (not Linux) or no time has passed."""

    def __init__(self, path: str = "/proc/stat"):
        self.path = path
        self._last = self._read()

    def __call__(self) -> float | None:
        now, before = self._read(), self._last
        self._last = now
        if now is None or before is None or now[1] <= before[1]:
            return None
        return (now[0] - before[0]) / (now[1] - before[1]) * now[2]

    def _read(self) -> tuple[int, int, int] | None:
        """(idle ticks, all ticks, CPUs) summed over this process's CPUs."""
        try:
            with open(self.path, encoding="ascii") as handle:
                lines = handle.read().splitlines()
        except OSError:
            return None
        mine = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        idle = total = cpus = 0
        for line in lines:
            name, _, rest = line.partition(" ")
            if not (name.startswith("cpu") and name[3:].isdigit()) or (mine is not None and int(name[3:]) not in mine):
                continue
            ticks = [int(v) for v in rest.split()[:8]]  # user nice system idle iowait irq softirq steal
            idle, total, cpus = idle + ticks[3] + ticks[4], total + sum(ticks), cpus + 1
        return (idle, total, cpus) if cpus else None


def idle_now(seconds: float = PROBE_S) -> float | None:
    """Cores idle over the next ``seconds`` (:class:`IdleCores`); None where unknown."""
    cores = IdleCores()
    time.sleep(seconds)
    return cores()


class ThreadOffers:
    """In a trial process: take the thread counts the sweep offers at each report, keep them
    only while its steps are measured faster (module docstring)."""

    def __init__(
        self,
        base: int,
        set_threads: Callable[[int], None] = torch.set_num_threads,
        clock: Callable[[], float] = time.perf_counter,
        idle_cores: Callable[[], float | None] | None = None,
        keep_ratio: float = KEEP_RATIO,
        probe: Callable[[], float | None] = idle_now,
    ):
        self.base, self.current, self.most = base, base, base
        self._set_threads, self._clock, self._keep_ratio, self._probe = set_threads, clock, keep_ratio, probe
        self._idle_cores = idle_cores if idle_cores is not None else IdleCores()
        self.seconds_per_step: dict[int, float] = {}  # threads -> the last window's seconds per step
        self.declined: dict[int, int] = {}  # counts measured no faster than the own threads -> own-threads windows before trying again
        self._next_wait: dict[int, int] = {}  # count -> the wait its next decline sets (doubles)
        self._mark: tuple[float, int] | None = None  # (time, step) of the last report; None after a gap

    def at_report(self, step: int, offered: int | None) -> None:
        """Training reached ``step`` (a report); the sweep offers ``offered`` threads (None: none)."""
        now, idle = self._clock(), self._idle_cores()
        window = self._mark is not None and step > self._mark[1]  # training steps only since the last mark
        if window:
            self.seconds_per_step[self.current] = (now - self._mark[0]) / (step - self._mark[1])
            if self.current == self.base:
                self._count_down()
        self._mark = (now, step)
        if self.current != self.base and not self._pays(self.current):
            self._decline(self.current)
            self._use(self.base)
            return
        want = self.base if offered is None else max(self.base, offered)
        if want > self.current and not (window and self._may_take(want, idle)):
            want = self.current
        if want != self.current:
            self._use(want)

    def _may_take(self, threads: int, idle: float | None) -> bool:
        """More threads than now: never a count measured not to pay, only after an own-threads
        window, and only where that window left the extra cores idle (unknown: try it) or, if
        it was busier, they are idle now (the neighbour ended within the window)."""
        if threads in self.declined or self.base not in self.seconds_per_step:
            return False
        extra = threads - self.current - IDLE_SLACK
        if idle is None or idle >= extra:
            return True
        now = self._probe()
        return now is not None and now >= extra

    def _decline(self, threads: int) -> None:
        wait = self._next_wait.get(threads, RETRY_WINDOWS)
        self.declined[threads], self._next_wait[threads] = wait, 2 * wait

    def _count_down(self) -> None:
        """One more window at the own threads: declined counts are a window nearer their retry."""
        for threads in list(self.declined):
            self.declined[threads] -= 1
            if self.declined[threads] <= 0:
                del self.declined[threads]

    def gap(self) -> None:
        """Something other than training steps ran since the last report (a rung's sampling and
        scoring): the next window starts at the next report."""
        self._mark = None

    def _pays(self, threads: int) -> bool:
        mine, own = self.seconds_per_step.get(threads), self.seconds_per_step.get(self.base)
        if mine is None or own is None:
            return True  # not measured yet: the window at this count is still running
        return mine <= self._keep_ratio * own

    def _use(self, threads: int) -> None:
        self._set_threads(threads)
        self.current, self.most = threads, max(self.most, threads)
        if threads != self.base:
            self.seconds_per_step.pop(threads, None)  # its next window is measured afresh
