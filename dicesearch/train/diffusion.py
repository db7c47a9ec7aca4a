"""The DDPM training objective: forward process, multi-scale ε-MSE, learned-variance VLB.

Forward process (DDPM; DiT's linear schedule): betas linear from 1e-4 to 2e-2 over
T = 1000 steps, ᾱ_t = prod_{s<=t} (1 - β_s), and

    x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε,   ε ~ N(0, I),

taken from diffusers' ``DDPMScheduler`` (the sampler uses the same scheduler, so training
and sampling share one table of betas).

Loss, for a model whose ``forward_stages`` returns predictions ε_r coarse to fine:

* DiMR Eq. 8 (multi-scale): Σ_r α_r · mean((AvgPool_{k_r}(ε) - ε_r)²), where k_r is how
  much coarser stage r's prediction is than the input and α_r comes from the spec
  (``resolved_loss_weights``; 1/k_r² by default). One stage is DDPM's plain ε-MSE.
* With ``learn_sigma`` (improved DDPM, Nichol & Dhariwal 2021; DiT): the last stage also
  outputs v, and the model's reverse variance is Σ = exp(f log β_t + (1 - f) log β̃_t) with
  f = (v + 1) / 2 and β̃_t the posterior variance (clipped at t = 0 to β̃_1, as ADM). v is
  trained by the VLB term L_t with the mean held fixed (a stop-gradient on ε), so the VLB
  teaches the variance only and the MSE alone teaches the mean:

      L_t = KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))            for t > 0,
      L_0 = -log p(x_0 | x_1)  (discretised Gaussian decoder, 256 bins)  for t = 0,

  in bits per dimension. Improved DDPM's hybrid loss weights the VLB sum T·E_t[L_t] by
  λ = 0.001, i.e. E_t[L_t] by T / 1000 (ADM's "rescaled" MSE); we do the same.

  Latents: the discretised decoder models 8-bit pixels in [-1, 1] and means nothing for
  continuous VAE latents, and the sampler adds no noise at t = 0, so the variance there is
  never used. For latent data the t = 0 term is therefore zero (the mean at t = 0 is still
  trained by the MSE). DiT's code applies the pixel decoder to latents anyway.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

__all__ = [
    "LossTerms",
    "NoiseSchedule",
    "diffusion_loss",
    "discretized_gaussian_log_likelihood",
    "multiscale_mse",
    "normal_kl",
    "training_loss",
    "vlb_bits_per_dim",
]

Decoder = Literal["pixels", "latents"]


class NoiseSchedule:
    """The forward process and the Gaussian posterior q(x_{t-1} | x_t, x_0) as float64 tables."""

    def __init__(self, num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 2e-2):
        from diffusers import DDPMScheduler

        self.scheduler = DDPMScheduler(
            num_train_timesteps=num_timesteps, beta_start=beta_start, beta_end=beta_end, beta_schedule="linear"
        )
        self.num_timesteps = num_timesteps
        betas = self.scheduler.betas.double()  # (T,)
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)  # (T,) ᾱ_t
        alphas_cumprod_prev = torch.cat([betas.new_ones(1), alphas_cumprod[:-1]])  # (T,) ᾱ_{t-1}, ᾱ_{-1} = 1
        variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)  # (T,) β̃_t, 0 at t = 0
        self.tables = {
            "log_beta": betas.log(),
            "posterior_log_variance": torch.cat([variance[1:2], variance[1:]]).log(),  # β̃_0 := β̃_1
            "posterior_coef_x0": betas * alphas_cumprod_prev.sqrt() / (1.0 - alphas_cumprod),
            "posterior_coef_xt": (1.0 - alphas_cumprod_prev) * (1.0 - betas).sqrt() / (1.0 - alphas_cumprod),
            "recip_sqrt_alphas_cumprod": (1.0 / alphas_cumprod).sqrt(),
            "sqrt_recip_alphas_cumprod_minus_one": (1.0 / alphas_cumprod - 1.0).sqrt(),
        }
        self._on_device: dict[tuple[str, torch.device], torch.Tensor] = {}

    def at(self, name: str, t: torch.Tensor) -> torch.Tensor:
        """Table ``name`` at timesteps t (B,) -> (B, 1, 1, 1) float32 on t's device."""
        key = (name, t.device)
        if key not in self._on_device:  # one copy per device, not one transfer per step
            self._on_device[key] = self.tables[name].to(t.device)
        return self._on_device[key][t].float().view(-1, 1, 1, 1)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_0 (B, C, H, W), t (B,), ε (B, C, H, W) -> x_t (B, C, H, W)."""
        return self.scheduler.add_noise(x0, noise, t)

    def posterior_mean(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Mean of q(x_{t-1} | x_t, x_0): (B, C, H, W)."""
        return self.at("posterior_coef_x0", t) * x0 + self.at("posterior_coef_xt", t) * x_t

    def model_mean_log_variance(
        self, eps: torch.Tensor, v: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """p(x_{t-1} | x_t) from ε̂ and v (each (B, C, H, W)): mean and log variance."""
        x0_hat = self.at("recip_sqrt_alphas_cumprod", t) * x_t - self.at("sqrt_recip_alphas_cumprod_minus_one", t) * eps
        frac = (v + 1.0) / 2.0
        log_variance = frac * self.at("log_beta", t) + (1.0 - frac) * self.at("posterior_log_variance", t)
        return self.posterior_mean(x0_hat, x_t, t), log_variance


def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """Elementwise KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) in nats (closed form)."""
    return 0.5 * (logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2) - 1.0)


