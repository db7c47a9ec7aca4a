"""``dicesearch sweep`` with the Optuna backend: claim, sample, gate, train in a child process.

Per trial: claim a trial in the study (never more than the sweep's total, whatever other
workers do); sample a spec from the search space with a sampler seeded from (seed, trial
number); pass it through the budget gate (:mod:`dicesearch.sweep.gate`; an invalid or
over-budget configuration costs no training step); run the request in a fresh process
(:func:`~dicesearch.sweep.trial_process.run_trial`: progress feeds the pruner, a wall-clock
limit stops it); record the outcome (:class:`~dicesearch.sweep.session.SweepSession`).
Re-running the same command resumes the study.

With ``fidelity`` rungs the claim comes first from the paused trials (the promotion form of
asynchronous successive halving, :mod:`dicesearch.sweep.fidelity`): a paused trial that later
trials have made promotable is continued, from its rung checkpoint, by a new trial before any
new configuration is drawn.
"""

from __future__ import annotations

import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import optuna
from rich.console import Console

from dicesearch.errors import SpecError
from dicesearch.provenance import recorded_spec_yaml
from dicesearch.sweep import gate
from dicesearch.sweep.locations import SweepLocations
from dicesearch.sweep.fidelity import pause_reason, promotable
from dicesearch.sweep.record import ATTR_CONTINUES, ATTR_RETRY_OF, ATTR_RUNGS, ATTR_WORKER, STATUS_PAUSED, STATUS_SURPLUS
from dicesearch.sweep.search_space import SearchSpace
from dicesearch.sweep.session import SweepResult, SweepSession, sweep_params
from dicesearch.sweep.studies import make_pruner, make_sampler, this_worker
from dicesearch.sweep.trial import TrialOutcome, TrialSettings, spec_summary
from dicesearch.sweep.trial_process import run_trial


