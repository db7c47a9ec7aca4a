"""ADM's centre crop (guided-diffusion; DiT uses the same one), and PIL -> [-1, 1] tensors.

The crop: while the short side is at least twice the target, halve the image with BOX
resampling (cheap, alias-free averaging); then one BICUBIC resize so that the short side
equals the target; then cut the centred target x target square.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

__all__ = ["adm_center_crop", "pil_to_tensor"]


def adm_center_crop(image: Image.Image, size: int) -> Image.Image:
    """Return the centred ``size`` x ``size`` crop of ``image`` after ADM's resizing."""
    while min(image.size) >= 2 * size:
        image = image.resize((image.width // 2, image.height // 2), resample=Image.Resampling.BOX)
    scale = size / min(image.size)
    target = (round(image.width * scale), round(image.height * scale))
    if target != image.size:
        image = image.resize(target, resample=Image.Resampling.BICUBIC)
    left = (image.width - size) // 2
    top = (image.height - size) // 2
    return image.crop((left, top, left + size, top + size))


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """An 8-bit RGB PIL image -> float32 (3, H, W) in [-1, 1] (0 -> -1, 255 -> 1)."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)  # (H, W, 3) in [0, 255]
    return torch.from_numpy(pixels / 127.5 - 1.0).permute(2, 0, 1).contiguous()  # (3, H, W)
