"""``compile``: the decision rule, and compiled training against eager.

The compiled step (torch.compile, inductor) sums in another order than eager. Stated
tolerances: each step's loss relative 1e-4; every weight within 5 % of the largest move
Adam can make (0.05 * steps * lr), as for the fast kernels.

Compiling is slow on 2 cores (~1 min for the one-block model below, cold cache), so the
default run compiles one tiny DICE model; every block x conditioning method compiles
with ``DICESEARCH_COMPILE_TESTS=1`` (minutes).
"""

from __future__ import annotations

import os

import pytest
import torch

from dicesearch.data import DigitsSpec, load_dataset
from dicesearch.registry import default_registry
from dicesearch.spec import parse_spec
from dicesearch.speed.compile import MEASURED, CompileCost, decide_compile
from dicesearch.train import TrainConfig, train
from dicesearch.train.callbacks import Callback

_registry = default_registry()
ALL_CASES = [(b, c) for b in sorted(_registry.blocks) for c in sorted(_registry.conditionings)]
LOSS_RTOL, ADAM_MOVE_FRACTION = 1e-4, 0.05


def test_auto_compiles_only_where_the_measured_cost_is_paid_back():
    gpu = {"cuda": CompileCost(compile_seconds=60.0, step_ratio=0.5, eager_gflop_per_second=100.0, where="test")}
    cuda = torch.device("cuda")
    short = decide_compile("auto", cuda, 240, lambda: 10.0, gpu)  # 240 x 0.1 s x 0.5 = 12 s < 60 s
    long = decide_compile("auto", cuda, 2400, lambda: 10.0, gpu)  # 120 s > 60 s
    assert not short.compile and "would save ~12 s for ~60 s" in short.reason
    assert long.compile and "saves ~120 s" in long.reason
    assert not decide_compile("auto", cuda, 10**9, lambda: 1.0, {}).compile  # nothing measured: no
    assert decide_compile("always", torch.device("cpu"), 1, lambda: 1.0).compile
    assert not decide_compile("never", cuda, 10**9, lambda: 1.0, gpu).compile


def test_on_this_cpu_auto_never_compiles():
    """Measured: compiled steps are slower than the fast eager kernels on the 2-core CPU."""
    assert MEASURED["cpu"].step_ratio >= 1.0
    never_counted = lambda: pytest.fail("the FLOPs need not be counted")  # noqa: E731
    assert not decide_compile("auto", torch.device("cpu"), 10**9, never_counted).compile


class _Start(Callback):
    def on_train_start(self, start) -> None:
        self.start = start


def _tiny_spec(block: str, conditioning: str, channels: int = 8):
    params = {"heads": 2} if block in ("attention", "linear_attention") else {}
    stage = {"channels": channels, "depth": 1, "block": {"kind": block, **params}}
    return parse_spec(
        {
            "name": f"compile-{block}-{conditioning}",
            "input": {"channels": 1, "resolution": 8, "num_classes": 10, "learn_sigma": True},
            "conditioning": {"kind": conditioning},
            "stages": [{**stage, "patch_size": 2, "head": "linear"}],
        },
        registry=_registry,
    )


def _compare(block: str, conditioning: str) -> None:
    data = DigitsSpec(resolution=8)
    dataset = load_dataset(data)
    spec = _tiny_spec(block, conditioning)
    config = TrainConfig(steps=3, batch_size=4, lr=2e-3)
    start = _Start()
    compiled = train(spec, data, config.model_copy(update={"compile": "always"}), callbacks=[start], dataset=dataset, device="cpu")
    eager = train(spec, data, config.model_copy(update={"compile": "never"}), dataset=dataset, device="cpu")
    assert start.start.compiled and start.start.compile_reason == "compile: always"
    for got, want in zip(compiled.losses, eager.losses, strict=True):
        assert abs(got - want) <= LOSS_RTOL * abs(want)
    move = ADAM_MOVE_FRACTION * config.steps * config.lr
    for (name, p), q in zip(compiled.model.named_parameters(), eager.model.parameters()):
        assert float((p.detach() - q.detach()).abs().max()) <= move, name


@pytest.mark.slow
def test_compiled_training_matches_eager():
    _compare("dice", "adaln_zero")


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("DICESEARCH_COMPILE_TESTS"), reason="compiles 12 models (minutes); set DICESEARCH_COMPILE_TESTS=1")
@pytest.mark.parametrize(("block", "conditioning"), ALL_CASES, ids=["-".join(c) for c in ALL_CASES])
def test_compiled_training_matches_eager_for_every_block(block, conditioning):
    _compare(block, conditioning)