class OptunaSweep:
    def __init__(self, space: SearchSpace, locations: SweepLocations, console: Console | None = None, device: str = "auto"):
        self.space, self.locations = space, locations
        self.session = SweepSession(space, locations, console)
        self.console = self.session.console
        self.settings = TrialSettings.for_sweep(space.config, device)
        self._lock = threading.Lock()
        self._active = 0  # trials this process is running

    @property
    def mirror(self):
        return self.session.mirror

    # -- the loop ----------------------------------------------------------------------------------

    def run(self) -> SweepResult:
        config = self.space.config
        steps = config.budget.train_steps * config.replicates  # replicate r reports as r * train_steps + step
        pruner = make_pruner(config.pruner, config.objective.directions, steps, config.budget.report_every)
        result = self.session.open(sweep_params(config), pruner)
        try:
            with ThreadPoolExecutor(max_workers=config.parallelism) as pool:
                list(pool.map(lambda _: self._worker_loop(), range(config.parallelism)))
        except KeyboardInterrupt:
            self.session.stopped("KILLED")
            raise
        if config.fidelity:
            for trial in self.session.study.paused():  # never continued: their checkpoints are spent
                shutil.rmtree(self.locations.trial_dir(trial.number) / "run", ignore_errors=True)
        return self.session.finish(result)

    def _claim(self) -> optuna.trial.Trial | None:
        """The next trial to run, or None once the sweep has its number of trials.

        With rungs, a paused trial that has become promotable comes first (a new trial that
        continues it). Other sweep processes may share the study: a trial this one creates
        after the study already has its number of trials (counting those running anywhere) is
        marked surplus and not run, so parallel workers never run more trials than asked.
        """
        study, total = self.session.study, self.space.config.trials
        with self._lock:
            paused = self._promotable_paused()
            if paused is not None:
                study.study.enqueue_trial(paused.params, user_attrs={ATTR_CONTINUES: paused.number}, skip_if_exists=False)
                trial = study.study.ask()
                trial.set_user_attr(ATTR_WORKER, this_worker())
                return trial
            if self._all_drawn():
                return None
            trial = study.study.ask()
            trial.set_user_attr(ATTR_WORKER, this_worker())
            if study.rank_among_live(trial.number) >= total:
                study.end(trial.number, STATUS_SURPLUS, "not run: other workers already hold the study's trials")
                return None
            return trial

    def _all_drawn(self) -> bool:
        """Whether the study holds (finished or running) all the sweep's configurations."""
        study = self.session.study
        return len(study.counted()) + len(study.running()) >= self.space.config.trials

    def _promotable_paused(self):
        """A paused trial now among the promotable at its rung (the highest rung first), or None."""
        fidelity = self.space.config.fidelity
        if fidelity is None:
            return None
        paused = {t.number: t for t in self.session.study.paused()}
        if not paused:
            return None
        study, final, direction = self.session.study, self._all_drawn(), self.session.directions[0]
        for steps in reversed(fidelity.rungs[:-1]):
            for number in promotable(study.entries_at(steps), fidelity.keep, direction, final, study.promoted_from(steps)):
                if number in paused and max(paused[number].intermediate_values) == steps:
                    return paused[number]
        return None

    def _sample(self, trial: optuna.trial.Trial):
        """The trial's spec and values, drawn by a sampler seeded from (seed, trial number): two
        sweep processes on one study (or a resumed sweep) never repeat each other's draws."""
        with self._lock:  # the study's sampler is shared by this process's worker threads
            self.session.study.study.sampler = make_sampler(self.session.directions, self.space.config.seed + trial.number)
            return self.space.sample(trial)

    def _worker_loop(self) -> None:
        while True:
            trial = self._claim()
            if trial is None:
                with self._lock:
                    others = self._active
                if others and self.space.config.fidelity:  # a running trial may yet make a paused one promotable
                    time.sleep(1.0)
                    continue
                return
            with self._lock:
                self._active += 1
            try:
                self._run_one(trial)
            except KeyboardInterrupt:
                self.session.interrupt(trial.number, "interrupted: the sweep was stopped (Ctrl-C) during this trial")
                if trial.params:
                    self.session.study.study.enqueue_trial(trial.params, user_attrs={ATTR_RETRY_OF: trial.number})
                raise
            finally:
                with self._lock:
                    self._active -= 1

    # -- one trial ---------------------------------------------------------------------------------

    def _run_one(self, trial: optuna.trial.Trial) -> None:
        number = trial.number
        try:
            spec, values = self._sample(trial)
        except SpecError as exc:
            self.session.record(number, TrialOutcome(status="invalid", reason=f"invalid configuration: {exc}"))
            return
        spec_yaml = recorded_spec_yaml(spec, self.space.registry)  # with the plugins' distributions and versions
        continuation = ATTR_CONTINUES in trial.user_attrs  # the paused trial's own configuration: not a duplicate of it
        if not continuation and self.session.reuse(number, values, spec_yaml, spec_summary(spec)):
            return
        settings = self.settings
        assessment = gate.assess(spec, settings.memory, settings.memory_batch, lambda message: self.console.print(f"[yellow]warning:[/] {message}"))
        self.session.begin_trial(number, values, spec_yaml, spec_summary(spec))
        if assessment.rejection:
            self.session.record(number, TrialOutcome(status="rejected", reason=assessment.rejection, metrics=assessment.metrics))
            return
        self.session.announce(number, values)
        single = len(self.session.directions) == 1
        rung_run = _RungRun(self, trial) if self.space.config.fidelity else None

        def on_report(step: int, loss: float) -> bool:
            self.mirror.log_loss(number, step, loss)
            self.session.progress.step(number, step, loss)
            if not single or rung_run is not None:  # rungs stop trials on their scores, not the loss
                return False
            trial.report(loss, step)
            return trial.should_prune()

        # counted above unless counting failed there
        count_static = not assessment.metrics.get("params")
        if rung_run is None:
            request = settings.request(spec_yaml, self.locations.trial_dir(number), count_static=count_static)
            outcome = run_trial(request, on_report, time_limit_s=settings.time_limit_s)
        else:
            request = settings.request(spec_yaml, self.locations.trial_dir(number), count_static, rung_run.run_dir, rung_run.start_rung)
            outcome = rung_run.finished(run_trial(request, on_report, time_limit_s=settings.time_limit_s, on_rung=rung_run.on_rung))
        self.session.record(number, outcome.with_metrics(assessment.metrics))


