"""Run one trial in a child process, so one trial's crash, OOM or hang cannot touch the next.

The parent sends a :class:`~dicesearch.sweep.lifecycle.messages.TrialRequest`; the child runs
:func:`dicesearch.objective.evaluate` and streams ``(step, loss)`` progress back, and with
rungs each rung's scores. For each progress or rung message the parent answers whether to
go on (Optuna's pruner and the rung rule live in the parent, next to the storage), and with
its answer to progress how many threads the trial may use now (the cores of workers with
nothing to run, :mod:`dicesearch.speed.cores`). The parent enforces the wall-clock limit by
terminating the child. The outcome is always one of: complete, pruned, failed (with the
error), timeout, or crashed (the process died without a word, e.g. killed by the kernel).

On Linux, trial processes are forked from a server process that imported
torch, diffusers and the objective once (``multiprocessing``'s forkserver, ``PRELOAD``): a
fresh interpreter per trial spent ~3 CPU s importing them (of a first-rung trial's ~30),
a forked one ~0.05 s (``benchmarks/sweep_speed.py``). The server also loads the FID
Inception network and builds its eager version before it forks (``preload_inception``),
which each trial process did again for ~1.1 s. The child is still a fresh process
of its own; it takes the parent's environment as it is when the trial starts, as a spawned
one would.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import multiprocessing
import os
import sys
import time
import traceback
from collections.abc import Callable

from dicesearch.objective import RungCallback
from dicesearch.sweep.lifecycle.messages import TrialOutcome, TrialRequest

CONTINUE, PRUNE = "continue", "prune"
ThreadOffer = Callable[[], int | None]  # threads the trial may use now (None: its own)
# what every trial process imports, once in the forkserver (module docstring)
PRELOAD = (
    "dicesearch.sweep.lifecycle.preload_begins",  # the collector off while the server imports (it is back on before any fork)
    "torch", "numpy", "diffusers.schedulers.scheduling_ddim", "diffusers.schedulers.scheduling_ddpm",
    "diffusers.schedulers.scheduling_dpmsolver_multistep", "dicesearch.objective", "dicesearch.train",
    "dicesearch.metrics", "dicesearch.sweep.lifecycle.messages", "dicesearch.sweep.lifecycle.preload_inception",
)  # fmt: skip


@functools.cache
def trial_context():
    """The multiprocessing context trial processes start in: on Linux a forkserver that
    preloads ``PRELOAD``; elsewhere spawn (on macOS a process forked after torch loaded the
    system's libraries is not safe, which is why Python spawns there; Windows has no fork)."""
    if not sys.platform.startswith("linux") or "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(PRELOAD))
    return context


def start_trial_server() -> None:
    """Start the preloading server now rather than at the first trial: its imports and the FID
    network (~4.5 s on the 2-core machine) then run on the core the sweep's own single-threaded
    start (loading the space, its checks, the stores: ~5.5 s) leaves idle. No-op where trials
    are spawned."""
    if trial_context().get_start_method() == "forkserver":
        import multiprocessing.forkserver

        multiprocessing.forkserver.ensure_running()


class _PruneRequested(Exception):
    def __init__(self, step: int):
        super().__init__(f"pruned at step {step}")
        self.step = step


def _classify(exc: BaseException) -> str:
    from dicesearch.errors import DicesearchError

    name = type(exc).__name__
    if "OutOfMemory" in name or "out of memory" in str(exc).lower():
        return "out of memory"
    if name == "TrainingDiverged":
        return "diverged"
    if isinstance(exc, DicesearchError):
        return "invalid"
    return "error"


_SWEEP_GONE = (BrokenPipeError, ConnectionResetError, EOFError)


def _sweep_may_be_gone():
    return contextlib.suppress(*_SWEEP_GONE)


def _default_threads() -> int:
    """torch's thread count for a trial that sets none: OMP_NUM_THREADS as the sweep has it now
    (a forked child's torch read it when the forkserver started), else torch's own."""
    import torch

    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else torch.get_num_threads()


def child_starts(environment: dict[str, str] | None) -> None:
    """First thing in a process forked from the preloading server: the sweep's environment as
    it is now (``environment``; the server was started earlier), and the cyclic collector on,
    whatever the server's preload left (``preload_begins``)."""
    if environment is not None:
        os.environ.clear()
        os.environ.update(environment)
    gc.enable()


def trial_child(conn, request: TrialRequest, environment: dict[str, str] | None = None) -> None:
    """Entry point of the trial process: ("report", step, loss)* and ("rung", index, steps,
    metrics)*, then ("result", Evaluation), ("pruned", step) or ("failed", kind, reason, traceback).
    ``environment``: the parent's, for a child forked from the forkserver (started earlier)."""
    child_starts(environment)
    try:
        import warnings

        import torch

        from dicesearch.errors import PluginLoadWarning
        from dicesearch.objective import evaluate

        warnings.simplefilter("ignore", PluginLoadWarning)  # the sweep process has said so once

        from dicesearch.speed.allocator import keep_freed_memory
        from dicesearch.speed.cores import ThreadOffers

        torch.set_num_threads(request.threads or _default_threads())
        keep_freed_memory()  # a trial process trains one model and exits: keeping its freed memory saves page faults
        offers = ThreadOffers(torch.get_num_threads())

        def progress(step: int, loss: float) -> None:
            conn.send(("report", step, loss))
            verdict, offered = conn.recv()
            if verdict == PRUNE:
                raise _PruneRequested(step)
            offers.at_report(step, offered)

        def rung(index: int, steps: int, metrics: dict) -> bool:
            conn.send(("rung", index, steps, metrics))
            offers.gap()  # the rung's sampling and scoring are not training steps
            return conn.recv() == CONTINUE

        evaluation = evaluate(
            request.spec(), request.data, request.budget, seed=request.seed, reference_seed=request.reference_seed, workdir=request.workdir, device=request.device,
            on_progress=progress, count_static=request.count_static, replicates=request.replicates,
            rungs=request.rungs, run_dir=request.run_dir, start_rung=request.start_rung, on_rung=rung, rung_samples=request.rung_samples,
        )  # fmt: skip
        evaluation.metrics.update(trial_threads=float(offers.most))  # the most torch threads it ran with: a result, not a read
        conn.send(("result", evaluation))
    except _PruneRequested as exc:
        with _sweep_may_be_gone():
            conn.send(("pruned", exc.step))
    except _SWEEP_GONE:
        pass  # the sweep process is gone (killed): nobody to report to, so end quietly and at once
    except BaseException as exc:  # report everything, including KeyboardInterrupt in the child
        kind = _classify(exc)
        with _sweep_may_be_gone():
            conn.send(("failed", kind, f"{kind}: {type(exc).__name__}: {exc}", traceback.format_exc(limit=8)))
    finally:
        conn.close()


def run_trial(
    request: TrialRequest,
    on_report: Callable[[int, float], bool],
    time_limit_s: float | None = None,
    poll_s: float = 0.2,
    on_rung: RungCallback | None = None,
    threads: ThreadOffer | None = None,
) -> TrialOutcome:
    """Run ``request`` in a fresh process; ``on_report(step, loss)`` returns True to prune,
    ``on_rung(index, steps, metrics)`` False to stop at that rung (default: go on).
    ``threads()``, asked at every report, offers the trial more threads than its own
    (``dicesearch.speed.cores``; None or a smaller number: its own)."""
    ctx = trial_context()
    parent_conn, child_conn = ctx.Pipe()
    process = ctx.Process(target=trial_child, args=(child_conn, request, dict(os.environ)), daemon=True)
    start = time.monotonic()
    process.start()
    child_conn.close()
    curve: list[tuple[int, float]] = []

    def ended(status, reason: str = "", **fields) -> TrialOutcome:
        return TrialOutcome(status=status, reason=reason, loss_curve=curve, wall_seconds=time.monotonic() - start, **fields)

    try:
        while True:
            elapsed = time.monotonic() - start
            if time_limit_s is not None and elapsed > time_limit_s:
                _stop(process)
                return ended("timeout", f"timeout: stopped after {elapsed:.0f} s (limit {time_limit_s:.0f} s)")
            if parent_conn.poll(poll_s):
                try:
                    message = parent_conn.recv()
                except EOFError:
                    break
                kind = message[0]
                if kind == "report":
                    _, step, loss = message
                    curve.append((step, loss))
                    verdict = PRUNE if on_report(step, loss) else CONTINUE
                    if _answer(parent_conn, (verdict, threads() if threads is not None and verdict == CONTINUE else None)):
                        continue
                    break
                if kind == "rung":
                    _, index, steps, metrics = message
                    if _answer(parent_conn, CONTINUE if on_rung is None or on_rung(index, steps, metrics) else PRUNE):
                        continue
                    break
                process.join(timeout=30)
                if kind == "result":
                    evaluation = message[1]
                    return ended("complete", metrics=evaluation.metrics, samples_png=evaluation.samples_png)
                if kind == "pruned":
                    return ended("pruned", f"pruned by the pruner at step {message[1]}")
                _, _, reason, trace = message
                return ended("failed", reason, traceback=trace)
            elif not process.is_alive():
                break
        process.join(timeout=5)
        return ended("crashed", f"crashed: the trial process died (exit code {process.exitcode}) without reporting")
    except BaseException:
        _stop(process)
        raise
    finally:
        parent_conn.close()


def _answer(conn, reply) -> bool:
    """Send the trial process its answer; False if it has died meanwhile (ended while the sweep
    weighed its report or rung, e.g. by Ctrl-C to the sweep): then it crashed, like a process
    that dies while the sweep waits for it."""
    try:
        conn.send(reply)
    except (BrokenPipeError, ConnectionResetError):
        return False
    return True


def _stop(process) -> None:
    if process.is_alive():
        process.terminate()
        process.join(timeout=10)
    if process.is_alive():
        process.kill()
        process.join(timeout=10)
