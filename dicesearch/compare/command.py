"""``dicesearch compare``: plan, run every model x seed through the sweep backends, judge, report."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from dicesearch.compare.report import ComparisonFailed, report
from dicesearch.compare.run import Overrides, build_plan, load_comparison, load_plan, out_folder, plan_comparison, write_plan


def run_comparison(
    arguments: Sequence[str],
    console: Console,
    overrides: Overrides = Overrides(),
    *,
    out_dir: Path | None = None,
    storage: str | None = None,
    tracking_uri: str | None = None,
    device: str = "auto",
) -> Path:
    """Run (or resume) a comparison; returns the folder of its report."""
    from dicesearch.registry import default_registry
    from dicesearch.speed import collector
    from dicesearch.sweep.commands import print_native_note, quiet_libraries
    from dicesearch.sweep.store.locations import SweepLocations
    from dicesearch.sweep.store.studies import probe_storage

    if not console.is_terminal:
        console.width = max(console.width, 160)
    with collector.paused(), contextlib.ExitStack() as beside:  # no collector until the workers begin (dicesearch.speed.collector)
        quiet_libraries()
        registry = default_registry()
        config, source, relative_to, _ = load_comparison(arguments, overrides)
        out = out_folder(config, out_dir)
        planned = plan_comparison(config, source, relative_to, out, registry, device, console)
        plan = build_plan(config, planned, out, registry)
        locations = SweepLocations.for_config(plan.config, out, storage, tracking_uri)
        probe_storage(locations.storage_url)
        console.print(plan_table(plan))
        console.print(
            f"compare [bold]{config.name}[/]: {len(planned)} models x {len(plan.seeds)} seeds = {plan.config.trials} runs "
            f"({config.backend}, {config.parallelism} at once), baseline {plan.baseline}; study in {locations.storage_url}, "
            f"MLflow in {locations.tracking_uri}",
            highlight=False,
        )
        print_native_note(console, device)
        write_plan(Path(plan.source), config, planned)
        if config.backend == "ray":
            from dicesearch.sweep.backends.ray_tune.sweep import RaySweep

            runner = RaySweep(plan, locations, console, device, load=load_plan)
        else:
            from dicesearch.sweep.backends.optuna_workers import OptunaSweep

            runner = OptunaSweep(plan, locations, console, device)
        if config.backend != "ray":  # each seed's FID reference statistics, computed beside the first runs
            from dicesearch.sweep.lifecycle.reference_ahead import ReferenceAhead

            reference = ReferenceAhead.start(plan.config.data, plan.config.budget, plan.seeds, device)
            if reference is not None:
                beside.callback(reference.close)
        try:
            result = runner.run()
        except KeyboardInterrupt:
            again = " ".join(arguments)
            console.print(f"\n[yellow]interrupted.[/] Finished runs are kept; run the same command to resume:\n  dicesearch compare {again}")
            raise SystemExit(130) from None
    return report(result.study, plan, out / "report", runner.mirror, console)


def plan_table(plan) -> Table:
    """The models as planned: where each came from, and the steps and FLOPs its budget buys."""
    budget = plan.comparison.budget
    what = {
        "steps": lambda: f"{budget.train_steps} steps each",
        "flops": lambda: f"{budget.train_flops:.3g} training FLOPs each",
        "seconds": lambda: f"{budget.train_seconds:g} s of training each",
    }[budget.match]()
    table = Table(title=f"the models, compute-matched by {budget.match} ({what})", title_justify="left")
    for column in ("model", "from", "steps", "training FLOPs", "s / step"):
        table.add_column(column, no_wrap=column != "from")
    for model in plan.models:
        baseline = " (baseline)" if model.name == plan.baseline else ""
        seconds = f"{model.step_seconds:.3g}" if model.step_seconds is not None else "-"
        table.add_row(model.name + baseline, model.origin, str(model.steps), f"{model.train_flops:.3g}", seconds)
    return table


__all__ = ["ComparisonFailed", "plan_table", "run_comparison"]
