"""Images -> Inception features (pool for FID, spatial for sFID), in one pass.

Preprocessing, step by step (each step matches ADM's TensorFlow evaluator, which feeds
uint8 pixel values to the 2015 Inception graph):

1. Quantise as a saved PNG would: float images in [-1, 1] become
   uint8 = clamp(floor((x + 1) * 127.5 + 0.5), 0, 255) (round half up, as
   ``torchvision.utils.save_image`` does). uint8 input is taken as pixels already.
   Grayscale (C = 1) is replicated to RGB.
2. Resize to 299x299 with TF1's legacy bilinear resize (``align_corners=False`` without
   half-pixel centres: output pixel i samples input coordinate i * in / out). That is what
   the graph's own ``ResizeBilinear`` op does, so our features match the ones the
   published FID/sFID numbers were computed with. It is applied to the uint8 values as
   floats, with no anti-aliasing, exactly like the TF op; an image already 299x299 is
   left untouched.
3. Scale to the TF range: (v - 128) / 128, so pixel 0 -> -1 and 255 -> 0.9921875.

Features come back as float64 NumPy arrays: pool (N, 2048) and spatial (N, 2023).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from dicesearch.errors import DataError
from dicesearch.metrics.inception import (
    INPUT_SIZE,
    InceptionNetwork,
    load_inception,
    run_inception,
)
from dicesearch.metrics.inception_eager import CPU_MICRO_BATCH, cpu_workers, eager_inception

# Part of every reference-cache key: change it whenever the steps above change.
PREPROCESSING = "png-u8-round-half-up|tf1-bilinear-299|tf-range"

Images = torch.Tensor | Iterable[torch.Tensor | tuple | list]


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) float in [-1, 1] (or uint8 pixels), C in {1, 3} -> (N, 3, H, W) uint8."""
    if not isinstance(images, torch.Tensor):
        raise DataError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise DataError(
            f"images must have shape (N, C, H, W) with C = 1 or 3, got {tuple(images.shape)}"
        )
    if images.dtype == torch.uint8:
        pixels = images  # (N, C, H, W)
    elif images.is_floating_point():
        x = images.to(torch.float32)
        if not torch.isfinite(x).all():
            raise DataError("images contain NaN or inf; the sampler probably diverged")
        pixels = torch.floor((x + 1.0) * 127.5 + 0.5).clamp_(0, 255).to(torch.uint8)
    else:
        raise DataError(f"images must be float in [-1, 1] or uint8, got dtype {images.dtype}")
    if pixels.shape[1] == 1:
        pixels = pixels.expand(-1, 3, -1, -1)  # grayscale -> RGB
    return pixels


@functools.lru_cache(maxsize=16)
def _tf1_bilinear_weights(in_size: int, out_size: int) -> torch.Tensor:
    """(out, in) float32 matrix W with resized = W @ signal along one axis."""
    src = torch.arange(out_size, dtype=torch.float64) * (in_size / out_size)  # (out,)
    lo = src.floor().long().clamp_(max=in_size - 1)  # (out,)
    hi = (lo + 1).clamp_(max=in_size - 1)  # (out,)
    frac = src - lo.to(torch.float64)  # (out,)
    rows = torch.arange(out_size)
    weights = torch.zeros(out_size, in_size, dtype=torch.float64)
    weights.index_put_((rows, lo), 1.0 - frac, accumulate=True)
    weights.index_put_((rows, hi), frac, accumulate=True)
    return weights.to(torch.float32)


