"""Drawing samples from a trained denoiser with diffusers' schedulers.

Every sampler uses the training schedule (linear betas 1e-4..2e-2, 1000 steps, ε-prediction):

- ``ddpm``: ``DDPMScheduler``, ancestral sampling; the variance is the model's learned one
  (``learned_range``, improved DDPM) when the spec learns sigma, else the posterior variance
  (``fixed_small``). Timesteps evenly from 999 to 0 (``linspace``, ADM's respacing), so
  the last step is t = 0, where no noise is added.
- ``ddim``: ``DDIMScheduler`` with eta = 0 (deterministic), ``trailing`` timesteps (the
  first step is t = 999, pure noise), the final step to ᾱ = 1.
- ``dpmsolver++``: ``DPMSolverMultistepScheduler(algorithm_type="dpmsolver++")``, second
  order, deterministic, diffusers' default ``linspace`` timesteps.

For pixel data the predicted x_0 is clipped to [-1, 1] at every step (ADM's
``clip_denoised``; DDIM then re-derives ε from the clipped x_0, as ADM's DDIM does);
latents are not clipped. DDIM and DPM-Solver++ use only the ε half of a learned-sigma
model's output.

Classifier-free guidance (Ho & Salimans 2022): ε = ε_∅ + s (ε_y − ε_∅), the conditional
and null-label passes batched together; the variance half comes from the conditional pass.
s = 1 is the conditional model and runs no null-label pass.

Determinism: sample i draws its initial noise and every noise DDPM adds from a CPU generator
seeded by (config.seed, i), and its label is ``labels[i]`` (default i mod num_classes, every
class equally often), so a sample does not depend on the batch size or the device (up to
floating-point differences between kernels).

On a CPU at k > 1 torch threads, a batch is sampled as k contiguous parts of at least
``MIN_CHUNK`` samples, each on its own worker thread at one intra-op thread
(``dicesearch.speed.worker_threads``): the model's ops are too small for torch's intra-op
threads to pay (``dicesearch.speed.chunks``), and by the rule above the parts draw the
samples the whole batch would.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from dicesearch.data import DataSpec
from dicesearch.errors import DataError, DicesearchError
from dicesearch.speed import fast_kernels
from dicesearch.speed.chunks import chunk_count
from dicesearch.speed.worker_threads import each_on_one_thread
from dicesearch.train.config import SamplingConfig
from dicesearch.train.precision import MixedPrecision, resolve_precision
from dicesearch.train.seeding import sample_generator

__all__ = ["check_decodable", "default_labels", "guided_prediction", "make_scheduler", "sample", "sample_images", "thread_parts", "to_images"]

_TRAINING_SCHEDULE = dict(
    num_train_timesteps=1000, beta_start=1e-4, beta_end=2e-2, beta_schedule="linear", prediction_type="epsilon"
)


# Per-step arguments. DDIM re-derives ε from the clipped x_0 (ADM's DDIM does; without it a
# clipped x_0 and the unclipped ε disagree and the samples drift far from the ODE's).
_STEP_OPTIONS = {
    "ddpm": lambda generators: {"generator": generators},
    "ddim": lambda generators: {"eta": 0.0, "use_clipped_model_output": True},
    "dpmsolver++": lambda generators: {},
}


def make_scheduler(sampler: str, learn_sigma: bool, clip_denoised: bool):
    """A fresh diffusers scheduler for one sampling run (schedulers keep per-run state)."""
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

    if sampler == "ddpm":
        return DDPMScheduler(
            **_TRAINING_SCHEDULE,
            variance_type="learned_range" if learn_sigma else "fixed_small",
            clip_sample=clip_denoised,
            timestep_spacing="linspace",
        )
    if sampler == "ddim":
        return DDIMScheduler(**_TRAINING_SCHEDULE, clip_sample=clip_denoised, timestep_spacing="trailing", set_alpha_to_one=True)
    if sampler == "dpmsolver++":
        # thresholding with sample_max_value 1 is plain clipping of x_0 to [-1, 1]
        return DPMSolverMultistepScheduler(
            **_TRAINING_SCHEDULE, algorithm_type="dpmsolver++", solver_order=2, thresholding=clip_denoised, sample_max_value=1.0
        )
    raise DicesearchError(f"sampler {sampler!r}: unknown; use ddpm, ddim or dpmsolver++")


def default_labels(num_samples: int, num_classes: int) -> torch.Tensor | None:
    """Sample i gets class i mod num_classes; None for an unconditional model."""
    return torch.arange(num_samples) % num_classes if num_classes else None


def guided_prediction(
    model: nn.Module, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None, cfg_scale: float, null_label: int
) -> torch.Tensor:
    """The model's output at (x (B, C, H, W), t (B,)) with guidance on its ε channels.

    Returns (B, C_out, H, W) in fp32; with ``cfg_scale == 1`` (or no labels) one plain pass.
    """
    if labels is None or cfg_scale == 1.0:
        return model(x, t, labels).float()
    channels = x.shape[1]
    both = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, torch.full_like(labels, null_label)])).float()
    conditional, unconditional = both.chunk(2)  # (B, C_out, H, W) each
    eps = unconditional[:, :channels] + cfg_scale * (conditional[:, :channels] - unconditional[:, :channels])
    return torch.cat([eps, conditional[:, channels:]], dim=1)


def _sample_batch(
    model: nn.Module,
    spec,
    config: SamplingConfig,
    indices: range,
    labels: torch.Tensor | None,
    clip_denoised: bool,
    device: torch.device,
    precision: MixedPrecision,
    on_step: Callable[[], None] | None,
) -> torch.Tensor:
    """Samples ``indices`` -> (b, C, H, W) fp32 in model space."""
    channels, side = spec.input.channels, spec.input.resolution
    generators = [sample_generator(config.seed, i) for i in indices]
    x = torch.stack([torch.randn((channels, side, side), generator=g) for g in generators]).to(device)  # (b, C, H, W)
    scheduler = make_scheduler(config.sampler, spec.input.learn_sigma, clip_denoised)
    scheduler.set_timesteps(config.steps)  # timesteps stay on the CPU, where the schedulers' tables are
    x = x * scheduler.init_noise_sigma
    y = None if labels is None else labels.to(device)
    for t in scheduler.timesteps:
        x_in = scheduler.scale_model_input(x, t)
        t_batch = t.to(device).expand(len(x))  # (b,)
        with precision.autocast():
            out = guided_prediction(model, x_in, t_batch, y, config.cfg_scale, spec.input.num_classes)  # (b, C_out, H, W)
        if config.sampler != "ddpm":
            out = out[:, :channels]
        step_options = _STEP_OPTIONS[config.sampler](generators)
        x = scheduler.step(out, t, x, **step_options).prev_sample  # (b, C, H, W)
        if on_step is not None:
            on_step()
    return x.float()


@torch.no_grad()
def sample(
    model: nn.Module,
    spec,
    config: SamplingConfig = SamplingConfig(),
    *,
    clip_denoised: bool,
    labels: torch.Tensor | None = None,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """``config.num_samples`` samples (N, C, H, W) fp32 in the model's space (pixels or latents).

    ``labels`` (N,) int64 in [0, num_classes] (``num_classes`` = the null label: unconditional);
    default ``default_labels``. ``clip_denoised``: clip predicted x_0 to [-1, 1] (true for
pixels, false for latents; ``sample_images`` picks it from the data spec).
    ``model`` is put in eval mode; ``device`` defaults to the model's.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    n, num_classes = config.num_samples, spec.input.num_classes
    if labels is None:
        labels = default_labels(n, num_classes)
    elif not num_classes:
        raise DicesearchError(f"labels: the model {spec.name!r} is unconditional (input.num_classes 0); sample it without labels")
    else:
        labels = torch.as_tensor(labels, dtype=torch.int64).flatten()
        if len(labels) != n or int(labels.min()) < 0 or int(labels.max()) > num_classes:
            raise DicesearchError(f"labels: need {n} labels in [0, {num_classes}] ({num_classes} = unconditional); got {len(labels)} in [{int(labels.min())}, {int(labels.max())}]")
    if config.cfg_scale != 1.0 and not num_classes:
        raise DicesearchError(f"cfg_scale {config.cfg_scale}: the model {spec.name!r} is unconditional; use cfg_scale 1.0")
    precision = resolve_precision(config.precision, device)
    model.eval()
    batches = [thread_parts(range(begin, min(begin + config.batch_size, n)), device) for begin in range(0, n, config.batch_size)]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(map(len, batches)) * config.steps, desc=f"sample {config.sampler}", unit="step", dynamic_ncols=True)

    def sample_part(indices: range) -> torch.Tensor:
        with torch.no_grad():  # grad modes are per thread
            part_labels = None if labels is None else labels[indices.start : indices.stop]
            return _sample_batch(model, spec, config, indices, part_labels, clip_denoised, device, precision, bar.update if bar else None)

    try:
        with fast_kernels(model, config.fast_kernels):
            out = []
            for parts in batches:
                out += each_on_one_thread(sample_part, parts, len(parts), "sample") if len(parts) > 1 else [sample_part(parts[0])]
    finally:
        if bar is not None:
            bar.close()
    return torch.cat(out)  # (N, C, H, W)


