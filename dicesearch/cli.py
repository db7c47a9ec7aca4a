"""The ``dicesearch`` command line."""

from __future__ import annotations

import json
import sys
import typing
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from dicesearch.errors import DicesearchError, SpecError

console = Console()
err_console = Console(stderr=True)


def _fail(message: str, code: int = 2) -> typing.NoReturn:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    sys.exit(code)


class _Group(click.Group):
    """Turns user errors into one line on stderr and exit status 2 (no traceback)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except DicesearchError as exc:
            _fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted", 130)


@click.group(cls=_Group)
@click.version_option(package_name="dicesearch")
def main() -> None:
    """Search diffusion-model backbones from declarative specs."""


def _type_name(annotation) -> str:
    """int, float | None, 'gelu' | 'silu' ... for humans."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " | ".join(_type_name(a) for a in args)
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation))


@main.command()
def plugins() -> None:
    """List installed blocks and conditioning methods, their parameters and providers."""
    from dicesearch.registry import default_registry

    registry = default_registry()
    for title, entries in (("blocks", registry.blocks), ("conditioning methods", registry.conditionings)):
        console.print(f"[bold]{title}[/]")
        for name, reg in sorted(entries.items()):
            console.print(f"  [bold cyan]{name}[/]  from {reg.distribution} ({reg.source})", highlight=False)
            if reg.type.description:
                console.print(f"      {reg.type.description}", highlight=False)
            for field_name, f in reg.type.params.model_fields.items():
                default = "required" if f.is_required() else ("auto" if f.default is None else repr(f.default))
                console.print(
                    f"      {field_name}: {_type_name(f.annotation)} = {default}"
                    + (f"  [dim]# {f.description}[/]" if f.description else ""),
                    highlight=False,
                )
        console.print()
    for problem in registry.load_errors:
        err_console.print(f"[yellow]warning:[/] {problem}", highlight=False)


@main.command()
def presets() -> None:
    """List the shipped model presets."""
    from dicesearch.spec import list_presets

    for name, path in list_presets().items():
        console.print(f"{name:14s} {path}", highlight=False)


@main.command()
@click.argument("spec")
def validate(spec: str) -> None:
    """Validate a spec file or preset; print every problem, one line each."""
    from dicesearch.spec import load_spec

    try:
        model_spec = load_spec(spec)
    except SpecError as exc:
        for line in getattr(exc, "lines", [str(exc)]):
            err_console.print(f"[bold red]error:[/] {line}", highlight=False, soft_wrap=True)
        sys.exit(2)
    stages = ", ".join(f"{s.block.kind} x{s.depth} @ {model_spec.grid(i)}x{model_spec.grid(i)}" for i, s in enumerate(model_spec.stages))
    console.print(f"ok: {model_spec.name}: {len(model_spec.stages)} stage(s): {stages}", highlight=False)


@main.command()
@click.argument("spec")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Write the resolved spec here instead of stdout.")
def resolve(spec: str, output: Path | None) -> None:
    """Print a spec with every default filled in (the form saved with every run)."""
    from dicesearch.spec import dump_spec, load_spec

    text = dump_spec(load_spec(spec))
    if output:
        output.write_text(text)
        console.print(f"wrote {output}")
    else:
        click.echo(text, nl=False)


@main.command()
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Write the JSON Schema here instead of stdout.")
def schema(output: Path | None) -> None:
    """Write the JSON Schema of model specs (for editor completion)."""
    from dicesearch.registry import default_registry

    text = json.dumps(default_registry().spec_types.ModelSpec.model_json_schema(), indent=2)
    if output:
        output.write_text(text + "\n")
        console.print(f"wrote {output}")
    else:
        click.echo(text)


def _count(n: float) -> str:
    return f"{n:,.0f}"


@main.command()
@click.argument("spec")
@click.option("--steps", default=250, show_default=True, help="Sampling steps per sample (DICE/DiT: 250 DDPM steps).")
@click.option("--batch-size", default=1, show_default=True, help="Batch size for the throughput measurement.")
@click.option("--timed-forwards", default=3, show_default=True, help="Forwards timed to extrapolate samples/s.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:1 or auto.")
def profile(spec: str, steps: int, batch_size: int, timed_forwards: int, device: str) -> None:
    """Static analysis of a spec or preset (DICE Tab. 2): params, multiply-adds, FLOPs, samples/s."""
    import torch

    from dicesearch.analysis.profile import profile_spec
    from dicesearch.spec import load_spec

    model_spec = load_spec(spec)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    with console.status(f"building {model_spec.name} and timing {timed_forwards} forwards on {device}..."):
        p = profile_spec(model_spec, device=device, sampling_steps=steps, batch_size=batch_size, timed_forwards=timed_forwards)
    table = Table(title=f"{p.name} on {p.device}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("parameters (trainable)", _count(p.trainable_parameters))
    if p.parameters != p.trainable_parameters:
        table.add_row("parameters (all, incl. frozen tables)", _count(p.parameters))
    table.add_row("multiply-adds / forward (G)", f"{p.macs / 1e9:.2f}")
    table.add_row("FLOPs / forward (G)", f"{p.flops / 1e9:.2f}")
    table.add_row(f"samples/s ({p.sampling_steps} steps, batch {p.batch_size})", f"{p.samples_per_second:.4g}")
    table.add_row("seconds / forward", f"{p.seconds_per_forward:.3f} (mean of {p.timed_forwards})")
    console.print(table)
    stages = Table(title="parameters per stage")
    for column in ("stage", "block", "grid", "channels", "depth", "parameters"):
        stages.add_column(column, justify="right" if column in ("channels", "depth", "parameters") else "left")
    for s in p.stages:
        stages.add_row(str(s.index), s.block, f"{s.grid}x{s.grid}", str(s.channels), str(s.depth), _count(s.parameters))
    stages.add_row("shared", "conditioning", "", "", "", _count(p.shared_parameters))
    console.print(stages)


@main.command()
@click.argument("search_space", type=click.Path(dir_okay=False))
@click.option("--trials", type=click.IntRange(min=1), help="Override the file's number of trials.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), help="Trial folders and plots (default runs/<study>).")
@click.option("--storage", help="Optuna storage URL (default: the file's, else sqlite:///optuna.db).")
@click.option("--tracking-uri", help="MLflow tracking URI (default: the file's, else sqlite:///mlflow.db; an http:// server works too).")
@click.option("--device", default="auto", show_default=True, help="Where trials train: auto, cpu, cuda.")
def sweep(search_space: str, trials: int | None, out_dir: Path | None, storage: str | None, tracking_uri: str | None, device: str) -> None:
    """Run (or resume) the sweep a search-space file describes."""
    from dicesearch.sweep.cli import run_sweep

    run_sweep(search_space, console, trials=trials, out_dir=out_dir, storage=storage, tracking_uri=tracking_uri, device=device)


@main.command()
@click.argument("search_space", type=click.Path(dir_okay=False))
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=Path("best.yaml"), show_default=True)
@click.option("--trial", "trial_number", type=int, help="Export this trial (e.g. a Pareto point) instead of the best.")
@click.option("--storage", help="Optuna storage URL, if not the search space's.")
def export(search_space: str, output: Path, trial_number: int | None, storage: str | None) -> None:
    """Write the best trial's (or a chosen trial's) full spec to YAML for `dicesearch train`."""
    from dicesearch.sweep.cli import export_best

    export_best(search_space, output, trial_number, storage, console)