def discretized_gaussian_log_likelihood(
    x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor, bins: int = 256
) -> torch.Tensor:
    """Elementwise log P(x) in nats of pixels x in [-1, 1] quantised to ``bins`` levels.

    Each level owns the interval x ± 1/(bins - 1) of N(mean, e^{2 log_scale}); the two
    extreme levels own the tails beyond them.
    """
    half = 1.0 / (bins - 1)
    centred = x - mean
    inv_scale = torch.exp(-log_scale)
    upper, lower = inv_scale * (centred + half), inv_scale * (centred - half)  # standardised bin edges
    # P(lower < Z < upper), computed on the side of the mean where it does not cancel
    mass = torch.where(centred > 0, torch.special.ndtr(-lower) - torch.special.ndtr(-upper), torch.special.ndtr(upper) - torch.special.ndtr(lower))
    log_mass = torch.log(mass.clamp(min=1e-12))
    edge = 1.0 - half / 2
    return torch.where(x < -edge, torch.special.log_ndtr(upper), torch.where(x > edge, torch.special.log_ndtr(-lower), log_mass))


def _mean_over_dims(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).mean(1)  # (B, ...) -> (B,)


def vlb_bits_per_dim(
    schedule: NoiseSchedule,
    eps: torch.Tensor,
    v: torch.Tensor,
    x0: torch.Tensor,
    x_t: torch.Tensor,
    t: torch.Tensor,
    decoder: Decoder,
) -> torch.Tensor:
    """L_t of each sample, bits per dimension: (B,). Pass ε̂ detached for the stop-gradient."""
    mean, log_variance = schedule.model_mean_log_variance(eps, v, x_t, t)  # (B, C, H, W) each
    true_mean = schedule.posterior_mean(x0, x_t, t)
    kl = normal_kl(true_mean, schedule.at("posterior_log_variance", t), mean, log_variance)
    terms = _mean_over_dims(kl) / math.log(2.0)  # (B,)
    if decoder == "pixels":
        nll = -_mean_over_dims(discretized_gaussian_log_likelihood(x0, mean, 0.5 * log_variance)) / math.log(2.0)
        return torch.where(t == 0, nll, terms)
    return torch.where(t == 0, torch.zeros_like(terms), terms)


def multiscale_mse(
    predictions: Sequence[torch.Tensor], noise: torch.Tensor, weights: Sequence[float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """DiMR Eq. 8. predictions: coarse-to-fine (B, ≥C, h_r, w_r); noise (B, C, H, W).

    Returns the weighted sum () and each stage's unweighted MSE (R,). Only the first C
    channels of a prediction are ε (the last stage may append v).
    """
    channels, (height, width) = noise.shape[1], noise.shape[-2:]
    terms = []
    for eps in predictions:
        eps = eps[:, :channels].float()  # (B, C, h, w)
        h, w = eps.shape[-2:]
        if height % h or width % w:
            raise ValueError(f"a {h}x{w} prediction does not tile the {height}x{width} input")
        target = noise if (h, w) == (height, width) else F.avg_pool2d(noise, (height // h, width // w))  # (B, C, h, w)
        terms.append(F.mse_loss(eps, target))
    per_stage = torch.stack(terms)  # (R,)
    weighted = (per_stage * torch.tensor(weights, dtype=per_stage.dtype, device=per_stage.device)).sum()
    return weighted, per_stage


@dataclass(frozen=True)
class LossTerms:
    """The training loss and its parts (the parts detached, for logging)."""

    total: torch.Tensor  # () what backward runs on
    mse: torch.Tensor  # (R,) each stage's unweighted ε-MSE, coarse to fine
    vlb: torch.Tensor | None  # () mean L_t in bits/dim, None without learn_sigma


def diffusion_loss(
    schedule: NoiseSchedule,
    predictions: Sequence[torch.Tensor],
    x0: torch.Tensor,
    x_t: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    weights: Sequence[float],
    learn_sigma: bool,
    decoder: Decoder = "pixels",
) -> LossTerms:
    """Multi-scale ε-MSE plus, with ``learn_sigma``, the variance's VLB (see the module doc).

    predictions: ``forward_stages`` output, coarse to fine; the last is (B, 2C, H, W) when
    the model learns sigma. x0, x_t, noise: (B, C, H, W); t: (B,). Computed in fp32.
    """
    if len(predictions) != len(weights):
        raise ValueError(f"{len(predictions)} predictions for {len(weights)} loss weights")
    mse_total, per_stage = multiscale_mse(predictions, noise, weights)
    if not learn_sigma:
        return LossTerms(total=mse_total, mse=per_stage.detach(), vlb=None)
    channels = noise.shape[1]
    last = predictions[-1].float()  # (B, 2C, H, W)
    eps, v = last[:, :channels], last[:, channels:]
    vlb = vlb_bits_per_dim(schedule, eps.detach(), v, x0.float(), x_t.float(), t, decoder).mean()
    total = mse_total + vlb * (schedule.num_timesteps / 1000.0)
    return LossTerms(total=total, mse=per_stage.detach(), vlb=vlb.detach())


def training_loss(
    model,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    labels: torch.Tensor | None,
    weights: Sequence[float],
    learn_sigma: bool,
    decoder: Decoder = "pixels",
    autocast: contextlib.AbstractContextManager | None = None,
) -> LossTerms:
    """What one training step differentiates: noise x_0, predict under ``autocast``, score in fp32.

    x0, noise: (B, C, H, W); t: (B,) int; labels: (B,) int (the null label where dropped)
    or None. The trainer calls this, and the memory estimator traces this very function.
    """
    x_t = schedule.q_sample(x0, t, noise)  # (B, C, H, W)
    with autocast or contextlib.nullcontext():
        predictions = model.forward_stages(x_t, t, labels)  # coarse to fine
    return diffusion_loss(schedule, predictions, x0, x_t, t, noise, weights, learn_sigma, decoder)
