"""A live line per running trial: its step, loss, rung and time left.

In a terminal the lines sit under the sweep's output and update in place (``rich.live``);
in a log file a trial's line is printed at most every ``LOG_EVERY_S`` seconds. Time left is
the training steps still to go at the trial's own measured rate, plus one scoring per rung
still ahead at the mean time scoring has taken so far in this sweep.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from rich.console import Console
from rich.live import Live
from rich.text import Text

LOG_EVERY_S = 30.0


@dataclass
class _Running:
    number: int
    total: int  # training steps the trial runs in all (replicates x train_steps)
    train_steps: int = 0  # one replicate's steps
    rungs: tuple[int, ...] | None = None  # its scoring points (a compute-matched trial's own)
    started: float = field(default_factory=lambda: time.monotonic())
    step: int = 0
    loss: float | None = None
    rung: str = ""
    last_logged: float = 0.0
    scorings_left: int = 1
    scoring_seconds: float = 0.0  # what its scorings took so far


class TrialProgress:
    """Tracks the running trials of one sweep process and shows them (thread-safe)."""

    def __init__(self, console: Console, train_steps: int, replicates: int = 1, rungs: tuple[int, ...] | None = None):
        self.console, self.train_steps, self.replicates, self.rungs = console, train_steps, replicates, rungs
        self._running: dict[int, _Running] = {}
        self._lock = threading.Lock()
        self._scoring: list[float] = []  # seconds a scoring took, so far
        self._live: Live | None = None

    # -- events -----------------------------------------------------------------------------

    def start(self, number: int, train_steps: int | None = None, rungs: tuple[int, ...] | None = None) -> None:
        """Trial ``number`` starts training: ``train_steps`` and ``rungs`` are its own where its
        budget buys it other steps than the sweep's (compute matching, a comparison)."""
        steps, rungs = train_steps or self.train_steps, rungs or self.rungs
        with self._lock:
            self._running[number] = _Running(number, steps * self.replicates, steps, rungs, scorings_left=len(rungs or (1,)))
            self._show()

    def step(self, number: int, step: int, loss: float) -> None:
        with self._lock:
            trial = self._running.get(number)
            if trial is None:
                return
            trial.step, trial.loss = step, loss
            if trial.rungs:
                within = (step - 1) % trial.train_steps + 1
                index = next((i for i, steps in enumerate(trial.rungs) if within <= steps), len(trial.rungs) - 1)
                trial.rung = f"rung {index + 1}/{len(trial.rungs)}"
            self._show(number)

    def scored(self, number: int, metrics: dict) -> None:
        """A trial finished a scoring (a rung's, or its last); ``metrics`` hold its cumulative
        ``sampling_seconds`` and ``fid_seconds``."""
        total = float(metrics.get("sampling_seconds") or 0.0) + float(metrics.get("fid_seconds") or 0.0)
        with self._lock:
            trial = self._running.get(number)
            if trial is None:
                return
            self._scoring.append(max(0.0, total - trial.scoring_seconds))
            trial.scoring_seconds = total
            trial.scorings_left = max(0, trial.scorings_left - 1)

    def end(self, number: int) -> None:
        with self._lock:
            self._running.pop(number, None)
            self._show()

    def close(self) -> None:
        with self._lock:
            self._running.clear()
            if self._live is not None:
                self._live.stop()
                self._live = None

    # -- rendering --------------------------------------------------------------------------

    def line(self, trial: _Running) -> str:
        elapsed = time.monotonic() - trial.started
        parts = [f"trial {trial.number}: step {trial.step}/{trial.total}"]
        if trial.rung:
            parts.append(trial.rung)
        if trial.loss is not None:
            parts.append(f"loss {trial.loss:.4f}")
        parts.append(f"{elapsed:.0f} s")
        left = self._time_left(trial, elapsed)
        if left is not None:
            parts.append(f"~{left:.0f} s left")
        return ", ".join(parts)

    def _time_left(self, trial: _Running, elapsed: float) -> float | None:
        if trial.step <= 0:
            return None
        rate = elapsed / trial.step  # seconds per step, scoring so far included (a rough upper bound)
        scoring = sum(self._scoring) / len(self._scoring) if self._scoring else 0.0
        return max(0.0, (trial.total - trial.step) * rate + trial.scorings_left * scoring)

    def _show(self, number: int | None = None) -> None:
        if self.console.is_terminal:
            if self._live is None and self._running:
                self._live = Live(console=self.console, refresh_per_second=2, transient=True)
                self._live.start()
            if self._live is not None:
                self._live.update(Text("\n".join(self.line(t) for t in sorted(self._running.values(), key=lambda t: t.number)), style="dim"))
            return
        trial = self._running.get(number) if number is not None else None
        now = time.monotonic()
        if trial is not None and now - trial.last_logged >= LOG_EVERY_S and now - trial.started >= LOG_EVERY_S:
            trial.last_logged = now
            self.console.print(self.line(trial), highlight=False, style="dim")
