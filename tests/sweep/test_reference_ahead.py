"""The trials' reference statistics, computed at the sweep's start in a process of their own."""

from __future__ import annotations

import multiprocessing
import time

import numpy as np
import pytest

from dicesearch.data import DigitsSpec, load_dataset
from dicesearch.data.sources import FolderSpec
from dicesearch.objective import Budget, budget_reference
from dicesearch.sweep.lifecycle import reference_ahead
from dicesearch.sweep.lifecycle.process import trial_context
from dicesearch.sweep.lifecycle.reference_ahead import ReferenceAhead

DATA = DigitsSpec(resolution=8)
BUDGET = Budget(train_steps=3, batch_size=4, fid_samples=6, sampling_steps=2, report_every=1)


def _forked_here():
    if trial_context().get_start_method() != "forkserver":
        pytest.skip("trial processes are spawned here, not forked from a preloading server")


def test_it_writes_the_statistics_the_trials_then_read_without_computing(tmp_path, monkeypatch):
    _forked_here()
    monkeypatch.setenv("DICESEARCH_CACHE_DIR", str(tmp_path / "cache"))  # set after the server started: the child must see it
    ahead = ReferenceAhead.start(DATA, BUDGET, [7, 7], "cpu")
    assert ahead is not None
    assert ahead.wait(timeout=120) == 0
    (written,) = (tmp_path / "cache" / "fid").glob("*.npz")  # one seed, asked for twice: one file
    assert "-n6-seed7-" in written.name

    import dicesearch.metrics.evaluate as evaluate

    def no_computing(*args, **kwargs):
        raise AssertionError("a trial computed the reference statistics the process had written")

    dataset = load_dataset(DATA)
    monkeypatch.setattr(evaluate, "extract_features", no_computing)
    read = budget_reference(dataset, DATA, BUDGET, 7)  # what a trial does at its first rung
    monkeypatch.undo()

    monkeypatch.setenv("DICESEARCH_CACHE_DIR", str(tmp_path / "elsewhere"))
    here = budget_reference(dataset, DATA, BUDGET, 7)  # computed in this process, independently
    np.testing.assert_allclose(read.pool.mu, here.pool.mu, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(read.pool.sigma, here.pool.sigma, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(read.spatial.sigma, here.spatial.sigma, rtol=1e-5, atol=1e-9)
    assert read.key == here.key


def test_not_started_where_trials_are_spawned_or_on_a_gpu(monkeypatch):
    import dicesearch.sweep.lifecycle.process as process

    monkeypatch.setattr(process, "trial_context", lambda: multiprocessing.get_context("spawn"))
    assert ReferenceAhead.start(DATA, BUDGET, [7], "cpu") is None
    monkeypatch.undo()
    _forked_here()
    import torch

    import dicesearch.devices as devices

    monkeypatch.setattr(devices, "resolve_device", lambda device: torch.device("cuda"))
    assert ReferenceAhead.start(DATA, BUDGET, [7], "cuda") is None


def test_close_ends_a_process_still_computing():
    _forked_here()
    context = trial_context()
    ahead = ReferenceAhead(context.Process(target=_sleep, daemon=True))  # started from a thread
    deadline = time.monotonic() + 120
    while ahead.process.pid is None and time.monotonic() < deadline:  # the server may still be starting
        time.sleep(0.05)
    assert ahead.wait(timeout=0.5) is None  # still running
    ahead.close()
    assert not ahead.process.is_alive() and ahead.process.exitcode is not None and ahead.process.exitcode < 0


def test_a_failure_in_the_process_is_left_for_the_trials(tmp_path):
    """Nothing it meets fails the sweep (a trial meets the same problem and reports it): the
    process ends normally and writes nothing."""
    missing = FolderSpec(kind="folder", path=tmp_path / "no-such-folder", resolution=8)
    child = multiprocessing.get_context("spawn").Process(target=reference_ahead._compute, args=(missing, BUDGET, (7,), {"DICESEARCH_CACHE_DIR": str(tmp_path)}))
    child.start()
    child.join(timeout=120)
    assert child.exitcode == 0
    assert not any(tmp_path.rglob("*.npz"))


def _sleep() -> None:
    time.sleep(60)
