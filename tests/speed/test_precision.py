"""``precision: auto`` on a CPU (``dicesearch.speed.precision``): bf16 autocast only where it was
measured faster and its scores inside the seed spread; the rule's reason reaches the run's start."""

from __future__ import annotations

import pytest
import torch

from dicesearch.data import DigitsSpec, load_dataset
from dicesearch.objective import Budget
from dicesearch.registry import default_registry
from dicesearch.speed.precision import BF16_SCORES_WITHIN_SEED_SPREAD, BF16_STEP_RATIO, StepRatio, cpu_kind, decide_precision
from dicesearch.testing import tiny_spec
from dicesearch.train import TrainConfig, train
from dicesearch.train.callbacks import Callback

CPU = torch.device("cpu")


def test_auto_takes_bf16_only_where_it_is_faster_and_the_scores_hold():
    def decided(ratio: float, scores: bool | None) -> str:
        return decide_precision("auto", CPU, {"amx": StepRatio(ratio, "test")}, scores, kind="amx").name

    assert decided(0.6, True) == "bf16"
    assert decided(0.6, None) == "fp32"  # faster, but what it does to the scores was not measured
    assert decided(0.6, False) == "fp32"  # faster, scores outside the seed spread
    assert decided(1.3, True) == "fp32"  # slower
    nothing = decide_precision("auto", CPU, {}, True, kind="amx")
    assert nothing.name == "fp32" and "not measured on this CPU (amx)" in nothing.reason


def test_a_given_precision_and_auto_off_the_cpu_are_left_as_they_are():
    assert decide_precision("bf16", CPU).name == "bf16"
    assert decide_precision("fp32", CPU).name == "fp32"
    assert decide_precision("auto", torch.device("cuda")).name == "auto"  # fp16 with a GradScaler there (train.precision)


def test_on_the_measured_cpu_auto_trains_in_fp32():
    """Measured: bf16 keeps the scores within the seed spread, but on the project's CPU
    (AVX512-BF16, no AMX) its steps are slower."""
    assert BF16_SCORES_WITHIN_SEED_SPREAD is True and BF16_STEP_RATIO["avx512_bf16"].ratio >= 1.0
    decision = decide_precision("auto", CPU, kind="avx512_bf16")
    assert decision.name == "fp32" and "slower" in decision.reason
    assert decide_precision("auto", CPU, kind="no_bf16_units").name == "fp32"
    assert cpu_kind() in ("amx", "avx512_bf16", "no_bf16_units")


class _Start(Callback):
    def on_train_start(self, start) -> None:
        self.start = start


@pytest.mark.parametrize("precision, expected", [("auto", "fp32"), ("bf16", "bf16")])
def test_the_run_starts_in_the_decided_precision_and_says_why(precision, expected, monkeypatch):
    monkeypatch.setattr("dicesearch.speed.precision.cpu_kind", lambda: "avx512_bf16")
    spec = tiny_spec("dice", "adaln_zero", layout="noise", resolution=8, registry=default_registry())
    spec = spec.model_copy(update={"input": spec.input.model_copy(update={"channels": 1, "num_classes": 10})})
    data = DigitsSpec(resolution=8)
    start = _Start()
    result = train(spec, data, TrainConfig(steps=2, batch_size=4, precision=precision), callbacks=[start], dataset=load_dataset(data), device="cpu")
    assert start.start.precision == expected and start.start.precision_reason.startswith(f"precision{' auto' if precision == 'auto' else ':'}")
    assert all(p.dtype == torch.float32 for p in result.model.parameters())  # the weights stay fp32 in every mode


def test_a_budget_carries_its_precision_to_the_training_run(monkeypatch):
    import dicesearch.train
    from dicesearch.objective import evaluate

    seen = []

    class Configured(Exception):
        pass

    def trained(spec, data, config, **kwargs):
        seen.append(config.precision)
        raise Configured  # enough: the run was configured

    monkeypatch.setattr(dicesearch.train, "train", trained)
    spec = tiny_spec("dice", "adaln_zero", layout="noise", resolution=8, registry=default_registry())
    with pytest.raises(Configured):
        evaluate(spec, DigitsSpec(resolution=8), Budget(train_steps=2, batch_size=4, precision="bf16"), count_static=False)
    assert seen == ["bf16"] and Budget().precision == "auto"
    with pytest.raises(Exception, match="precision"):
        Budget(precision="bf8")
