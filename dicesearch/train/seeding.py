"""Training and sampling randomness as pure functions of a seed and an index.

DICE Sec. 4.1 fixes seed 42 so that every compared model sees the same latents, labels
and timesteps. ``fixed_batches`` (``dicesearch.data``) makes the images, labels and flips
of training step ``i`` a function of ``(seed, i)``; this module does the same for the rest:

- ``step_draws(seed, i, ...)``: step i's timesteps, noise and label-dropout coins, drawn on
  the CPU from one generator seeded by ``(seed, i)``, in a fixed order (timesteps first, so
  they do not depend on the image shape; coins always drawn, so the noise does not depend
  on ``class_dropout``). Identical for every model, on every device, and after a resume.
- ``seeded_step(seed, i, device)``: seeds torch's global generators for step i's forward and
  backward (dropout or any stochastic layer a plugin adds), restoring the caller's state
  afterwards.
- ``sample_generator(seed, i)``: the generator of sample i (its initial noise and every
  noise the sampler adds), so samples do not depend on the batch size.

Nothing else is random, so a checkpoint needs only the seed and the step to resume.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["StepDraws", "generator", "sample_generator", "seeded_step", "step_draws"]

# A non-zero last entropy word keeps these streams apart from fixed_batches' (seed, epoch,
# stream) ones (numpy's SeedSequence ignores trailing zeros, so lengths alone don't).
_TAG = 0x64696365
_DRAWS, _MODEL, _SAMPLE = 1, 2, 3


def generator(seed: int, index: int, stream: int) -> torch.Generator:
    """A CPU generator for (seed, index, stream), well separated from its neighbours."""
    state = np.random.SeedSequence([seed, index, stream, _TAG]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


@dataclass(frozen=True)
class StepDraws:
    """What training step ``i`` draws besides its batch (all on the CPU)."""

    t: torch.Tensor  # (B,) int64 timesteps in [0, num_timesteps)
    noise: torch.Tensor  # (B, C, H, W) float32 ~ N(0, I)
    drop: torch.Tensor  # (B,) bool: replace the label by the null label


def step_draws(
    seed: int, index: int, batch_size: int, shape: tuple[int, int, int], num_timesteps: int, class_dropout: float
) -> StepDraws:
    """Timesteps, noise and label dropout of training step ``index`` (0-based, as fixed_batches)."""
    g = generator(seed, index, _DRAWS)
    t = torch.randint(0, num_timesteps, (batch_size,), generator=g)  # (B,)
    noise = torch.randn((batch_size, *shape), generator=g)  # (B, C, H, W)
    coins = torch.rand((batch_size,), generator=g)  # (B,)
    return StepDraws(t=t, noise=noise, drop=coins < class_dropout)


@contextmanager
def seeded_step(seed: int, index: int, device: torch.device) -> Iterator[None]:
    """Seed torch's global generators for step ``index``; restore the caller's on exit."""
    devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(generator(seed, index, _MODEL).initial_seed()))
        yield


def sample_generator(seed: int, index: int) -> torch.Generator:
    """The CPU generator of sample ``index``: its initial noise, then the sampler's noise."""
    return generator(seed, index, _SAMPLE)
