"""Compute matching: the steps a budget of steps, training FLOPs or seconds buys a model."""

import math

import pytest
from pydantic import ValidationError

from dicesearch.analysis.flops import training_step_flops
from dicesearch.data import DigitsSpec
from dicesearch.objective import Budget
from dicesearch.testing import tiny_spec
from dicesearch.train.matching import matched_steps, measure_step_seconds


def _pair(registry):
    small = tiny_spec("dice", "adaln_zero", resolution=16, num_classes=10, registry=registry)
    digits = small.model_copy(update={"input": small.input.model_copy(update={"channels": 1})})
    wide = tiny_spec("dice", "adaln_zero", resolution=16, num_classes=10, channels=64, registry=registry)
    return digits, wide.model_copy(update={"input": digits.input})


def test_equal_flops_give_steps_inversely_proportional_to_a_steps_flops(registry):
    small, wide = _pair(registry)
    budget = Budget(match="flops", train_flops=5e11, batch_size=8)
    a, b = matched_steps(small, DigitsSpec(), budget), matched_steps(wide, DigitsSpec(), budget)
    assert a.step_flops == training_step_flops(small, 8) and b.step_flops == training_step_flops(wide, 8)
    assert b.step_flops > 2 * a.step_flops  # twice the channels: more than twice the work
    assert a.steps == math.floor(5e11 / a.step_flops) and b.steps == math.floor(5e11 / b.step_flops)
    assert a.steps * a.step_flops <= 5e11 < (a.steps + 1) * a.step_flops  # the budget, to within one step
    assert a.steps / b.steps == pytest.approx(b.step_flops / a.step_flops, rel=0.01)


def test_equal_steps_are_the_budgets_steps_whatever_the_model(registry):
    small, wide = _pair(registry)
    budget = Budget(train_steps=123, batch_size=8)
    assert matched_steps(small, DigitsSpec(), budget).steps == matched_steps(wide, DigitsSpec(), budget).steps == 123


def test_equal_seconds_come_from_a_measured_step(registry):
    small, _ = _pair(registry)
    budget = Budget(match="seconds", train_seconds=30.0, batch_size=8, compile="never")
    seconds = measure_step_seconds(small, DigitsSpec(), budget, device="cpu")
    assert 0 < seconds < 30
    matched = matched_steps(small, DigitsSpec(), budget, device="cpu")
    # measured again: the same order of magnitude (a shared machine's noise, not a formula)
    assert matched.step_seconds > 0 and matched.steps == max(1, math.floor(30.0 / matched.step_seconds))
    assert matched.steps == pytest.approx(30.0 / seconds, rel=2.0)


def test_a_budget_asks_for_the_amount_its_match_needs():
    with pytest.raises(ValidationError, match="match: flops needs train_flops"):
        Budget(match="flops")
    with pytest.raises(ValidationError, match="match: seconds needs train_seconds"):
        Budget(match="seconds")
    with pytest.raises(ValidationError, match="train_flops is only read with match: flops"):
        Budget(train_flops=1e12)
