"""Encode an image folder into a latent file once, so latent-space trials skip the VAE.

The CLI's ``dicesearch encode`` calls ``encode_folder``; its arguments are plain values.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from dicesearch.data._text import unwrap_worker_errors
from dicesearch.data.datasets import FolderDataset
from dicesearch.data.latentfile import check_latent_path, write_latent_file
from dicesearch.data.sources import FolderSpec
from dicesearch.data.vae import load_vae
from dicesearch.errors import DataError

__all__ = ["encode_folder"]

_STORAGE = {"float32": torch.float32, "float16": torch.float16}


def encode_folder(
    folder: FolderSpec,
    vae_dir: str | os.PathLike,
    out_path: str | os.PathLike,
    batch_size: int = 32,
    device: str = "cpu",
    *,
    posterior: Literal["sample", "mean"] = "sample",
    seed: int = 0,
    storage: Literal["float32", "float16"] = "float32",
    num_workers: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Encode every image of ``folder`` (ADM centre crop, no flips) and write ``out_path``.

    ``out_path`` ends in ``.safetensors`` or ``.npz``; it is written to a temporary file in
    the same folder and renamed into place, so a crash never leaves a half-written file.
    ``posterior="sample"`` (DiT's choice) draws each latent from the encoder's Gaussian
    with a generator seeded by ``seed``; ``"mean"`` takes its mean. The metadata records
    the VAE folder, its scaling factor, the posterior, the seed and the source folder.
    Returns the path written.
    """
    out = Path(out_path).expanduser()
    check_latent_path(out)
    if out.exists() and not overwrite:
        raise DataError(f"output {out}: already exists; choose another path or pass overwrite=True (--overwrite)")
    if batch_size < 1:
        raise DataError(f"batch_size {batch_size}: must be at least 1; set a positive batch size")
    if posterior not in ("sample", "mean"):
        raise DataError(f"posterior {posterior!r}: unknown; use 'sample' or 'mean'")
    if storage not in _STORAGE:
        raise DataError(f"storage {storage!r}: unknown; use 'float32' or 'float16'")
    if seed < 0:
        raise DataError(f"seed {seed}: must be >= 0; set a non-negative seed")
    dataset = FolderDataset(folder)
    vae = load_vae(vae_dir, device=device)
    if folder.resolution % vae.info.downsample:
        raise DataError(
            f"data.resolution {folder.resolution}: not a multiple of the VAE's downsampling factor "
            f"{vae.info.downsample}; pick e.g. {folder.resolution // vae.info.downsample * vae.info.downsample or vae.info.downsample}"
        )

    generator = torch.Generator().manual_seed(seed)
    side = folder.resolution // vae.info.downsample
    latents = torch.empty((len(dataset), vae.info.latent_channels, side, side), dtype=_STORAGE[storage])  # (N, C, h, h)
    labels = torch.empty(len(dataset), dtype=torch.int64)  # (N,)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    start = 0
    for x, y in unwrap_worker_errors(tqdm(loader, desc=f"encode {folder.path.name}", unit="batch", disable=not progress)):
        # x: (B, 3, R, R) in [-1, 1] -> (B, C, R/f, R/f)
        z = vae.encode(x, posterior=posterior, generator=generator, batch_size=batch_size)
        latents[start : start + len(z)] = z
        labels[start : start + len(y)] = y
        start += len(z)

    metadata = {
        "vae": str(vae.info.path.resolve()),
        "scaling_factor": repr(vae.info.scaling_factor),
        "shift_factor": repr(vae.info.shift_factor),
        "posterior": posterior,
        "seed": str(seed),
        "source": str(folder.path.resolve()),
        "source_fingerprint": dataset.fingerprint,
        "image_resolution": str(folder.resolution),
        "num_classes": str(dataset.num_classes),
        "classes": json.dumps(dataset.classes),
    }
    return write_latent_file(out, latents, labels, metadata)
