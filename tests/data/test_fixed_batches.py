from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset

from dicesearch.data import DigitsSpec, fixed_batches, load_dataset, step_plan
from dicesearch.errors import DataError


class Toy(Dataset):
    """Item i is an asymmetric (1, 2, 3) tensor that encodes i; counts fetches."""

    hflip = True

    def __init__(self, size: int = 10) -> None:
        self.size, self.fetches = size, 0

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int):
        self.fetches += 1
        x = torch.tensor([[index, 100, 200], [index, 100, 200]], dtype=torch.float32)[None]  # (1, 2, 3)
        return x, torch.tensor(index % 3)


def _run(dataset, batch_size=4, seed=0, **kwargs):
    return list(fixed_batches(dataset, batch_size, seed, **kwargs))


def _same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))


def test_same_seed_same_batches_different_seed_different():
    digits = load_dataset(DigitsSpec())
    first = _run(digits, 32, seed=42, num_steps=4)
    assert _same(first, _run(digits, 32, seed=42, num_steps=4))
    assert not _same(first, _run(digits, 32, seed=43, num_steps=4))
    x, y = first[0]
    assert x.shape == (32, 1, 16, 16) and x.dtype == torch.float32 and y.shape == (32,) and y.dtype == torch.int64


def test_start_step_continues_the_full_run():
    full = _run(Toy(), num_steps=12)  # 48 items: almost 5 epochs of 10, batches straddle epochs
    for k in (1, 2, 5, 11):
        assert _same(_run(Toy(), start_step=k, num_steps=12 - k), full[k:])


def test_resuming_does_not_replay_earlier_batches():
    toy = Toy()
    (x, _), = _run(toy, start_step=10**6, num_steps=1)
    assert toy.fetches == 4 and x.shape == (4, 1, 2, 3)


def test_every_epoch_is_a_permutation_and_flips_are_mixed():
    size, batch = 12, 4  # 3 steps per epoch
    plans = [step_plan(size, batch, seed=5, step=k) for k in range(6)]
    indices = torch.cat([i for i, _ in plans])
    flips = torch.cat([f for _, f in plans])
    for epoch in indices.view(2, size):
        assert sorted(epoch.tolist()) == list(range(size))
    assert not torch.equal(indices[:size], indices[size:])  # reshuffled each epoch
    assert 0 < int(flips.sum()) < len(flips)


def test_flips_mirror_the_width_axis_and_respect_hflip():
    toy = Toy()
    for step, (x, y) in enumerate(_run(toy, seed=3, num_steps=5)):
        indices, flips = step_plan(len(toy), 4, seed=3, step=step)
        assert x[:, 0, :, 0].tolist() == [[200.0] * 2 if f else [float(i)] * 2 for i, f in zip(indices.tolist(), flips.tolist())]
        assert y.tolist() == [i % 3 for i in indices.tolist()]
    toy.hflip = False
    unflipped = _run(toy, seed=3, num_steps=5)
    assert all(bool((x[:, 0, :, 2] == 200).all()) for x, _ in unflipped)
    # The order itself does not depend on hflip.
    for step, (_, y) in enumerate(unflipped):
        assert y.tolist() == [i % 3 for i in step_plan(len(toy), 4, seed=3, step=step)[0].tolist()]


def test_batches_larger_than_the_dataset():
    (x, y), = _run(Toy(3), batch_size=7, num_steps=1)
    assert x.shape == (7, 1, 2, 3) and len(y) == 7


def test_workers_give_the_same_batches():
    digits = load_dataset(DigitsSpec())
    assert _same(_run(digits, 16, seed=1, num_steps=3, num_workers=2), _run(digits, 16, seed=1, num_steps=3))


def test_endless_by_default():
    batches = fixed_batches(Toy(), 4, seed=0)
    assert sum(1 for _, _ in zip(range(30), batches)) == 30


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"batch_size": 0}, "batch_size 0"),
        ({"seed": -1}, "seed -1"),
        ({"start_step": -2}, "start_step -2"),
        ({"num_steps": -1}, "num_steps -1"),
    ],
)
def test_bad_arguments(kwargs, named, one_line_error):
    arguments = {"batch_size": 4, "seed": 0, **kwargs}
    with pytest.raises(DataError) as excinfo:
        fixed_batches(Toy(), **arguments)
    one_line_error(excinfo, named)


def test_empty_dataset(one_line_error):
    with pytest.raises(DataError) as excinfo:
        fixed_batches(Toy(0), 4, 0)
    one_line_error(excinfo, "data.path")


def test_the_order_itself_is_pinned():
    # A change here silently changes every run's data order (and breaks comparisons with
    # earlier runs): if a torch/numpy upgrade moves it, say so in the release notes.
    assert [step_plan(10, 4, seed=42, step=k)[0].tolist() for k in (0, 3)] == [[0, 7, 6, 1], [2, 1, 0, 4]]
    assert [step_plan(10, 4, seed=42, step=k)[1].int().tolist() for k in (0, 3)] == [[1, 1, 1, 1], [0, 1, 1, 1]]
