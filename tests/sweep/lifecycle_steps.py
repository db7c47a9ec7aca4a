"""The lifecycle's steps driven alone, without either backend (for the tests of tests/sweep)."""

import os


def finish_trial(study, mirror, number, outcome, metric_keys, directions, budget_gb):
    """The lifecycle's finish step alone, as either backend calls it: trial ``number``'s outcome
    becomes its record (one write), its MLflow run and a console line."""
    from rich.console import Console

    from dicesearch.data import DigitsSpec
    from dicesearch.objective import Budget
    from dicesearch.sweep.lifecycle.messages import TrialSettings
    from dicesearch.sweep.lifecycle.progress import TrialProgress
    from dicesearch.sweep.lifecycle.trial import TrialLifecycle
    from dicesearch.sweep.space.config import MemoryBudget

    console = Console(file=open(os.devnull, "w"))
    settings = TrialSettings(
        data=DigitsSpec(), budget=Budget(), memory=MemoryBudget(budget_gb=budget_gb), memory_batch=8, seed=0,
        metric_keys=tuple(metric_keys), directions=tuple(directions),
    )  # fmt: skip
    life = TrialLifecycle(study, mirror, console, TrialProgress(console, 1), settings, registry=None)
    return life.finish(number, outcome)
