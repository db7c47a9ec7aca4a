"""The first-rung plots, drawn while a sweep's last trials still run.

With rungs, the score plots (:func:`~dicesearch.sweep.results.plots.save_score_plots`:
optimisation history, slice, parameter importances) draw every configuration's first-rung
score. Those are all in once the last configuration has its first rung, minutes before the
sweep ends: its last trials train a few configurations on to the full budget. Drawn at the
end, the plots (matplotlib's and scikit-learn's imports, the fANOVA forests) kept the sweep
seconds longer on its way out.

:class:`PlotsAhead` draws them as soon as they are known, in a child process at the lowest CPU
priority, so that it takes only the cycles the trials leave. The child starts with the sweep
and does its imports then; it reads nothing of the study. A thread of the sweep process
watches the study and, once it holds a first-rung score for each of the sweep's
configurations, sends the child the trials to plot
(:func:`~dicesearch.sweep.results.plots.plotted_trials`, as JSON on its standard input). The
sweep's end takes the child's files only if the study still gives exactly the trials it sent;
otherwise (a trial retried meanwhile, a sweep with configurations that never reached a rung,
a child that failed) the end draws the plots itself, as before.

Only for one objective with rungs, on POSIX systems (the child lowers its priority with
``os.nice``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import optuna

from dicesearch.sweep.results.plots import plotted_trials

WATCH_S = 2.0  # how often the sweep process looks for the last first-rung score
TAKE_WAIT_S = 60.0  # how long the sweep's end waits for a child still drawing, before drawing itself
LOWEST_PRIORITY = 19  # os.nice


def encode_trials(trials: list) -> list[dict]:
    """The plotted trials as JSON-ready dicts: parameters, distributions, the value (exact:
    JSON writes a float's shortest round-trip repr)."""
    from optuna.distributions import distribution_to_json

    return [
        {"params": t.params, "distributions": {name: distribution_to_json(d) for name, d in t.distributions.items()}, "value": t.value}
        for t in trials
    ]


def decode_trials(encoded: list[dict]) -> list:
    from optuna.distributions import json_to_distribution

    return [
        optuna.trial.create_trial(
            params=t["params"], distributions={name: json_to_distribution(d) for name, d in t["distributions"].items()}, value=t["value"]
        )
        for t in encoded
    ]


class PlotsAhead:
    """The first-rung plots of one sweep, drawn by a low-priority child once they are known (module docstring)."""

    def __init__(self, target_names: list[str], first_rung: int):
        self.target_names, self.first_rung = target_names, first_rung
        self._child: subprocess.Popen | None = None
        self._sent: list[dict] | None = None
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    @classmethod
    def for_sweep(cls, config) -> PlotsAhead | None:
        """For a sweep with rungs and one objective, on POSIX; None otherwise."""
        if config.fidelity is None or len(config.objective.directions) != 1 or os.name != "posix":
            return None
        return cls([config.rung_keys[0]], config.fidelity.rungs[0])

    def start(self) -> None:
        """Start the child: it lowers its priority, does its imports (while the sweep process
        loads the space and a core is still free) and waits for the trials."""
        one_thread = {name: "1" for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
        try:
            self._child = subprocess.Popen(
                [sys.executable, "-m", "dicesearch.sweep.results.ahead"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env={**os.environ, **one_thread},
            )  # fmt: skip
        except OSError:
            self._child = None  # the end draws them

    def watch(self, study: optuna.Study, out_dir: Path, configurations: int) -> None:
        """Watch ``study`` (the sweep's, now open) on a thread; send the trials into ``out_dir``
        once ``configurations`` configurations have their first-rung scores."""
        if self._child is None:
            return
        self._watcher = threading.Thread(target=self._watch, args=(study, Path(out_dir), configurations), name="plots-ahead", daemon=True)
        self._watcher.start()

    def _watch(self, study: optuna.Study, out_dir: Path, configurations: int) -> None:
        while not self._stop.wait(WATCH_S):
            try:
                plotted = plotted_trials(study, self.first_rung)
            except Exception:  # noqa: BLE001 - a busy database: look again at the next turn
                continue
            if len(plotted) >= configurations:
                self._send(study, plotted, out_dir)
                return

    def _send(self, study: optuna.Study, plotted: list, out_dir: Path) -> None:
        trials = encode_trials(plotted)
        message = {
            "study": study.study_name, "directions": [d.name.lower() for d in study.directions], "out_dir": str(out_dir),
            "targets": self.target_names, "first_rung": self.first_rung, "trials": trials,
        }  # fmt: skip
        try:
            self._child.stdin.write(json.dumps(message) + "\n")
            self._child.stdin.close()
            self._child.stdin = None  # sent: communicate() then only reads
        except OSError:  # the child is gone: the end draws them
            return
        self._sent = trials

    def take(self, study: optuna.Study) -> list[Path] | None:
        """The files the child drew, if it drew them from the trials ``study`` gives now; else None
        (the caller draws them). Ends the child either way."""
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join()
        if self._child is None:
            return None
        try:
            if self._sent is None:  # never all in: the child, still waiting, is ended below
                return None
            output, _ = self._child.communicate(timeout=TAKE_WAIT_S)
            if self._child.returncode != 0 or encode_trials(plotted_trials(study, self.first_rung)) != self._sent:
                return None
            paths = [Path(p) for p in json.loads(output.strip().splitlines()[-1])]
            return paths if all(p.is_file() for p in paths) else None
        except (subprocess.TimeoutExpired, ValueError, IndexError, OSError):
            return None
        finally:
            self.close()

    def close(self) -> None:
        """End the child if it still runs (the sweep stopped, or its end gave up waiting)."""
        self._stop.set()
        child, self._child = self._child, None
        if child is None:
            return
        if child.poll() is None:
            child.kill()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for pipe in filter(None, (child.stdin, child.stdout)):
            try:
                pipe.close()
            except (OSError, ValueError):
                pass


def _child() -> int:
    """The child: lowest priority, the imports, then the plots of the trials it is sent."""
    if hasattr(os, "nice"):
        os.nice(LOWEST_PRIORITY)
    import matplotlib

    matplotlib.use("Agg")
    import optuna.visualization.matplotlib  # noqa: F401 - imported now, while waiting
    from optuna.importance import FanovaImportanceEvaluator

    from dicesearch.sweep.results.plots import save_score_plots

    FanovaImportanceEvaluator()  # its forest's imports (scikit-learn) too
    line = sys.stdin.readline()
    if not line:  # the sweep ended (or stopped) before the plots were known
        return 0
    message = json.loads(line)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    paths = save_score_plots(
        decode_trials(message["trials"]), message["study"], message["directions"], Path(message["out_dir"]), message["targets"], message["first_rung"]
    )
    print(json.dumps([str(p) for p in paths]), flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(_child())
    except KeyboardInterrupt:  # Ctrl-C reaches the sweep's whole process group: the sweep says what happened
        sys.exit(130)
