"""Write a batch of images as one PNG grid."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dicesearch.errors import DicesearchError
from dicesearch.train.checkpoint import write_atomically

__all__ = ["image_grid", "save_grid"]


def image_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2) -> np.ndarray:
    """Images (N, C, H, W) in [-1, 1], C = 1 or 3 -> uint8 (rows, cols) or (rows, cols, 3).

    ``nrow`` images per row (default: a near-square grid); ``padding`` black pixels between
    and around them.
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3) or not len(images):
        raise ValueError(f"expected images (N, 1 or 3, H, W) with N > 0, got {tuple(images.shape)}")
    n, c, h, w = images.shape
    per_row = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / per_row)
    pixels = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)  # (N, C, H, W)
    grid = torch.zeros((c, rows * (h + padding) + padding, per_row * (w + padding) + padding), dtype=torch.uint8)
    for i in range(n):
        top, left = padding + (i // per_row) * (h + padding), padding + (i % per_row) * (w + padding)
        grid[:, top : top + h, left : left + w] = pixels[i]
    array = grid.permute(1, 2, 0).numpy()  # (rows, cols, C)
    return array[..., 0] if c == 1 else array


def save_grid(images: torch.Tensor, path: str | os.PathLike, nrow: int | None = None, padding: int = 2) -> Path:
    """Write ``image_grid(images)`` to ``path`` as PNG (atomically); returns the path."""
    path = Path(path).expanduser()
    if path.suffix.lower() != ".png":
        raise DicesearchError(f"output {path}: the grid is written as PNG; name it *.png")
    image = Image.fromarray(image_grid(images, nrow, padding))
    return write_atomically(path, lambda tmp: image.save(tmp, format="PNG"))
