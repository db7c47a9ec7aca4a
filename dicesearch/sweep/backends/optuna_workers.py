"""The Optuna backend: worker threads that claim trials in the study and drive each through its lifecycle.

Per trial: claim a trial in the study (never more than the sweep's total, whatever other
workers do); then the lifecycle of :mod:`dicesearch.sweep.lifecycle.trial`: prepare (the
trial's proposal drawn by a sampler seeded from (seed, trial number), a duplicate found,
the budget gate), begin, run (a fresh trial process; progress feeds the pruner, a
wall-clock limit stops it), finish (one record). Re-running the same command resumes the study.

With ``fidelity`` rungs the rung rule is the promotion form (:mod:`dicesearch.sweep.lifecycle.rungs`):
the claim comes first from the paused trials, and a paused trial that later trials have
made promotable is continued, from its rung checkpoint, by a new trial before any new
configuration is drawn.

A comparison (``dicesearch compare``) runs here too: its trials are its models x seeds,
enqueued as fixed configurations before the workers start.

With ``idle_cores: share`` (a sweep's default), a worker with nothing to claim (the sweep's last trials, or a
wait for a paused trial to become promotable) leaves its cores to the trials still running: each is offered its share
at its reports, and keeps it only where its steps measure faster (:mod:`dicesearch.speed.cores`).
A comparison says ``keep`` and offers none: its verdict pairs runs that must reproduce
exactly (a model against itself ties), and more threads may change a run's rounding.
"""

from __future__ import annotations

import multiprocessing
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import optuna
from rich.console import Console

from dicesearch.speed import collector
from dicesearch.speed.cores import offered_threads
from dicesearch.sweep.lifecycle import rungs
from dicesearch.sweep.lifecycle.messages import Candidate, TrialOutcome, TrialSettings
from dicesearch.sweep.lifecycle.session import SweepResult, SweepSession, sweep_params
from dicesearch.sweep.lifecycle.trial import TrialLifecycle
from dicesearch.sweep.space.samplers import STARTUP_TRIALS, make_sampler
from dicesearch.sweep.store.draw_order import ENQUEUED, DrawHistory, await_history
from dicesearch.sweep.store.locations import SweepLocations
from dicesearch.sweep.store.schema import ATTR_CONTINUES, ATTR_RETRY_OF, ATTR_WORKER, STATUS_SURPLUS, TrialRecord
from dicesearch.sweep.store.studies import make_pruner, this_worker


