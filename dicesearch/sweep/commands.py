"""What ``dicesearch sweep`` and ``dicesearch export`` do, kept out of the click layer."""

from __future__ import annotations

import contextlib
import datetime
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from dicesearch.errors import DicesearchError, printable


class SweepFailed(DicesearchError):
    """A sweep ended without a single scored trial (exit status 1: the input may be fine)."""

    exit_code = 1


def quiet_libraries() -> None:
    """Optuna's "a new study created" and MLflow's database-migration INFO lines say nothing the
    sweep's own lines do not; their warnings still show."""
    import logging

    import mlflow  # noqa: F401  (it sets its loggers' levels when imported: import it first)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _data_args(space) -> str:
    data = space.config.data
    if data.kind == "digits":
        return " --data-kind digits"
    return f" --data-kind {data.kind} --data-path {data.path}"


def print_native_note(console: Console, device: str) -> None:
    """Say so where CPU runs will train without the native kernels (built here, before any run needs them)."""
    from dicesearch.devices import resolve_device
    from dicesearch.speed.kernels import native_note

    note = native_note(resolve_device(device))
    if note is not None:
        console.print(f"note: {note}", highlight=False, soft_wrap=True)


def run_sweep(path: str, console: Console, *, trials=None, out_dir=None, storage=None, tracking_uri=None, device="auto") -> None:
    from dicesearch.speed import collector
    from dicesearch.sweep.results.ahead import PlotsAhead
    from dicesearch.sweep.space.search_space import read_sweep_config

    if not console.is_terminal:  # a log file: lines need not wrap at 80 columns
        console.width = max(console.width, 160)
    with collector.paused(), contextlib.ExitStack() as beside:  # no collector until the workers begin; the processes beside the sweep end with it
        sweep_config = read_sweep_config(path)
        if sweep_config.backend != "ray":
            from dicesearch.sweep.lifecycle.process import start_trial_server

            start_trial_server()  # its imports and the FID network overlap this process's imports, the space, its checks and the stores
        quiet_libraries()
        ahead = PlotsAhead.for_sweep(sweep_config)
        if ahead is not None:
            ahead.start()  # its imports too, at the lowest priority
            beside.callback(ahead.close)
        _run_sweep(path, console, ahead, beside, trials=trials, out_dir=out_dir, storage=storage, tracking_uri=tracking_uri, device=device)


def _run_sweep(path: str, console: Console, ahead, beside: contextlib.ExitStack, *, trials, out_dir, storage, tracking_uri, device) -> None:
    from dicesearch.sweep.prechecks import check_budget_reachable, check_data, check_trial_memory
    from dicesearch.sweep.results.plots import importance_note, save_plots
    from dicesearch.sweep.results.summary import cost_line, rung_agreement_line
    from dicesearch.sweep.results.table import failure_summary, ranked_table
    from dicesearch.sweep.space.search_space import load_search_space
    from dicesearch.sweep.store.locations import SweepLocations
    from dicesearch.sweep.store.studies import probe_storage

    space = load_search_space(path)
    if trials is not None:
        space.config = space.config.model_copy(update={"trials": trials})
    paths = SweepLocations.for_config(space.config, out_dir, storage, tracking_uri)  # checks --storage; writes nothing
    check_data(space)  # before anything is written: these would fail every trial
    check_budget_reachable(space)
    check_trial_memory(space, device)
    probe_storage(paths.storage_url)
    config = space.config
    if config.backend != "ray":  # the trials' FID reference statistics, computed beside the sweep's start
        from dicesearch.sweep.lifecycle.reference_ahead import ReferenceAhead

        reference = ReferenceAhead.start(config.data, config.budget, [config.seed], device)
        if reference is not None:
            beside.callback(reference.close)
    console.print(
        f"sweep [bold]{config.resolved_study_name}[/]: {config.trials} trials ({config.backend}), objective "
        f"{', '.join(config.objective.metrics)}; study in {paths.storage_url}, MLflow in {paths.tracking_uri}",
        highlight=False,
    )
    from dicesearch.metrics.inception_score import UNAVAILABLE, logits_network_path

    if logits_network_path() is None:
        console.print(f"note: {UNAVAILABLE}", highlight=False, soft_wrap=True)
    print_native_note(console, device)
    if config.backend == "ray":
        from dicesearch.sweep.backends.ray_tune.sweep import RaySweep

        runner = RaySweep(space, paths, console, device)
    else:
        from dicesearch.sweep.backends.optuna_workers import OptunaSweep

        runner = OptunaSweep(space, paths, console, device)
    if ahead is not None:
        runner.session.after_open.append(lambda study: ahead.watch(study, paths.out_dir / "plots", config.trials))
    started, clock = datetime.datetime.now(), time.monotonic()
    try:
        result = runner.run()
    except KeyboardInterrupt:  # (run_sweep ends the plots child)
        console.print(f"\n[yellow]interrupted.[/] Completed trials are saved; run the same command to resume:\n  dicesearch sweep {path}")
        raise SystemExit(130) from None
    drawn = ahead.take(result.study) if ahead is not None else None  # the score plots, if drawn while the last trials ran
    keys = config.metric_keys
    rungs = len(config.fidelity.rungs) if config.fidelity else None
    console.print(ranked_table(result.study, keys, rungs=rungs, rung_keys=config.rung_keys))
    failed = failure_summary(result.study)
    if failed is not None:  # nothing to plot or export: say why, and exit non-zero
        runner.mirror.end_sweep("FAILED")
        raise SweepFailed(f"{failed}; fix what the reasons say and run the same command again")
    first_rung = config.fidelity.rungs[0] if config.fidelity else None
    plots = save_plots(result.study, paths.out_dir / "plots", [config.rung_keys[0]] if config.fidelity else keys, first_rung, score_plots=drawn)
    lines = [importance_note(result.study, first_rung), cost_line(result.study, started, time.monotonic() - clock)]
    if config.fidelity:
        lines.append(rung_agreement_line(result.study, config.rung_keys, config.fidelity.rungs))
    for line in filter(None, lines):
        console.print(line, highlight=False)
    runner.mirror.end_sweep("FINISHED", plots)
    if result.mlflow_failures:
        console.print(f"[yellow]warning:[/] {result.mlflow_failures} MLflow call(s) failed; re-run the command to mirror the missing trials")
    if paths.tracking_uri == f"sqlite:///{Path('mlflow.db').absolute()}":
        ui = "mlflow ui   (in this directory; it reads ./mlflow.db) and open http://127.0.0.1:5000"
    elif paths.tracking_uri.startswith("sqlite"):
        ui = f"mlflow ui --backend-store-uri {paths.tracking_uri}   and open http://127.0.0.1:5000"
    else:
        ui = f"open {paths.tracking_uri}"
    console.print(f"\nCompare trials:  {ui}", highlight=False, soft_wrap=True)
    console.print(f"Plots:           {paths.out_dir / 'plots'}")
    console.print(f"Export the best: dicesearch export {path} -o best.yaml")