def thread_parts(indices: range, device: torch.device) -> list[range]:
    """A batch's samples as contiguous parts, one per CPU worker thread (module docstring); one
    part on a GPU, at one torch thread, or for a batch too small to split."""
    parts = chunk_count(torch.get_num_threads(), len(indices)) if device.type == "cpu" else 1
    bounds = [indices.start + len(indices) * p // parts for p in range(parts + 1)]
    return [range(a, b) for a, b in zip(bounds, bounds[1:])]


def check_decodable(data_spec: DataSpec) -> None:
    """Raise ``DataError`` if samples of this data cannot become images (latents, no VAE)."""
    if data_spec.kind == "latents" and data_spec.vae is None:
        raise DataError(
            f"data.vae: the model was trained on latents ({data_spec.path}) but no VAE is configured to decode them; "
            "set data.vae to the VAE folder the latents were encoded with (dicesearch sample --vae DIR)"
        )


def to_images(x: torch.Tensor, data_spec: DataSpec | None, vae=None) -> torch.Tensor:
    """Model-space samples (N, C, H, W) -> images (N, C_img, H_img, W_img) in [-1, 1].

    Pixels are clamped; latents are decoded with ``vae`` (a ``dicesearch.data.Vae``) or the
    data spec's VAE folder. ``data_spec`` None (a run imported without data) means latents
    and needs ``vae``.
    """
    if data_spec is None:
        if vae is None:
            raise DataError("vae: these samples are latents of a run without data.yaml; give the VAE to decode them (dicesearch sample --vae DIR)")
        return vae.decode(x)
    if data_spec.kind != "latents":
        return x.clamp(-1.0, 1.0)
    if vae is None:
        from dicesearch.data import load_vae

        check_decodable(data_spec)
        vae = load_vae(data_spec.vae, device=x.device)
    return vae.decode(x)


def sample_images(
    model: nn.Module,
    spec,
    data_spec: DataSpec | None,
    config: SamplingConfig = SamplingConfig(),
    *,
    labels: torch.Tensor | None = None,
    device: str | torch.device | None = None,
    vae=None,
    progress: bool = False,
) -> torch.Tensor:
    """Samples as images (N, C_img, H_img, W_img) in [-1, 1]: ``sample`` then ``to_images``.

    ``data_spec`` None: latents (of a run imported without data), decoded by ``vae``.
    """
    if vae is None:  # before minutes of sampling, not after
        if data_spec is None:
            raise DataError("vae: the run has no data.yaml (imported weights); give the VAE its latents decode with (dicesearch sample --vae DIR)")
        check_decodable(data_spec)
    latents = data_spec is None or data_spec.kind == "latents"
    x = sample(model, spec, config, labels=labels, clip_denoised=not latents, device=device, progress=progress)
    return to_images(x, data_spec, vae)
