"""The fixed, seeded training order: same seed -> same images, labels and flips for every model.

DICE Sec. 4.1 trains every compared model on the same samples, labels and timesteps by
fixing the seed. Here the data half of that is a pure function of ``(seed, step)``:

- The training stream is an endless concatenation of epochs. Epoch ``e`` visits the items
  in the order ``randperm(N)`` drawn from a generator seeded by ``(seed, e, 0)``, and item
  position ``p`` of that epoch is flipped iff a coin drawn from ``(seed, e, 1)`` says so
  (and the dataset allows flips).
- Step ``k`` takes stream positions ``[k * B, (k + 1) * B)``. Batches are always full; a
  batch may straddle an epoch boundary (no item is ever dropped).

So ``start_step=k`` computes step k's batch directly (at most two epoch permutations
drawn), without replaying earlier batches. The order depends only on the seed, the batch
size and the dataset's length: not on the model, on ``num_workers`` or on the device.
Timesteps and noise are the trainer's; seed them per step the same way to make resumed
runs exact.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from dicesearch.data._text import unwrap_worker_errors
from dicesearch.errors import DataError

__all__ = ["fixed_batches", "step_plan"]

_ORDER, _FLIPS = 0, 1  # stream ids for the per-epoch generators


def _generator(seed: int, epoch: int, stream: int) -> torch.Generator:
    # SeedSequence mixes (seed, epoch, stream) into well-separated 64-bit seeds.
    state = np.random.SeedSequence([seed, epoch, stream]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


class _Epochs:
    """Lazily drawn per-epoch permutations and flip coins, keeping only the last two."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed = size, seed
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        if epoch not in self._cache:
            order = torch.randperm(self.size, generator=_generator(self.seed, epoch, _ORDER))  # (N,)
            flips = torch.randint(0, 2, (self.size,), generator=_generator(self.seed, epoch, _FLIPS)).bool()  # (N,)
            self._cache = {e: v for e, v in self._cache.items() if e == epoch - 1}
            self._cache[epoch] = (order, flips)
        return self._cache[epoch]


def _check(size: int, batch_size: int, seed: int, step: int) -> None:
    if size < 1:
        raise DataError("fixed_batches: the dataset is empty; check data.path")
    if batch_size < 1:
        raise DataError(f"batch_size {batch_size}: must be at least 1; set a positive batch size")
    if seed < 0:
        raise DataError(f"seed {seed}: must be >= 0; set a non-negative seed")
    if step < 0:
        raise DataError(f"start_step {step}: must be >= 0; resume from a non-negative step")


def _plan(epochs: _Epochs, batch_size: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    positions = torch.arange(step * batch_size, (step + 1) * batch_size)  # (B,) stream positions
    epoch_of, offset = positions // epochs.size, positions % epochs.size  # (B,), (B,)
    indices = torch.empty(batch_size, dtype=torch.int64)
    flips = torch.empty(batch_size, dtype=torch.bool)
    for epoch in epoch_of.unique().tolist():
        mask = epoch_of == epoch
        order, coins = epochs(epoch)
        indices[mask] = order[offset[mask]]
        flips[mask] = coins[offset[mask]]
    return indices, flips  # (B,), (B,)


def step_plan(size: int, batch_size: int, seed: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Dataset indices (B,) int64 and flip coins (B,) bool of training step ``step``.

    The coins are drawn whether or not the dataset allows flips, so the order never
    depends on ``hflip``; ``fixed_batches`` ignores them when flips are off.
    """
    _check(size, batch_size, seed, step)
    return _plan(_Epochs(size, seed), batch_size, step)


class _Steps:
    """Batch sampler: lists of (index, flip) from ``start_step`` on (forever if num_steps is None)."""

    def __init__(self, size: int, batch_size: int, seed: int, start_step: int, num_steps: int | None, hflip: bool):
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.start_step, self.num_steps, self.hflip = start_step, num_steps, hflip

    def __iter__(self) -> Iterator[list[tuple[int, bool]]]:
        epochs = _Epochs(self.size, self.seed)
        step = self.start_step
        while self.num_steps is None or step < self.start_step + self.num_steps:
            indices, flips = _plan(epochs, self.batch_size, step)
            yield list(zip(indices.tolist(), (flips & self.hflip).tolist()))
            step += 1

    def __len__(self) -> int:
        if self.num_steps is None:
            raise TypeError("an endless fixed_batches stream has no length")
        return self.num_steps


class _Flipping(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Fetches ``dataset[index]`` and mirrors x along its last (width) axis when asked."""

    def __init__(self, dataset: Dataset[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, bool]) -> tuple[torch.Tensor, torch.Tensor]:
        index, flip = key
        x, y = self.dataset[index]  # (C, H, W), ()
        return (x.flip(-1) if flip else x), y


def fixed_batches(
    dataset: Dataset[tuple[torch.Tensor, torch.Tensor]],
    batch_size: int,
    seed: int,
    *,
    start_step: int = 0,
    num_steps: int | None = None,
    num_workers: int = 0,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield training batches ``(x (B, C, H, W) float32, y (B,) int64)`` in the fixed order.

    ``start_step=k`` yields exactly what a run from step 0 yields from its k-th batch on.
    ``num_steps=None`` never stops. Flips happen only if ``dataset.hflip`` is true.
    ``num_workers`` > 0 decodes in worker processes; the batches are the same.
    """
    size = len(dataset)  # type: ignore[arg-type]
    _check(size, batch_size, seed, start_step)
    if num_steps is not None and num_steps < 0:
        raise DataError(f"num_steps {num_steps}: must be >= 0; ask for a non-negative number of steps")
    steps = _Steps(size, batch_size, seed, start_step, num_steps, bool(getattr(dataset, "hflip", False)))
    loader = DataLoader(_Flipping(dataset), batch_sampler=steps, num_workers=num_workers)
    return unwrap_worker_errors(iter(loader))