def export_best(path: str, output: Path, trial_number, storage, console: Console) -> None:
    from dicesearch.provenance import Provenance, mismatch_warning
    from dicesearch.sweep.results.export import export_trial, load_study
    from dicesearch.sweep.space.search_space import load_search_space
    from dicesearch.sweep.store.locations import SweepLocations
    from dicesearch.sweep.store.schema import ATTR_SPEC

    space = load_search_space(path)
    paths = SweepLocations.for_config(space.config, storage=storage)
    study = load_study(space.config.resolved_study_name, paths.storage_url)
    out, trial = export_trial(study, output, trial_number, _data_args(space))
    recorded = Provenance.from_header(trial.user_attrs.get(ATTR_SPEC) or "")
    mismatch = mismatch_warning(recorded, space.registry, f"trial {trial.number}")
    if mismatch:
        console.print(f"[yellow]warning:[/] {escape(printable(mismatch))}", highlight=False, soft_wrap=True)
    console.print(f"wrote {out} (trial {trial.number}); train it at full length:\n  dicesearch train {out}{_data_args(space)}")


def calibrate_space(path: str, console: Console, *, best: int, random_count: int, factor: float, fid_samples, storage, tracking_uri, out_dir, device) -> None:
    from dicesearch.sweep.prechecks import check_data
    from dicesearch.sweep.results.calibrate import calibrate, calibration_table, log_calibration
    from dicesearch.sweep.space.search_space import load_search_space
    from dicesearch.sweep.store.locations import SweepLocations
    from dicesearch.sweep.store.mlflow_mirror import MlflowMirror

    if not console.is_terminal:
        console.width = max(console.width, 160)
    quiet_libraries()
    space = load_search_space(path)
    check_data(space)
    paths = SweepLocations.for_config(space.config, out_dir, storage, tracking_uri)
    result = calibrate(space, paths, console, best=best, random_count=random_count, factor=factor, fid_samples=fid_samples, device=device)
    console.print(calibration_table(result))
    if result.agreement is None:
        console.print("[yellow]fewer than 3 long runs succeeded: no rank correlation[/]")
    else:
        console.print(result.agreement.text(), highlight=False)
    mirror = MlflowMirror(paths.tracking_uri, space.config.resolved_study_name, space.source)
    log_calibration(mirror, result, paths.out_dir / "calibrate")
    console.print(f"logged to MLflow under the sweep's parent run; pairs in {paths.out_dir / 'calibrate' / 'calibration.yaml'}", highlight=False)
