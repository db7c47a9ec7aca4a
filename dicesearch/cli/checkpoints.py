"""Commands about official checkpoints: import-checkpoint, export-checkpoint (the work is in ``dicesearch.checkpoints``)."""

from __future__ import annotations

from pathlib import Path

import click
from dicesearch.cli.app import console, main
from dicesearch.errors import DataError


def _data_spec(spec, data_file, data_kind, data_path, vae):
    """The data the imported run will fine-tune on, or None (sampling only)."""
    from dicesearch.data import load_dataset
    from dicesearch.train.inputs import data_spec_from_flags, load_data_file
    from dicesearch.train.trainer import check_data_fits

    if data_file is not None and (data_kind or data_path or vae):
        raise DataError("--data: give either a data file or --data-kind/--data-path/--vae, not both")
    if vae is not None and data_file is None and data_kind is None and data_path is None:
        raise DataError(
            "--vae: without training data the run needs no VAE until it samples; pass it to `dicesearch sample RUN --vae DIR`, "
            "or import with --data-kind latents --data-path FILE --vae DIR to fine-tune"
        )
    if data_file is None and data_kind is None and data_path is None:
        return None
    data_spec = load_data_file(data_file) if data_file is not None else data_spec_from_flags(data_kind, data_path, vae, spec)
    check_data_fits(spec, load_dataset(data_spec), data_spec)
    return data_spec


@main.command("import-checkpoint")
@click.argument("preset")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--output", "-o", "out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Run folder to create.")
@click.option("--data", "data_file", type=click.Path(dir_okay=False, path_type=Path), help="YAML data spec to fine-tune on (written as data.yaml).")
@click.option("--data-kind", type=click.Choice(["digits", "folder", "latents"]), help="Data kind to fine-tune on, instead of --data.")
@click.option("--data-path", type=click.Path(path_type=Path), help="Image folder or latent file, with --data-kind.")
@click.option("--vae", type=click.Path(path_type=Path), help="VAE folder of the latent file, with --data-path.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), help="TrainConfig YAML for fine-tuning (written as train.yaml).")
def import_checkpoint_command(preset, file, out, data_file, data_kind, data_path, vae, config_file) -> None:
    """Import an official DiT, Diffusion-RWKV or DiMR checkpoint FILE for PRESET into a run folder."""
    from dicesearch.checkpoints.importer import import_checkpoint
    from dicesearch.spec import load_spec
    from dicesearch.train.config import TrainConfig, load_config

    spec = load_spec(preset)
    data_spec = _data_spec(spec, data_file, data_kind, data_path, vae)
    config = load_config(TrainConfig, config_file) if config_file else None
    with console.status(f"reading {file} and mapping it onto {spec.name}..."):
        result = import_checkpoint(spec, file, out, data_spec=data_spec, config=config)
    run = result.run_dir
    lines = [
        f"imported {file} ({result.kind}, {result.tensors} tensors, {result.values:,} values, {result.family} layout) "
        f"as {spec.name} into {run}/ (spec.yaml, checkpoints/{result.checkpoint.name})",
        *(f"  note:      {note}" for note in result.notes),
        f"  sample:    dicesearch sample {run} -o samples.png" + ("" if data_spec is not None else " --vae DIR"),
        f"  profile:   dicesearch profile {run}",
        f"  fine-tune: dicesearch train --resume --out {run} --steps N"
        + ("" if data_spec is not None else " --data-kind latents --data-path LATENTS --vae DIR"),
    ]
    console.print("\n".join(lines), markup=False, highlight=False, soft_wrap=True)


@main.command("export-checkpoint")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--output", "-o", "out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="State-dict file to write (.pt).")
@click.option("--weights", type=click.Choice(["ema", "model"]), default="ema", show_default=True, help="EMA or raw weights.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
def export_checkpoint_command(run, out, weights, overwrite) -> None:
    """Write a DiT run's weights (its folder or one checkpoint) in DiT's official layout, for DiT's sample.py."""
    from dicesearch.checkpoints.exporter import export_checkpoint

    with console.status(f"exporting {run}..."):
        result = export_checkpoint(run, out, weights=weights, overwrite=overwrite)
    console.print(
        f"wrote {result.path}: {result.tensors} tensors in the {result.family} layout ({result.source}), {weights} weights "
        f"of {result.checkpoint} (step {result.step})" + (f"\n  run it there: {result.command}" if result.command else ""),
        markup=False, highlight=False, soft_wrap=True,
    )  # fmt: skip
