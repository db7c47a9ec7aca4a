"""Commands about sweeps: sweep, export, calibrate (the work is in ``dicesearch.sweep.commands``)."""

from __future__ import annotations

from pathlib import Path

import click

from dicesearch.cli.app import console, inception_logits_option, inception_weights_option, main



@main.command()
@click.argument("search_space", type=click.Path(dir_okay=False))
@click.option("--trials", type=click.IntRange(min=1), help="Override the file's number of trials.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), help="Trial folders and plots (default runs/<study>).")
@click.option("--storage", help="Optuna storage URL (default: the file's, else sqlite:///optuna.db).")
@click.option("--tracking-uri", help="MLflow tracking URI (default: the file's, else sqlite:///mlflow.db; an http:// server works too).")
@click.option("--device", default="auto", show_default=True, help="Where trials train: auto, cpu, cuda.")
@inception_weights_option
@inception_logits_option
def sweep(search_space: str, trials: int | None, out_dir: Path | None, storage: str | None, tracking_uri: str | None, device: str) -> None:
    """Run (or resume) the sweep a search-space file describes."""
    from dicesearch.metrics.inception import check_fid_network
    from dicesearch.sweep.commands import run_sweep

    check_fid_network()  # every trial scores FID: without the network, say what to install now

    run_sweep(search_space, console, trials=trials, out_dir=out_dir, storage=storage, tracking_uri=tracking_uri, device=device)


@main.command()
@click.argument("search_space", type=click.Path(dir_okay=False))
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=Path("best.yaml"), show_default=True)
@click.option("--trial", "trial_number", type=int, help="Export this trial (e.g. a Pareto point) instead of the best.")
@click.option("--storage", help="Optuna storage URL, if not the search space's.")
def export(search_space: str, output: Path, trial_number: int | None, storage: str | None) -> None:
    """Write the best trial's (or a chosen trial's) full spec to YAML for `dicesearch train`."""
    from dicesearch.sweep.commands import export_best

    export_best(search_space, output, trial_number, storage, console)


@main.command()
@click.argument("search_space", type=click.Path(dir_okay=False))
@click.option("--best", default=3, show_default=True, type=click.IntRange(min=0), help="Re-train the best N scored trials.")
@click.option("--random", "random_count", default=3, show_default=True, type=click.IntRange(min=0), help="...and N others drawn at random.")
@click.option("--factor", default=4.0, show_default=True, type=click.FloatRange(min=0, min_open=True), help="Training steps of the long run / the sweep's.")
@click.option("--fid-samples", type=click.IntRange(min=4), help="N of the long run's FID (default: the sweep's).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), help="The sweep's folder (default runs/<study>).")
@click.option("--storage", help="Optuna storage URL, if not the search space's.")
@click.option("--tracking-uri", help="MLflow tracking URI, if not the search space's.")
@click.option("--device", default="auto", show_default=True, help="Where the long runs train: auto, cpu, cuda.")
@inception_weights_option
@inception_logits_option
def calibrate(search_space, best, random_count, factor, fid_samples, out_dir, storage, tracking_uri, device) -> None:
    """Re-train chosen trials of a finished sweep longer: does the short run rank them as the long one does?"""
    from dicesearch.metrics.inception import check_fid_network
    from dicesearch.sweep.commands import calibrate_space

    check_fid_network()

    calibrate_space(
        search_space, console, best=best, random_count=random_count, factor=factor, fid_samples=fid_samples,
        storage=storage, tracking_uri=tracking_uri, out_dir=out_dir, device=device,
    )  # fmt: skip