class _RungRun:
    """One trial under multi-fidelity: where its rung checkpoints are, which rung it starts at
    (a trial that continues a paused one, or retries an interrupted one, takes over that
    trial's checkpoints and continues from its last rung), and the promotion rule applied at
    each rung (:mod:`dicesearch.sweep.fidelity`)."""

    def __init__(self, sweep: OptunaSweep, trial: optuna.trial.Trial):
        self.sweep, self.session, self.number = sweep, sweep.session, trial.number
        self.fidelity = sweep.space.config.fidelity
        self.key, self.direction = sweep.session.metric_keys[0], sweep.session.directions[0]
        self.run_dir = sweep.locations.trial_dir(trial.number) / "run"
        self.start_rung, self.stopped, self.paused = 0, "", False
        earlier_number = trial.user_attrs.get(ATTR_CONTINUES, trial.user_attrs.get(ATTR_RETRY_OF))
        if earlier_number is None:
            return
        earlier = sweep.session.study.trial(earlier_number)
        earlier_run = sweep.locations.trial_dir(earlier_number) / "run"
        rungs = list(self.fidelity.rungs)
        if earlier.intermediate_values and earlier_run.is_dir():
            done = [step for step in rungs if step in earlier.intermediate_values]
            self.start_rung = min(len(done), len(rungs) - 1)
            if earlier_run != self.run_dir:
                self.run_dir.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(earlier_run), str(self.run_dir))  # this trial's own from now on (a retry of it finds them here)
            for step in done[: self.start_rung]:  # the scores it already has, as this trial's own
                self.session.study.report(self.number, earlier.intermediate_values[step], step)
            self.session.study.set_attrs(self.number, {ATTR_RUNGS: earlier.user_attrs.get(ATTR_RUNGS, [])[: self.start_rung]})
        if self.start_rung:
            message = f"trial {self.number}: continues trial {earlier_number} from its checkpoint at rung {self.start_rung} ({rungs[self.start_rung - 1]} steps)"
        else:
            message = f"trial {self.number}: runs trial {earlier_number} again"
        sweep.console.print(message, highlight=False)

    def on_rung(self, index: int, steps: int, metrics: dict) -> bool:
        rungs = len(self.fidelity.rungs)
        score = self.session.record_rung(self.number, index, steps, metrics, rungs)
        if index + 1 == rungs:
            return True
        if score is None:
            self.stopped = f"failed: no {self.key} at rung {index + 1} ({steps} steps)"
            return False
        with self.sweep._lock:  # the backend's lock: its claims read the same study
            study = self.session.study
            entries, final, promoted = study.entries_at(steps), self.sweep._all_drawn(), study.promoted_from(steps, self.number)
        if self.number in promotable(entries, self.fidelity.keep, self.direction, final, promoted):
            return True
        self.stopped = pause_reason(index, steps, self.key, score, len(entries), self.fidelity.keep, final, len(promoted))
        self.paused = True
        return False

    def finished(self, outcome: TrialOutcome) -> TrialOutcome:
        """The outcome as recorded: stopped at a rung it is paused there (its checkpoints kept
        for a later continuation), with that rung's scores."""
        if not (outcome.status == "complete" and self.paused):
            shutil.rmtree(self.run_dir, ignore_errors=True)  # the trial never continues: its checkpoints are spent
        if outcome.status == "complete" and self.stopped:
            status = STATUS_PAUSED if self.paused else "failed"
            return outcome.model_copy(update={"status": status, "reason": self.stopped})
        return outcome