class OptunaSweep:
    """``space``: where the trials come from (a search space, or a comparison's plan): its
    ``config``, ``source``, ``registry`` and ``propose(trial)``; a plan also has ``fixed()``,
    the configurations to run as they are."""

    def __init__(self, space, locations: SweepLocations, console: Console | None = None, device: str = "auto"):
        self.space, self.locations = space, locations
        self.config = space.config
        self.session = SweepSession(space, locations, console, TrialSettings.for_sweep(space.config, device))
        self.console = self.session.console
        self._lock = threading.Lock()
        self._active = 0  # trials this process is running
        self._idle: set[int] = set()  # workers (thread ids) with nothing to claim: their cores are free
        self._stopping = threading.Event()  # Ctrl-C reached the sweep process: workers end their trials and claim no more

    @property
    def mirror(self):
        return self.session.mirror

    # -- the loop ----------------------------------------------------------------------------------

    def run(self) -> SweepResult:
        config = self.config
        steps = config.budget.train_steps * config.replicates  # replicate r reports as r * train_steps + step
        pruner = make_pruner(config.pruner, config.objective.directions, steps, config.budget.report_every)
        result = self.session.open(sweep_params(config), pruner)
        collector.resume()  # the start is over (dicesearch.speed.collector)
        self._enqueue_fixed()
        pool = ThreadPoolExecutor(max_workers=config.parallelism)
        try:
            for worker in [pool.submit(self._worker_loop) for _ in range(config.parallelism)]:
                worker.result()
        except KeyboardInterrupt:
            self._stop_workers(pool)
            self.session.stopped("KILLED")
            raise
        finally:
            pool.shutdown(wait=True)
        if config.fidelity:
            for trial in self.session.study.view().paused():  # never continued: their checkpoints are spent
                shutil.rmtree(self.locations.trial_dir(trial.number) / "run", ignore_errors=True)
        return self.session.finish(result)

    def _stop_workers(self, pool: ThreadPoolExecutor) -> None:
        """Ctrl-C in the sweep process (the main thread; its worker threads never see it): the
        workers claim nothing more, their trial processes are ended, and each worker records its
        trial as interrupted and queues it again (the same as a trial process that got the Ctrl-C
        itself), so that a resumed sweep runs it. Without this the main thread waited for the
        workers, which ran the sweep to its end."""
        self._stopping.set()
        for child in multiprocessing.active_children():  # this process's trial processes
            child.terminate()
        pool.shutdown(wait=True)

    def _enqueue_fixed(self) -> None:
        """A comparison's configurations that the study holds neither finished nor waiting."""
        fixed = getattr(self.space, "fixed", None)
        if fixed is None:
            return
        study = self.session.study
        view = study.view()
        held = [t.params for t in (*view.counted(), *view.running())]
        held += [t.system_attrs.get(ENQUEUED, {}) for t in view.trials if t.state == optuna.trial.TrialState.WAITING]
        for params in fixed():
            if params not in held:
                study.study.enqueue_trial(params, skip_if_exists=False)

    def _claim(self) -> optuna.trial.Trial | None:
        """The next trial to run, or None once the sweep has its number of trials.

        With rungs, a paused trial that has become promotable comes first (a new trial that
        continues it). Other sweep processes may share the study: a trial this one creates
        after the study already has its number of trials (counting those running anywhere) is
        marked surplus and not run, so parallel workers never run more trials than asked.
        The study is read once for the claim's questions (:class:`~dicesearch.sweep.store.view.StudyView`).
        """
        study, total, fidelity = self.session.study, self.config.trials, self.config.fidelity
        with self._lock:
            view = study.view()
            final = view.all_drawn(total)
            if fidelity is not None:
                paused = rungs.promotable_paused(view, fidelity.rungs, fidelity.keep, self.session.directions[0], final)
                if paused is not None:
                    study.study.enqueue_trial(paused.params, user_attrs={ATTR_CONTINUES: paused.number}, skip_if_exists=False)
                    return self._ask()
            if final:
                return None
            trial = self._ask()
            if study.view().rank_among_live(trial.number) >= total:
                study.finish(trial.number, TrialRecord(STATUS_SURPLUS, "not run: other workers already hold the study's trials"))
                return None
            return trial

    def _ask(self) -> optuna.trial.Trial:
        trial = self.session.study.study.ask()
        trial.set_user_attr(ATTR_WORKER, this_worker())
        return trial

    def _propose(self, trial: optuna.trial.Trial):
        """The trial's proposal, drawn by a sampler seeded from (seed, trial number), or with
        ``draw_order: fixed`` from (seed, configurations drawn before it) and a fixed history:
        two sweep processes on one study (or a resumed sweep) never repeat each other's draws."""
        history = self._draw_history(trial.number) if self.config.fixed_draw_order else None
        offset, trials = (trial.number, None) if history is None else (history.index, history.trials)
        with self._lock:  # the study's sampler is shared by this process's worker threads
            self.session.study.study.sampler = make_sampler(self.session.directions, self.config.seed + offset, trials)
            return self.space.propose(trial)

    def _draw_history(self, number: int) -> DrawHistory | None:
        """What trial ``number`` draws from (:mod:`dicesearch.sweep.store.draw_order`), once the
        configurations of it that this process runs have their first-rung results (meanwhile its
        cores go to the running trials); None for a trial whose values were given."""
        first_rung = self.config.fidelity.rungs[0] if self.config.fidelity else None
        result = "a first-rung result" if first_rung else "a result"

        def waits(numbers: list[int]):
            shown = ", ".join(map(str, numbers))
            self.console.print(f"trial {number}: draws its configuration once trial {shown} has {result} (draw_order: fixed)", highlight=False, style="dim")
            return self._idle_while_waiting()

        return await_history(self.session.study.trials, number, self.config.parallelism, first_rung, this_worker(), self._stopping, waits, reads_from=STARTUP_TRIALS)

    def _idle_while_waiting(self):
        """Lend this worker's cores to the running trials (idle_cores: share) until the returned call."""
        me = threading.get_ident()
        with self._lock:
            self._active -= 1
            self._idle.add(me)

        def back() -> None:
            with self._lock:
                self._idle.discard(me)
                self._active += 1

        return back

    def _worker_loop(self) -> None:
        me = threading.get_ident()
        while not self._stopping.is_set():
            trial = self._claim()
            if trial is None:
                with self._lock:
                    others = self._active
                    self._idle.add(me)  # waiting or done: its cores go to the trials still running
                if others and self.config.fidelity:  # a running trial may yet make a paused one promotable
                    time.sleep(1.0)
                    continue
                return
            with self._lock:
                self._idle.discard(me)
                self._active += 1
            try:
                self._run_one(trial)
            except BaseException as error:
                # Ctrl-C: its own, or its process ended under it (whatever that raised on the way)
                if not (isinstance(error, KeyboardInterrupt) or self._stopping.is_set()):
                    raise
                self.session.interrupt(trial.number, "interrupted: the sweep was stopped (Ctrl-C) during this trial")
                if trial.params:
                    self.session.study.study.enqueue_trial(trial.params, user_attrs={ATTR_RETRY_OF: trial.number})
                raise
            finally:
                with self._lock:
                    self._active -= 1

    # -- one trial: its lifecycle ----------------------------------------------------------------------

    def _run_one(self, trial: optuna.trial.Trial) -> None:
        continuation = ATTR_CONTINUES in trial.user_attrs  # the paused trial's own configuration: not a duplicate of it
        life: TrialLifecycle = self.session.trials
        life.drive(trial.number, lambda: self._propose(trial), lambda candidate: self._run(trial, candidate), check_duplicate=not continuation)

    def _run(self, trial: optuna.trial.Trial, candidate: Candidate) -> TrialOutcome:
        """The lifecycle's run step: a trial process, under the pruner or the promotion rule."""
        if self.config.fidelity is None:
            outcome = self.session.trials.run(
                trial.number, candidate, self.locations.trial_dir(trial.number), should_prune=self._pruner(trial), threads=self._spare_threads
            )
        else:
            outcome = self._run_with_rungs(trial, candidate)
        if self._stopping.is_set():  # its process was ended by Ctrl-C (_stop_workers): interrupted, not failed
            raise KeyboardInterrupt
        return outcome

    def _spare_threads(self) -> int | None:
        """Threads a running trial may use now: its own plus its share of the idle workers'
        (None: its own; always with ``idle_cores: keep``, which a comparison always has, and where
        the budget leaves threads to torch)."""
        base = self.session.settings.threads
        if base is None or self.config.idle_cores == "keep":
            return None
        with self._lock:
            return offered_threads(base, self._active, len(self._idle))

    def _pruner(self, trial: optuna.trial.Trial):
        """Optuna's pruner on the training loss (one objective only)."""
        if len(self.session.directions) != 1:
            return None

        def should_prune(step: int, loss: float) -> bool:
            trial.report(loss, step)
            return trial.should_prune()

        return should_prune

    def _run_with_rungs(self, trial: optuna.trial.Trial, candidate: Candidate) -> TrialOutcome:
        """Run under the promotion rule: scored at each rung, on only if promotable, else paused
        with its checkpoints kept for a later continuation. A trial that continues a paused one,
        or retries an interrupted one, takes over its checkpoints first."""
        life, number, fidelity = self.session.trials, trial.number, self.config.fidelity
        run_dir = self.locations.trial_dir(number) / "run"
        start_rung, decisions = 0, []
        earlier_number = trial.user_attrs.get(ATTR_CONTINUES, trial.user_attrs.get(ATTR_RETRY_OF))
        if earlier_number is not None:
            earlier = self.session.study.trial(earlier_number)
            earlier_run = self.locations.trial_dir(earlier_number) / "run"
            start_rung = rungs.take_over(self.session.study, number, earlier, earlier_run, run_dir, fidelity.rungs)
            if start_rung:
                message = f"trial {number}: continues trial {earlier_number} from its checkpoint at rung {start_rung} ({fidelity.rungs[start_rung - 1]} steps)"
            else:
                message = f"trial {number}: runs trial {earlier_number} again"
            self.console.print(message, highlight=False)

        def goes_on(index: int, steps: int, score: float | None) -> bool:
            if index + 1 == len(fidelity.rungs):
                return True
            nominal = fidelity.rungs[index]  # the rung as declared (a compute-matched trial trains its own steps)
            with self._lock:  # the claims read the same study
                view = self.session.study.view()
                decision = rungs.by_promotion(
                    view, number, index, nominal, score, fidelity.keep, self.session.directions[0], self.config.rung_keys[index], view.all_drawn(self.config.trials)
                )
            decisions.append(decision)
            return decision.go_on

        outcome = life.run(number, candidate, self.locations.trial_dir(number), run_dir=run_dir, start_rung=start_rung, goes_on=goes_on, threads=self._spare_threads)
        recorded = decisions[-1].applied_to(outcome) if decisions else outcome
        if recorded.status != "paused":
            shutil.rmtree(run_dir, ignore_errors=True)  # the trial never continues: its checkpoints are spent
        return recorded
