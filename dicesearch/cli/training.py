"""Commands about training: train, sample, encode."""

from __future__ import annotations

from pathlib import Path

import click

from dicesearch.cli.app import console, err_console, inception_weights_option, main, set_threads, warning_line
from dicesearch.errors import DataError



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
    from dicesearch.data.verify import verify_data
    from dicesearch.speed.allocator import keep_freed_memory
    from dicesearch.train import Callback, JsonlLog, RunDir, train
    from dicesearch.train.inputs import resolve_train_inputs

    set_threads(threads)
    keep_freed_memory()  # this process trains one model: keep its freed memory (fewer page faults a step)
    inputs = resolve_train_inputs(spec, data_file, data_kind, data_path, vae, config_file, steps, out, resume)
    verify_data(inputs.data_spec)  # every file it will read lazily, before the run folder is written
    run = RunDir(inputs.out_dir)
    from dicesearch.provenance import file_mismatch

    mismatch = file_mismatch(spec if spec else run.spec_file)  # made with other plugin versions than installed?
    if mismatch:
        warning_line(mismatch)

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
    set_threads(threads)
    from dicesearch.data import parse_data_spec
    from dicesearch.devices import resolve_device
    from dicesearch.train import SamplingConfig, load_config, load_trained, sample_images, save_grid
    from dicesearch.train.config import parse_config

    config = load_config(SamplingConfig, config_file) if config_file else SamplingConfig()
    flags = {"num_samples": num_samples, "sampler": sampler, "steps": steps, "cfg_scale": cfg_scale, "seed": seed, "batch_size": batch_size}
    config = parse_config(SamplingConfig, {**config.model_dump(), **{k: v for k, v in flags.items() if v is not None}}, "options")
    device = resolve_device(device)
    from dicesearch.train.rundir import locate_checkpoint

    if vae is None and not locate_checkpoint(Path(checkpoint).expanduser())[0].data_file.is_file():
        raise DataError(f"{checkpoint}: the run has no data.yaml (imported weights); pass --vae DIR, the VAE its latents decode with")
    trained = load_trained(checkpoint, weights=weights, device=device)
    data_spec, vae_model = trained.data_spec, None
    if data_spec is None:  # imported weights without data: latents, decoded by --vae
        from dicesearch.data import load_vae

        vae_model = load_vae(vae, device=device)
        if vae_model.info.latent_channels != trained.spec.input.channels:
            raise DataError(f"--vae {vae}: makes {vae_model.info.latent_channels}-channel latents, the model {trained.spec.name} {trained.spec.input.channels}; give its VAE")
    elif vae is not None:
        data_spec = parse_data_spec({**data_spec.model_dump(mode="json"), "vae": str(vae.absolute())}, where="--vae")
    images = sample_images(trained.model, trained.spec, data_spec, config, device=device, vae=vae_model, progress=not quiet)
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
    from dicesearch.data.verify import verify_data

    folder_spec = parse_data_spec({"kind": "folder", "path": str(folder), "resolution": resolution, "hflip": False}, where="folder")
    verify_data(folder_spec)  # a bad image: one line now, not after hours of encoding
    path = encode_folder(
        folder_spec, vae, output, batch_size=batch_size, device=device, posterior=posterior, seed=seed,
        storage=storage, overwrite=overwrite, progress=not quiet,
    )  # fmt: skip
    console.print(f"wrote {path}; train on it with: dicesearch train SPEC --data-kind latents --data-path {path} --vae {vae}", highlight=False, soft_wrap=True)
