"""Idle cores (``dicesearch.speed.cores``): what the sweep offers a running trial, what the trial
takes and keeps, the idle time it reads, and what two threads train against one.

Stated tolerance for training on two threads: each step's loss relative 1e-5 of one thread's,
and every weight within 1e-5 of the largest move Adam makes (as the fast-kernel tests).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from dicesearch.data import load_dataset
from dicesearch.speed.cores import IDLE_SLACK, KEEP_RATIO, RETRY_WINDOWS, IdleCores, ThreadOffers, offered_threads
from dicesearch.sweep.space.search_space import load_search_space
from dicesearch.train import TrainConfig, train

SPACE = Path(__file__).resolve().parents[2] / "search_spaces" / "cascade.yaml"


def test_the_idle_workers_threads_are_shared_out_among_the_running_trials():
    assert offered_threads(1, running=2, idle_workers=0) == 1  # everyone busy: their own
    assert offered_threads(1, running=1, idle_workers=1) == 2  # the default sweep's end
    assert offered_threads(2, running=1, idle_workers=1) == 4
    assert offered_threads(1, running=2, idle_workers=1) == 1  # one core among two: whole threads only
    assert offered_threads(1, running=2, idle_workers=2) == 2
    assert offered_threads(1, running=0, idle_workers=2) == 1


class _Machine:
    """A fake clock, idle-core reading and thread setter for ThreadOffers."""

    def __init__(self):
        self.now, self.idle, self.idle_now, self.set, self.probes = 0.0, 1.0, None, [], 0

    def offers(self, base: int = 1) -> ThreadOffers:
        return ThreadOffers(base, set_threads=self.set.append, clock=lambda: self.now, idle_cores=lambda: self.idle, probe=self._probe)

    def _probe(self) -> float | None:
        self.probes += 1
        return self.idle if self.idle_now is None else self.idle_now

    def steps(self, offers: ThreadOffers, start: int, windows: int, seconds_per_step: float, offered: int | None, every: int = 25) -> None:
        for k in range(1, windows + 1):
            self.now += every * seconds_per_step
            offers.at_report(start + k * every, offered)


def test_an_offer_is_taken_after_an_own_threads_window_and_kept_while_it_pays():
    m = _Machine()
    offers = m.offers()
    offers.at_report(25, 2)  # the first report: nothing timed yet
    assert offers.current == 1 and m.set == []
    m.steps(offers, 25, 1, 0.10, offered=2)  # one window at one thread, the other core idle: take two
    assert offers.current == 2 and m.set == [2]
    m.steps(offers, 50, 3, 0.06, offered=2)  # 0.6 of the own step: kept
    assert offers.current == 2 and m.set == [2] and offers.most == 2
    m.steps(offers, 125, 1, 0.06, offered=1)  # the idle worker claimed a trial: back at once
    assert offers.current == 1 and m.set == [2, 1]


def test_an_offer_that_does_not_pay_is_left_at_once_and_tried_again_only_after_a_wait_that_doubles():
    m = _Machine()
    offers = m.offers()
    offers.at_report(25, 2)
    m.steps(offers, 25, 1, 0.10, offered=2)
    assert offers.current == 2
    m.steps(offers, 50, 1, 0.10 * KEEP_RATIO * 1.05, offered=2)  # barely faster: not enough
    assert offers.current == 1 and 2 in offers.declined
    m.steps(offers, 75, RETRY_WINDOWS - 1, 0.10, offered=2)  # waiting, the core idle all along
    assert offers.current == 1 and m.set == [2, 1]
    m.steps(offers, 75 + 25 * (RETRY_WINDOWS - 1), 1, 0.10, offered=2)  # the wait is over: tried again
    assert offers.current == 2 and m.set == [2, 1, 2]
    step = 100 + 25 * (RETRY_WINDOWS - 1)
    m.steps(offers, step, 1, 0.10, offered=2)  # no faster again: back, and twice the wait
    assert offers.current == 1 and offers.declined[2] == 2 * RETRY_WINDOWS
    m.steps(offers, step + 25, 2 * RETRY_WINDOWS - 1, 0.10, offered=2)
    assert offers.current == 1
    m.steps(offers, step + 25 * 2 * RETRY_WINDOWS, 1, 0.06, offered=2)
    assert offers.current == 2 and m.set == [2, 1, 2, 1, 2]


def test_a_count_that_did_not_pay_is_not_tried_again_while_the_cores_are_busy():
    m = _Machine()
    offers = m.offers()
    offers.at_report(25, 2)
    m.steps(offers, 25, 1, 0.10, offered=2)
    m.steps(offers, 50, 1, 0.10, offered=2)  # declined
    m.idle, m.idle_now = 0.2, 0.2  # another job on the core meanwhile
    m.steps(offers, 75, 3 * RETRY_WINDOWS, 0.10, offered=2)
    assert offers.current == 1 and m.set == [2, 1]


def test_no_offer_is_taken_where_the_cores_are_not_idle_in_fact():
    m = _Machine()
    m.idle = 1.0 - IDLE_SLACK - 0.05  # another job holds part of the core the sweep thinks idle
    offers = m.offers()
    offers.at_report(25, 2)
    m.steps(offers, 25, 4, 0.10, offered=2)
    assert offers.current == 1 and m.set == []
    m.idle = 1.0
    m.steps(offers, 125, 1, 0.10, offered=2)
    assert offers.current == 2


def test_a_neighbour_that_ended_within_the_window_gives_its_core_at_the_report_if_it_is_idle_now():
    # the window saw the core idle for a third of its time (the neighbour ended within it); a
    # probe at the report finds it idle now: taken at once, not a window later (a rung's scoring
    # may follow this report and would run on one thread beside an idle core)
    m = _Machine()
    offers = m.offers()
    offers.at_report(25, 1)
    m.steps(offers, 25, 1, 0.10, offered=1)  # own threads measured
    m.idle, m.idle_now = 0.33, 1.0
    m.steps(offers, 50, 1, 0.10, offered=2)
    assert offers.current == 2 and m.set == [2] and m.probes == 1
    # the same window with the core still busy at the report (another job): not taken
    m = _Machine()
    offers = m.offers()
    offers.at_report(25, 1)
    m.steps(offers, 25, 1, 0.10, offered=1)
    m.idle, m.idle_now = 0.33, 0.1
    m.steps(offers, 50, 2, 0.10, offered=2)
    assert offers.current == 1 and m.set == [] and m.probes == 2
    m.steps(offers, 100, 1, 0.10, offered=1)  # no offer beyond its own: no probe either
    assert m.probes == 2


def test_the_probe_reads_the_idle_cores_over_its_interval(monkeypatch):
    from dicesearch.speed import cores

    readings = iter([(100, 400, 2), (180, 500, 2)])  # 80 idle ticks of 100 over two CPUs: 1.6 cores idle
    monkeypatch.setattr(cores.IdleCores, "_read", lambda self: next(readings))
    slept = []
    monkeypatch.setattr(cores.time, "sleep", slept.append)
    assert cores.idle_now(0.05) == pytest.approx(1.6) and slept == [0.05]


def test_a_window_with_a_rung_in_it_times_nothing_and_takes_nothing():
    m = _Machine()
    offers = m.offers()
    offers.at_report(25, 1)
    m.steps(offers, 25, 1, 0.10, offered=1)
    offers.gap()  # the rung's sampling and scoring
    m.now += 30.0
    offers.at_report(75, 2)  # no window since the gap: wait for one
    assert offers.current == 1 and offers.seconds_per_step == {1: pytest.approx(0.10)}
    m.steps(offers, 75, 1, 0.10, offered=2)
    assert offers.current == 2


def test_the_idle_cores_are_read_from_the_cpus_this_process_may_use(tmp_path):
    mine = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
    other = max(mine) + 1  # a CPU outside this process's set: not counted

    def write(idle: int, busy: int) -> None:
        lines = ["cpu  0 0 0 0 0 0 0 0 0 0"]
        lines += [f"cpu{c} {busy} 0 0 {idle} 0 0 0 0 0 0" for c in mine]
        lines += [f"cpu{other} 0 0 0 {idle * 100} 0 0 0 0 0 0", "intr 1 2 3", "procs_running 3"]
        (tmp_path / "stat").write_text("\n".join(lines) + "\n")

    write(idle=100, busy=100)
    cores = IdleCores(str(tmp_path / "stat"))
    write(idle=175, busy=125)  # each CPU: 75 of 100 ticks idle
    assert cores() == pytest.approx(0.75 * len(mine))
    assert cores() is None  # no time passed
    assert IdleCores(str(tmp_path / "missing"))() is None


@pytest.mark.parametrize(
    "values",
    [
        {"conditioning.kind": "adaln_zero", "stages[0].channels": 64, "stages[2].depth": 1, "stages[*].block.lambda_init": 0.2},
        {"conditioning.kind": "tdln", "stages[0].channels": 128, "stages[2].depth": 3, "stages[*].block.lambda_init": 5.0},
    ],
)
def test_two_threads_train_what_one_thread_trains_to_float_rounding(values):
    space = load_search_space(SPACE)
    spec, data = space.apply(values), space.config.data
    dataset = load_dataset(data)
    config = TrainConfig(steps=6, batch_size=32, lr=4e-3, seed=3, checkpoint_every=10**9)
    before = torch.get_num_threads()
    runs = {}
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            runs[threads] = train(spec, data, config, dataset=dataset, device="cpu")
    finally:
        torch.set_num_threads(before)
    # one thread's depthwise convolutions and DICE merge-and-norm are the native kernels (fused
    # multiply-adds, their own order), two threads' PyTorch's: a gradient that is a sum of many
    # cancelling terms (a per-channel scale's) then differs by more than its terms' rounding, and
    # Adam divides it by its own size, so the runs part a little faster than one step's rounding:
    # losses measured 1.2e-5 apart by the sixth step (5e-5 allowed), parameters 8.4e-4 of the move (2e-3;
    # a wrong gradient would move them by a good part of the move)
    for got, want in zip(runs[2].losses, runs[1].losses, strict=True):
        assert abs(got - want) <= 5e-5 * abs(want)
    move = config.steps * config.lr  # the largest move Adam can make
    for got, want in zip(runs[2].model.parameters(), runs[1].model.parameters(), strict=True):
        assert float((got - want).detach().abs().max()) <= 2e-3 * move
