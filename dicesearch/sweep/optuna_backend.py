"""``dicesearch sweep`` with the Optuna backend: claim, sample, gate, train in a child process.

Per trial: claim a trial in the study (never more than the sweep's total, whatever other
workers do); sample a spec from the search space with a sampler seeded from (seed, trial
number); pass it through the budget gate (:mod:`dicesearch.sweep.gate`; an invalid or
over-budget configuration costs no training step); run the request in a fresh process
(:func:`~dicesearch.sweep.trial_process.run_trial`: progress feeds the pruner, a wall-clock
limit stops it); record the outcome (:class:`~dicesearch.sweep.session.SweepSession`).
Re-running the same command resumes the study.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import optuna
from rich.console import Console

from dicesearch.errors import SpecError
from dicesearch.provenance import recorded_spec_yaml
from dicesearch.sweep import gate
from dicesearch.sweep.locations import SweepLocations
from dicesearch.sweep.record import ATTR_RETRY_OF, ATTR_WORKER, STATUS_SURPLUS
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
        return self.session.finish(result)

    def _claim(self) -> optuna.trial.Trial | None:
        """The next trial to run, or None once the sweep has its number of trials.

        Other sweep processes may share the study: a trial this one creates after the study
        already has its number of trials (counting those running anywhere) is marked
        surplus and not run, so parallel workers never run more trials than asked.
        """
        study, total = self.session.study, self.space.config.trials
        with self._lock:
            if len(study.counted()) + len(study.running()) >= total:
                return None
            trial = study.study.ask()
            trial.set_user_attr(ATTR_WORKER, this_worker())
            if study.rank_among_live(trial.number) >= total:
                study.end(trial.number, STATUS_SURPLUS, "not run: other workers already hold the study's trials")
                return None
            return trial

    def _sample(self, trial: optuna.trial.Trial):
        """The trial's spec and values, drawn by a sampler seeded from (seed, trial number): two
        sweep processes on one study (or a resumed sweep) never repeat each other's draws."""
        with self._lock:  # the study's sampler is shared by this process's worker threads
            self.session.study.study.sampler = make_sampler(self.session.directions, self.space.config.seed + trial.number)
            return self.space.sample(trial)

    def _worker_loop(self) -> None:
        while (trial := self._claim()) is not None:
            try:
                self._run_one(trial)
            except KeyboardInterrupt:
                self.session.interrupt(trial.number, "interrupted: the sweep was stopped (Ctrl-C) during this trial")
                if trial.params:
                    self.session.study.study.enqueue_trial(trial.params, user_attrs={ATTR_RETRY_OF: trial.number})
                raise

    # -- one trial ---------------------------------------------------------------------------------

    def _run_one(self, trial: optuna.trial.Trial) -> None:
        number = trial.number
        try:
            spec, values = self._sample(trial)
        except SpecError as exc:
            self.session.record(number, TrialOutcome(status="invalid", reason=f"invalid configuration: {exc}"))
            return
        spec_yaml = recorded_spec_yaml(spec, self.space.registry)  # with the plugins' distributions and versions
        if self.session.reuse(number, values, spec_yaml, spec_summary(spec)):
            return
        settings = self.settings
        assessment = gate.assess(spec, settings.memory, settings.memory_batch, lambda message: self.console.print(f"[yellow]warning:[/] {message}"))
        self.session.begin_trial(number, values, spec_yaml, spec_summary(spec))
        if assessment.rejection:
            self.session.record(number, TrialOutcome(status="rejected", reason=assessment.rejection, metrics=assessment.metrics))
            return
        # counted above unless counting failed there
        request = settings.request(spec_yaml, self.locations.trial_dir(number), count_static=not assessment.metrics.get("params"))
        self.session.announce(number, values)
        single = len(self.session.directions) == 1

        def on_report(step: int, loss: float) -> bool:
            self.mirror.log_loss(number, step, loss)
            if not single:
                return False
            trial.report(loss, step)
            return trial.should_prune()

        outcome = run_trial(request, on_report, time_limit_s=settings.time_limit_s)
        self.session.record(number, outcome.with_metrics(assessment.metrics))
