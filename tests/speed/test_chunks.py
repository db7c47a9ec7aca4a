"""A training step as chunks of the batch on worker threads (``dicesearch.speed.chunks``).

The reference is the batch's own gradient: autograd of the whole batch's loss at one thread.
Stated tolerance: gradients and loss terms relative 1e-5 of it (float32 sums split in two and
added in another order); over training steps each loss relative 1e-5 of one thread's, and
the weights apart by at most 1e-5 of the distance training moved them. Reruns at two chunks
give the same bits.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
from torch import nn

from dicesearch.data import load_dataset
from dicesearch.speed.chunks import MIN_CHUNK, ThreadChunks, batch_independent, chunk_count
from dicesearch.sweep.space.search_space import load_search_space
from dicesearch.train import TrainConfig, train
from dicesearch.train.diffusion import NoiseSchedule, training_loss

SPACE = Path(__file__).resolve().parents[2] / "search_spaces" / "cascade.yaml"
VALUES = {"conditioning.kind": "adaln_zero", "stages[0].channels": 64, "stages[2].depth": 2, "stages[*].block.lambda_init": 0.5}


@pytest.fixture
def threads():
    """Set torch's thread count for a test and put it back after."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def test_a_batch_gets_one_chunk_per_thread_of_at_least_min_chunk_samples():
    assert chunk_count(1, 64) == 1  # one thread: torch's own step
    assert chunk_count(2, 64) == 2
    assert chunk_count(4, 64) == 4
    assert chunk_count(16, 64) == 64 // MIN_CHUNK  # chunks of MIN_CHUNK at least
    assert chunk_count(2, MIN_CHUNK * 2 - 1) == 1  # two chunks would be too small


def test_only_models_whose_samples_never_meet_are_chunked():
    assert batch_independent(nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.GroupNorm(2, 4), nn.Dropout(0.0)))
    assert batch_independent(nn.InstanceNorm2d(4))  # per sample
    assert not batch_independent(nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)))
    assert not batch_independent(nn.Sequential(nn.Conv2d(1, 4, 3), nn.Dropout2d(0.1)))
    space = load_search_space(SPACE)
    from dicesearch.model import build_model

    assert batch_independent(build_model(space.apply(VALUES)))


def _model_and_batch(batch: int = 48):
    from dicesearch.model import build_model

    space = load_search_space(SPACE)
    spec = space.apply(VALUES)
    torch.manual_seed(0)
    model = build_model(spec).train()
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(batch, 1, 16, 16, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    noise = torch.randn(batch, 1, 16, 16, generator=g)
    labels = torch.randint(0, 10, (batch,), generator=g)
    return spec, model, (x0, t, noise, labels)


def _relative(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).abs().max() / want.abs().max().clamp(min=1e-12))


@pytest.mark.parametrize("chunks", [2, 3])
def test_the_chunks_gradient_is_the_whole_batchs(threads, chunks):
    spec, model, (x0, t, noise, labels) = _model_and_batch()
    weights, schedule = spec.resolved_loss_weights(), NoiseSchedule()

    def loss_of(rows: slice = slice(None)):
        return training_loss(model, schedule, x0[rows], t[rows], noise[rows], labels[rows], weights, False)

    threads(1)
    want_terms = loss_of()
    want_terms.total.backward()
    want = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)

    threads(chunks)
    seen: list[tuple[str, int]] = []

    def recorded(rows: slice):
        seen.append((threading.current_thread().name, torch.get_num_threads()))
        return loss_of(rows)

    pool = ThreadChunks()
    try:
        terms = pool.backward(x0.shape[0], chunks, recorded)
    finally:
        pool.close()
    assert torch.get_num_threads() == chunks  # put back for the rest of the step
    assert len(seen) == chunks and all(name.startswith("train-chunk") and count == 1 for name, count in seen)
    assert _relative(terms.total, want_terms.total.detach()) <= 1e-5
    assert _relative(terms.mse, want_terms.mse) <= 1e-5 and terms.vlb is None
    for p, w in zip(model.parameters(), want, strict=True):
        assert p.grad is not None and _relative(p.grad, w) <= 1e-5


def _train(config: TrainConfig, count: int):
    space = load_search_space(SPACE)
    spec, data = space.apply(VALUES), space.config.data
    torch.set_num_threads(count)
    return train(spec, data, config, dataset=load_dataset(data), device="cpu")


def test_two_chunks_train_what_one_thread_trains_to_float_rounding_and_rerun_to_the_bit(threads):
    config = TrainConfig(steps=6, batch_size=32, lr=4e-3, seed=3, checkpoint_every=10**9, thread_chunks=True)
    one = _train(config, 1)
    two = _train(config, 2)
    again = _train(config, 2)
    for got, want in zip(two.losses, one.losses, strict=True):
        assert abs(got - want) <= 1e-5 * abs(want)
    # the weights: apart by at most 1e-5 of how far training moved them (Adam divides each
    # gradient by its own scale, so a weight whose gradient is near zero may move by rounding
    # as much as by a step: a bound per weight would measure that, not the chunks)
    from dicesearch.model import build_model

    torch.manual_seed(config.seed)  # the trainer's initial weights
    start = build_model(load_search_space(SPACE).apply(VALUES))
    apart = _distance(two.model.parameters(), one.model.parameters())
    assert apart <= 1e-5 * _distance(one.model.parameters(), start.parameters())
    assert two.losses == again.losses
    for got, rerun in zip(two.model.parameters(), again.model.parameters(), strict=True):
        assert torch.equal(got, rerun)


def _distance(a, b) -> float:
    return float(sum(((x - y).detach().double() ** 2).sum() for x, y in zip(a, b, strict=True)) ** 0.5)


def test_at_one_thread_the_chunked_setting_trains_the_same_bits(threads):
    base = TrainConfig(steps=4, batch_size=32, lr=4e-3, seed=5, checkpoint_every=10**9)
    plain = _train(base, 1)
    chunked = _train(base.model_copy(update={"thread_chunks": True}), 1)
    assert plain.losses == chunked.losses
    for a, b in zip(plain.model.parameters(), chunked.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_chunked_step_runs_its_other_ops_at_one_thread_and_puts_the_count_back(threads, monkeypatch):
    """The optimiser and the EMA of a chunked step at one intra-op thread, like its chunks
    (faster for the pick: ``benchmarks/sweep_speed.py --only chunks``)."""
    from dicesearch.train import trainer

    seen: list[int] = []
    update_ema = trainer.update_ema

    def recorded(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return update_ema(*args, **kwargs)

    monkeypatch.setattr(trainer, "update_ema", recorded)
    config = TrainConfig(steps=3, batch_size=32, lr=4e-3, seed=3, checkpoint_every=10**9, thread_chunks=True)
    _train(config, 2)
    assert seen == [1, 1, 1] and torch.get_num_threads() == 2
    seen.clear()
    _train(config.model_copy(update={"thread_chunks": False}), 2)  # not chunked: torch's own threads, as before
    assert seen == [2, 2, 2]
