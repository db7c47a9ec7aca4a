"""Run one trial in a child process, so one trial's crash, OOM or hang cannot touch the next.

The parent sends the trial's resolved spec, data and budget; the child runs
:func:`dicesearch.objective.evaluate` and streams ``(step, loss)`` progress back. For each
progress message the parent answers whether to continue or prune (Optuna's pruner lives
in the parent, next to the storage). The parent enforces the wall-clock limit by
terminating the child. The outcome is always one of: complete, pruned, failed (with the
error), timeout, or crashed (the process died without a word, e.g. killed by the kernel).
"""

from __future__ import annotations

import multiprocessing
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

CONTINUE, PRUNE = "continue", "prune"


class _PruneRequested(Exception):
    def __init__(self, step: int):
        super().__init__(f"pruned at step {step}")
        self.step = step


@dataclass
class TrialOutcome:
    status: str  # complete | pruned | failed | timeout | crashed | interrupted
    reason: str = ""
    evaluation: dict[str, Any] | None = None
    loss_curve: list[tuple[int, float]] = field(default_factory=list)
    wall_seconds: float = 0.0


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


def _child(conn, payload: dict[str, Any]) -> None:
    """Entry point of the trial process."""
    try:
        import torch
        import yaml

        from dicesearch.data import parse_data_spec
        from dicesearch.objective import Budget, evaluate
        from dicesearch.spec import parse_spec

        torch.set_num_threads(payload.get("threads") or torch.get_num_threads())
        spec = parse_spec(yaml.safe_load(payload["spec_yaml"]), "trial spec")
        data = parse_data_spec(payload["data"])
        budget = Budget.model_validate(payload["budget"])

        def progress(step: int, loss: float) -> None:
            conn.send(("report", step, loss))
            if conn.recv() == PRUNE:
                raise _PruneRequested(step)

        evaluation = evaluate(
            spec, data, budget, seed=payload["seed"], workdir=payload["workdir"], device=payload["device"], on_progress=progress,
            count_static=payload.get("count_static", True),
        )
        conn.send(("result", evaluation.as_dict()))
    except _PruneRequested as exc:
        conn.send(("pruned", exc.step))
    except BaseException as exc:  # report everything, including KeyboardInterrupt in the child
        kind = _classify(exc)
        conn.send(("failed", kind, f"{kind}: {type(exc).__name__}: {exc}", traceback.format_exc(limit=8)))
    finally:
        conn.close()


def run_trial(
    payload: dict[str, Any],
    on_report: Callable[[int, float], bool],
    time_limit_s: float | None = None,
    poll_s: float = 0.2,
) -> TrialOutcome:
    """Run ``payload`` in a fresh process; ``on_report(step, loss)`` returns True to prune."""
    ctx = multiprocessing.get_context("spawn")
    parent_conn, child_conn = ctx.Pipe()
    process = ctx.Process(target=_child, args=(child_conn, payload), daemon=True)
    start = time.monotonic()
    process.start()
    child_conn.close()
    curve: list[tuple[int, float]] = []
    try:
        while True:
            elapsed = time.monotonic() - start
            if time_limit_s is not None and elapsed > time_limit_s:
                _stop(process)
                return TrialOutcome("timeout", f"timeout: stopped after {elapsed:.0f} s (limit {time_limit_s:.0f} s)", None, curve, elapsed)
            if parent_conn.poll(poll_s):
                try:
                    message = parent_conn.recv()
                except EOFError:
                    break
                kind = message[0]
                if kind == "report":
                    _, step, loss = message
                    curve.append((step, loss))
                    parent_conn.send(PRUNE if on_report(step, loss) else CONTINUE)
                elif kind == "result":
                    process.join(timeout=30)
                    return TrialOutcome("complete", "", message[1], curve, time.monotonic() - start)
                elif kind == "pruned":
                    process.join(timeout=30)
                    return TrialOutcome("pruned", f"pruned by the pruner at step {message[1]}", None, curve, time.monotonic() - start)
                elif kind == "failed":
                    process.join(timeout=30)
                    _, _, reason, trace = message
                    return TrialOutcome("failed", reason, {"traceback": trace}, curve, time.monotonic() - start)
            elif not process.is_alive():
                break
        process.join(timeout=5)
        code = process.exitcode
        return TrialOutcome("crashed", f"crashed: the trial process died (exit code {code}) without reporting", None, curve, time.monotonic() - start)
    except BaseException:
        _stop(process)
        raise
    finally:
        parent_conn.close()


def _stop(process) -> None:
    if process.is_alive():
        process.terminate()
        process.join(timeout=10)
    if process.is_alive():
        process.kill()
        process.join(timeout=10)
