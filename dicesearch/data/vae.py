"""The image <-> latent autoencoder: diffusers' ``AutoencoderKL``, loaded from a local folder.

Latent diffusion (LDM; DiT Sec. 3.2) trains on ``z * scaling_factor`` where ``z`` is the
encoder's latent (0.18215 for sd-vae-ft-ema, which turns 256x256x3 images into 4x32x32
latents). ``encode`` and ``decode`` apply and undo that scaling (and ``shift_factor`` for
the VAEs that have one), so callers only ever see model-ready latents and [-1, 1] images.

Nothing is downloaded: the folder must already hold ``config.json`` and
``diffusion_pytorch_model.safetensors`` (or ``.bin``), the layout of the Hugging Face
``stabilityai/sd-vae-ft-ema`` repository and of ``AutoencoderKL.save_pretrained``.
diffusers is imported only when a VAE is actually loaded (it takes seconds to import).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch

from dicesearch.devices import resolve_device
from dicesearch.errors import DataError, one_line

if TYPE_CHECKING:
    from diffusers import AutoencoderKL

__all__ = ["Vae", "VaeInfo", "inspect_vae", "load_vae"]

WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
_LAYOUT = "a local diffusers AutoencoderKL folder (config.json + diffusion_pytorch_model.safetensors), e.g. a copy of sd-vae-ft-ema"


@dataclass(frozen=True)
class VaeInfo:
    """What a VAE folder's config.json says about its latents (no weights loaded)."""

    path: Path
    scaling_factor: float  # latents = (z - shift_factor) * scaling_factor; 0.18215 for sd-vae-ft-ema
    shift_factor: float  # 0 for sd-vae-ft-ema
    downsample: int  # image side / latent side: 2 ** (len(block_out_channels) - 1), 8 for sd-vae-ft-ema
    latent_channels: int  # 4 for sd-vae-ft-ema


def inspect_vae(path: str | os.PathLike) -> VaeInfo:
    """Check that ``path`` is a usable VAE folder without loading its weights.

    Cheap (reads one small JSON file), so datasets call it at load time. Missing config
    entries take diffusers' AutoencoderKL defaults.
    """
    path = Path(path).expanduser()
    if not path.is_dir():
        raise DataError(f"vae {path}: no such directory; give {_LAYOUT}")
    config_file = path / "config.json"
    if not config_file.is_file():
        if (path / "vae" / "config.json").is_file():
            raise DataError(f"vae {path}: no config.json in it, but a pipeline's vae/ subfolder; give {path / 'vae'} instead")
        raise DataError(f"vae {path}: no config.json in it; give {_LAYOUT}")
    try:
        config = json.loads(config_file.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"vae {config_file}: not valid JSON ({one_line(exc)}); restore the file from the VAE's release") from None
    if not isinstance(config, dict):
        raise DataError(f"vae {config_file}: not a JSON object; restore the file from the VAE's release")
    class_name = config.get("_class_name", "AutoencoderKL")
    if class_name != "AutoencoderKL":
        raise DataError(f"vae {path}: config.json describes a {class_name}, not an AutoencoderKL; give {_LAYOUT}")
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        raise DataError(f"vae {path}: no weights ({WEIGHT_FILES[0]} or {WEIGHT_FILES[1]}); copy them next to config.json")
    try:
        shift = config.get("shift_factor")
        return VaeInfo(
            path=path,
            scaling_factor=float(config.get("scaling_factor", 0.18215)),
            shift_factor=0.0 if shift is None else float(shift),
            downsample=2 ** (len(config.get("block_out_channels", [64])) - 1),
            latent_channels=int(config.get("latent_channels", 4)),
        )
    except (TypeError, ValueError) as exc:
        raise DataError(f"vae {config_file}: unexpected values ({one_line(exc)}); restore the file from the VAE's release") from None


@dataclass(frozen=True)
class Vae:
    """A loaded ``AutoencoderKL`` plus the constants (``info``) that map its latents to model inputs."""

    model: AutoencoderKL
    info: VaeInfo

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def encode(
        self,
        images: torch.Tensor,
        *,
        posterior: Literal["sample", "mean"] = "sample",
        generator: torch.Generator | None = None,
        batch_size: int = 16,
    ) -> torch.Tensor:
        """Images (N, 3, H, W) in [-1, 1] -> float32 latents (N, C, H/f, W/f), scaled.

        ``posterior="sample"`` (DiT's choice) draws z = mean + std * eps with eps from the
        CPU ``generator`` (default: seeded 0), one image at a time, so the latents depend
        on the seed and on each image's position, not on the batch size or the device.
        ``posterior="mean"`` takes the distribution's mean (deterministic).
        The result is on the same device as ``images``.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(images.shape)}")
        if images.shape[-1] % self.info.downsample or images.shape[-2] % self.info.downsample:
            raise ValueError(f"image sides {tuple(images.shape[-2:])} must be multiples of {self.info.downsample}")
        if posterior not in ("sample", "mean"):
            raise ValueError(f"posterior must be 'sample' or 'mean', got {posterior!r}")
        if posterior == "sample" and generator is None:
            generator = torch.Generator().manual_seed(0)
        out = []
        with torch.inference_mode():
            for chunk in images.split(batch_size):
                x = chunk.to(device=self.device, dtype=self.dtype)  # (b, 3, H, W)
                dist = self.model.encode(x).latent_dist
                z = dist.mean.float()  # (b, C, H/f, W/f)
                if posterior == "sample":
                    eps = torch.stack([torch.randn(z.shape[1:], generator=generator) for _ in range(len(z))])
                    z = z + dist.std.float() * eps.to(z.device)  # (b, C, H/f, W/f)
                out.append(((z - self.info.shift_factor) * self.info.scaling_factor).to(images.device))
        return torch.cat(out)  # (N, C, H/f, W/f)

    def decode(self, latents: torch.Tensor, *, batch_size: int = 16) -> torch.Tensor:
        """Scaled latents (N, C, h, w) -> float32 images (N, 3, h*f, w*f) clamped to [-1, 1].

        The result is on the same device as ``latents``.
        """
        if latents.ndim != 4 or latents.shape[1] != self.info.latent_channels:
            raise ValueError(f"expected latents of shape (N, {self.info.latent_channels}, h, w), got {tuple(latents.shape)}")
        out = []
        with torch.inference_mode():
            for chunk in latents.split(batch_size):
                z = chunk.float() / self.info.scaling_factor + self.info.shift_factor  # (b, C, h, w)
                x = self.model.decode(z.to(device=self.device, dtype=self.dtype)).sample  # (b, 3, h*f, w*f)
                out.append(x.float().clamp(-1.0, 1.0).to(latents.device))
        return torch.cat(out)  # (N, 3, h*f, w*f)


def load_vae(path: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> Vae:
    """Load an ``AutoencoderKL`` from a local folder (never the network), in eval mode."""
    path = Path(path).expanduser()
    info = inspect_vae(path)
    device = resolve_device(device)
    from diffusers import AutoencoderKL

    try:
        # low_cpu_mem_usage=False: the VAE is small, and it spares the "install accelerate" warning.
        model = AutoencoderKL.from_pretrained(path, local_files_only=True, torch_dtype=dtype, low_cpu_mem_usage=False)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
        raise DataError(f"vae {path}: diffusers cannot load it ({one_line(exc)}); give {_LAYOUT}") from None
    return Vae(model=model.to(device).eval().requires_grad_(False), info=info)
