"""Commands about specs and plugins: plugins, new-plugin, presets, validate, resolve, schema, profile."""

from __future__ import annotations

import json
import math
import sys
import types
import typing
from pathlib import Path

import click
from rich.table import Table

from dicesearch.cli.app import console, error_line, main, warning_line
from dicesearch.errors import SpecError


_BOUNDS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="), ("multiple_of", "a multiple of"),
           ("min_length", "at least"), ("max_length", "at most"))  # fmt: skip


def _constraints(metadata) -> str:
    """' > 0', ' >= 0 and <= 1', ' at least 1' (items): what pydantic's constrained types require."""
    parts = []
    for item in metadata:
        for attr, word in _BOUNDS:
            value = getattr(item, attr, None)
            if value is not None and not callable(value):
                unit = " items" if attr.endswith("length") else ""
                parts.append(f"{word} {value}{unit}")
    return (" " + " and ".join(parts)) if parts else ""


def _type_name(annotation, metadata=()) -> str:
    """int > 0, float >= 0 and <= 1, float | None, 'gelu' | 'silu' ... for humans."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0], (*metadata, *args[1:]))
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if annotation is type(None):
        return "None"
    if origin is tuple:
        inner = f"{_type_name(args[0])}, ..." if len(args) == 2 and args[1] is Ellipsis else ", ".join(_type_name(a) for a in args)
        return f"tuple[{inner}]{_constraints(metadata)}"
    return getattr(annotation, "__name__", str(annotation)) + _constraints(metadata)


@main.command()
def plugins() -> None:
    """List installed blocks and conditioning methods, their parameters and providers."""
    import warnings

    from dicesearch.errors import PluginLoadWarning
    from dicesearch.registry import default_registry

    with warnings.catch_warnings():  # listed once, after the plugins that did load
        warnings.simplefilter("ignore", PluginLoadWarning)
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
                    f"      {field_name}: {_type_name(f.annotation, f.metadata)} = {default}"
                    + (f"  [dim]# {f.description}[/]" if f.description else ""),
                    highlight=False,
                )
        console.print()
    for problem in registry.load_errors:
        warning_line(problem)


@main.command("new-plugin")
@click.argument("name")
@click.option("--output", "-o", type=click.Path(path_type=Path), help="Folder to create [default: ./dicesearch-NAME].")
def new_plugin_command(name: str, output: Path | None) -> None:
    """Create a block-plugin package for block NAME: pyproject with the entry point, the block, a test."""
    from dicesearch.scaffold import new_plugin

    names, folder = new_plugin(name, output)
    # pip reads "name[test]" as a package from the index unless it looks like a path
    shown = str(folder) if folder.is_absolute() or folder.parts[0] == ".." else f"./{folder}"
    files = [
        ("pyproject.toml", f"declares the entry point {names.name} = \"{names.module}\""),
        (f"src/{names.module}/__init__.py", "the block, its parameters and the hook that registers them"),
        (f"tests/test_{names.name}.py", "dicesearch's contract checks on the block"),
    ]
    width = max(len(path) for path, _ in files)
    lines = [f"created {folder}/ for block '{names.name}' (distribution {names.distribution}, module {names.module}):"]
    lines += [f"  {path:{width}}  {what}" for path, what in files]
    lines += ["next:", f'  python -m pip install -e "{shown}[test]"', f"  python -m pytest {shown}", "  dicesearch plugins"]
    console.print("\n".join(lines), markup=False, highlight=False, soft_wrap=True)


@main.command()
def presets() -> None:
    """List the shipped model presets."""
    from dicesearch.spec import list_presets

    for name, path in list_presets().items():
        console.print(f"{name:14s} {path}", highlight=False)


@main.command()
@click.argument("spec")
def validate(spec: str) -> None:
    """Validate a spec file or preset (and run it once on the meta device); every problem one line."""
    from dicesearch.spec import load_spec

    try:
        model_spec = load_spec(spec, forward=True)
    except SpecError as exc:
        for line in getattr(exc, "lines", [str(exc)]):
            error_line(line)
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


def format_count(n: float) -> str:
    return f"{n:,.0f}"


def format_giga(n: float) -> str:
    """n / 1e9 with two decimals, or three significant digits below 1 (0.00687, not 0.00)."""
    value = n / 1e9
    if value >= 1 or value == 0:
        return f"{value:.2f}"
    return f"{value:.{2 - math.floor(math.log10(value))}f}"


def format_share(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f} %" if whole else "-"


@main.command()
@click.argument("spec", metavar="SPEC|PRESET|RUN_DIR")
@click.option("--steps", default=250, show_default=True, help="Sampling steps per sample (DICE/DiT: 250 DDPM steps).")
@click.option("--batch-size", default=1, show_default=True, help="Batch size for the throughput measurement.")
@click.option("--timed-forwards", default=3, show_default=True, help="Forwards timed to extrapolate samples/s.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:1 or auto.")
def profile(spec: str, steps: int, batch_size: int, timed_forwards: int, device: str) -> None:
    """Static analysis of a spec, preset or run folder (DICE Tab. 2): params, multiply-adds, FLOPs, samples/s.

    Parameters and multiply-adds are also shown per component (each block type, stage
    inputs, long skips, connectors, heads, conditioning). FFTs, complex products and
    costs that ops declare are counted (see dicesearch/costs.py for the conventions).
    """
    from dicesearch.analysis.profile import profile_spec
    from dicesearch.devices import resolve_device
    from dicesearch.spec import load_spec
    from dicesearch.train.rundir import RunDir

    model_spec = RunDir(spec).read_spec() if Path(spec).is_dir() else load_spec(spec)
    device = str(resolve_device(device))
    with console.status(f"building {model_spec.name} and timing {timed_forwards} forwards on {device}..."):
        p = profile_spec(model_spec, device=device, sampling_steps=steps, batch_size=batch_size, timed_forwards=timed_forwards)
    table = Table(title=f"{p.name} on {p.device}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("parameters (trainable)", format_count(p.trainable_parameters))
    if p.parameters != p.trainable_parameters:
        table.add_row("parameters (all, incl. frozen tables)", format_count(p.parameters))
    table.add_row("multiply-adds / forward (G)", format_giga(p.macs))
    table.add_row("FLOPs / forward (G)", format_giga(p.flops))
    table.add_row(f"samples/s ({p.sampling_steps} steps, batch {p.batch_size})", f"{p.samples_per_second:.4g}")
    table.add_row("seconds / forward", f"{p.seconds_per_forward:.3f} (mean of {p.timed_forwards})")
    console.print(table)
    stages = Table(title="parameters per stage")
    for column in ("stage", "block", "grid", "channels", "depth", "parameters"):
        stages.add_column(column, justify="right" if column in ("channels", "depth", "parameters") else "left")
    for s in p.stages:
        stages.add_row(str(s.index), s.block, f"{s.grid}x{s.grid}", str(s.channels), str(s.depth), format_count(s.parameters))
    stages.add_row("shared", "conditioning", "", "", "", format_count(p.shared_parameters))
    console.print(stages)
    parts = Table(title="per component (multiply-adds per forward at batch 1)")
    for column in ("component", "parameters", "share", "multiply-adds (G)", "share "):
        parts.add_column(column, justify="left" if column == "component" else "right")
    for c in p.components:
        parts.add_row(c.name, format_count(c.parameters), format_share(c.parameters, p.parameters), format_giga(c.macs), format_share(c.macs, p.macs))
    console.print(parts)
