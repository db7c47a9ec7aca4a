"""``dicesearch compare``: models trained paired over seeds at equal cost, and a verdict (the work is in ``dicesearch.compare``)."""

from __future__ import annotations

from pathlib import Path

import click

from dicesearch.cli.app import console, inception_logits_option, inception_weights_option, main


def _fractions(ctx, param, value):
    if value is None:
        return None
    try:
        return tuple(float(part) for part in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r}: give fractions of the budget separated by commas, e.g. 0.25,0.5,1") from None


@main.command()
@click.argument("models", nargs=-1, required=True)
@click.option("--seeds", type=click.IntRange(min=1), help="Seeds per model (default: the file's, else 3).")
@click.option("--baseline", help="The model every other is compared with (default: the first).")
@click.option("--match", type=click.Choice(["steps", "flops", "seconds"]), help="What every model gets equally (default: steps).")
@click.option("--steps", type=click.IntRange(min=1), help="Optimiser steps per model (match: steps).")
@click.option("--flops", type=click.FloatRange(min=0, min_open=True), help="Training FLOPs per model (match: flops), e.g. 2e12.")
@click.option("--seconds", type=click.FloatRange(min=0, min_open=True), help="Seconds of training per model on this device (match: seconds).")
@click.option("--fid-samples", type=click.IntRange(min=1), help="N of fid_N (default: the file's, else 128).")
@click.option("--eval-at", callback=_fractions, help="Also score at these fractions of the budget, e.g. 0.25,0.5,1 (the compute curve).")
@click.option("--name", help="The comparison's name: its study, runs/<name> and MLflow parent run (default: from the models).")
@click.option("--parallelism", type=click.IntRange(min=1), help="Trainings at once, each in its own process (default 2).")
@click.option("--backend", type=click.Choice(["optuna", "ray"]), help="Who runs the trainings (default: optuna).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), help="The comparison's folder (default runs/<name>).")
@click.option("--storage", help="Optuna storage URL (default: the file's, else sqlite:///optuna.db).")
@click.option("--tracking-uri", help="MLflow tracking URI (default: the file's, else sqlite:///mlflow.db).")
@click.option("--device", default="auto", show_default=True, help="Where the models train: auto, cpu, cuda.")
@inception_weights_option
@inception_logits_option
def compare(models, seeds, baseline, match, steps, flops, seconds, fid_samples, eval_at, name, parallelism, backend, out_dir, storage, tracking_uri, device) -> None:
    """Train MODELS paired over seeds at equal cost and say which is better, with intervals.

    MODELS: presets (DiT-digits), spec files (best.yaml), a finished sweep's search space
    (its best trial; SPACE.yaml:top3 for its best 3), or one comparison file (with models:).
    Re-running the same command resumes it.
    """
    from dicesearch.compare.command import run_comparison
    from dicesearch.compare.run import Overrides
    from dicesearch.metrics.inception import check_fid_network

    check_fid_network()  # every run scores FID: without the network, say what to install now
    overrides = Overrides(
        name=name, seeds=seeds, baseline=baseline, match=match, steps=steps, flops=flops, seconds=seconds,
        fid_samples=fid_samples, eval_at=eval_at, parallelism=parallelism, backend=backend,
    )  # fmt: skip
    run_comparison(models, console, overrides, out_dir=out_dir, storage=storage, tracking_uri=tracking_uri, device=device)