def resize_bilinear_tf1(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """TF1 legacy bilinear resize: (N, C, H, W) float -> (N, C, size[0], size[1]) float32."""
    h, w = x.shape[-2:]
    x = x.to(torch.float32)
    if (h, w) == tuple(size):
        return x
    w_h = _tf1_bilinear_weights(h, size[0]).to(x.device)  # (H', H)
    w_w = _tf1_bilinear_weights(w, size[1]).to(x.device)  # (W', W)
    return torch.matmul(torch.matmul(w_h, x), w_w.T)  # (N, C, H', W')


def to_inception_input(pixels: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) uint8 -> (N, 3, 299, 299) float32 in [-1, 0.9921875]."""
    resized = resize_bilinear_tf1(pixels, (INPUT_SIZE, INPUT_SIZE))  # values in [0, 255]
    return (resized - 128.0) / 128.0


@dataclass(frozen=True, eq=False)
class InceptionFeatures:
    """Features of N images."""

    pool: np.ndarray  # (N, 2048) float64, for FID, KID and precision/recall
    spatial: np.ndarray | None  # (N, 2023) float64, for sFID; None if not extracted
    logits: np.ndarray | None = None  # (N, K) float64 of a given classifier, for the Inception Score

    def __len__(self) -> int:
        return int(self.pool.shape[0])


def _image_batches(images: Images) -> Iterator[torch.Tensor]:
    if isinstance(images, torch.Tensor):
        yield images
        return
    if isinstance(images, np.ndarray) or not isinstance(images, Iterable):
        raise DataError(
            "images must be a torch tensor (N, C, H, W) or an iterable of them, "
            f"got {type(images).__name__}"
        )
    for item in images:
        if isinstance(item, (tuple, list)):  # (images, labels) from a data loader
            if not item:
                raise DataError("an empty tuple came where an image batch was expected")
            item = item[0]
        if isinstance(item, torch.Tensor) and item.ndim == 3:
            item = item.unsqueeze(0)  # a single (C, H, W) image
        yield item


def _limited(batches: Iterator[torch.Tensor], n: int | None) -> Iterator[torch.Tensor]:
    """Cut the stream after exactly ``n`` images (all of them when n is None)."""
    seen = 0
    for batch in batches:
        if n is not None and seen + len(batch) > n:
            batch = batch[: n - seen]
        if len(batch):
            seen += len(batch)
            yield batch
        if n is not None and seen >= n:
            return
    if n is not None and seen < n:
        raise DataError(f"expected {n} images, the source ran out after {seen}")


def _rechunk(batches: Iterator[torch.Tensor], size: int) -> Iterator[torch.Tensor]:
    for batch in batches:
        for start in range(0, len(batch), size):
            yield batch[start : start + size]


def extract_features(
    images: Images,
    network: InceptionNetwork | None = None,
    *,
    n: int | None = None,
    spatial: bool = True,
    batch_size: int = 50,
    progress: bool | None = None,
    classifier: torch.jit.ScriptModule | None = None,
    fast: bool = True,
) -> InceptionFeatures:
    """Inception features of ``images``, pool and (if ``spatial``) sFID's mixed_6/conv.

    images: a (N, C, H, W) tensor, or an iterable of such batches (or of
        (batch, labels) tuples), float in [-1, 1] or uint8, C in {1, 3}.
    n: take exactly the first n images (DataError if fewer); None takes all.
    progress: tqdm bar on stderr; None shows it when more than one batch is expected.
    classifier: a TorchScript classifier run on the same inputs (logits for the Inception Score).
    fast: run the network as eager channels-last modules (``metrics.inception_eager``: ~2x
        faster on a CPU, features equal to a few 1e-6 relative, and the same bits at every torch
        thread count); False: the TorchScript file.
    """
    if n is not None and n < 1:
        raise DataError(f"the number of images must be >= 1, got {n}")
    if batch_size < 1:
        raise DataError(f"batch_size must be >= 1, got {batch_size}")
    net = network if network is not None else load_inception()
    eager = eager_inception(net) if fast else None
    forward = eager if eager is not None else functools.partial(run_inception, net)
    total = n if n is not None else (len(images) if isinstance(images, torch.Tensor) else None)
    show = progress if progress is not None else (total is None or total > batch_size)
    pool_parts: list[np.ndarray] = []
    spatial_parts: list[np.ndarray] = []
    logit_parts: list[np.ndarray] = []
    if eager is not None and net.device.type == "cpu":  # enough micro-batches for every worker thread (inception_eager)
        batch_size = max(batch_size, cpu_workers() * CPU_MICRO_BATCH)
    with torch.inference_mode(), tqdm(
        total=total, disable=not show, unit="img", desc="Inception features", leave=False
    ) as bar:
        for chunk in _rechunk(_limited(_image_batches(images), n), batch_size):
            x = to_inception_input(to_uint8(chunk).to(net.device))  # (B, 3, 299, 299)
            pool, spat = forward(x, spatial=spatial)  # (B, 2048), (B, 2023)
            pool_parts.append(pool.double().cpu().numpy())
            if spat is not None:
                spatial_parts.append(spat.double().cpu().numpy())
            if classifier is not None:
                logit_parts.append(classifier(x).double().cpu().numpy())  # (B, K)
            bar.update(len(chunk))
    if not pool_parts:
        raise DataError("no images to extract features from")
    return InceptionFeatures(
        pool=np.concatenate(pool_parts),
        spatial=np.concatenate(spatial_parts) if spatial else None,
        logits=np.concatenate(logit_parts) if classifier is not None else None,
    )
