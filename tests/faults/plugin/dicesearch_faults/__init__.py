"""A block that fails on purpose, the way real trials fail, for the fault-injection tests.

Never installed: the tests put this folder on PYTHONPATH, where its ``.dist-info`` makes it
a distribution with a ``dicesearch.plugins`` entry point, exactly as ``pip install`` would.
So the sweep and its trial processes load it through the same door as any plugin.

``block: {kind: fault, fault: <what>, at_step: N}`` is a residual pointwise MLP that, from
its N-th training forward pass on (counted per built block), does ``fault``:

- ``none``: nothing; the trial completes.
- ``raise``: raises RuntimeError (a bug in a trial).
- ``nan``: returns NaN (a diverging loss).
- ``oom``: raises ``torch.OutOfMemoryError`` with CUDA's message (what an oversized trial
  does on a GPU; simulated, so it runs on CPU).
- ``slow``: sleeps 2 s per training step (a trial long enough to be killed in the middle).
- ``hang``: sleeps for an hour (a deadlock; the per-trial time limit must stop it).
- ``build``: raises while the block is built, in whichever process builds it.
"""

from __future__ import annotations

import time
from typing import Literal

import torch
from pydantic import Field, PositiveInt
from torch import nn

from dicesearch.conditioning import ConditionSignal
from dicesearch.plugin_api import BlockContext, BlockParams, BlockType, hookimpl

Fault = Literal["none", "raise", "nan", "oom", "slow", "hang", "build"]


class FaultParams(BlockParams):
    fault: Fault = Field("none", description="What goes wrong (see the module's docstring).")
    at_step: PositiveInt = Field(3, description="The training forward pass (1-based) from which it goes wrong.")


class FaultBlock(nn.Module):
    """(B, H, W, C) -> (B, H, W, C): x + MLP(norm(x)), then the injected fault."""

    def __init__(self, params: FaultParams, ctx: BlockContext):
        super().__init__()
        if params.fault == "build":
            raise RuntimeError("injected fault: the block's builder raised")
        dim = ctx.geometry.channels
        self.fault, self.at_step = params.fault, params.at_step
        self.modulator = ctx.conditioning.modulator(dim, sublayers=1)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.training_calls = 0

    def forward(self, x: torch.Tensor, signal: ConditionSignal) -> torch.Tensor:
        mod = self.modulator(signal)
        out = x + mod.gate(0, self.mlp(mod.norm(0, x)))
        if self.training:
            self.training_calls += 1
        if not self.training or self.training_calls < self.at_step:
            return out
        if self.fault == "raise":
            raise RuntimeError(f"injected fault at training step {self.training_calls}")
        if self.fault == "nan":
            return out * float("nan")
        if self.fault == "oom":
            raise torch.OutOfMemoryError(
                "CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total capacity of 23.64 GiB "
                "(injected by dicesearch_faults)"
            )
        if self.fault == "slow":
            time.sleep(2.0)
        if self.fault == "hang":
            time.sleep(3600)
        return out


@hookimpl
def dicesearch_block_types():
    return [BlockType(name="fault", params=FaultParams, build=FaultBlock, description="Fails on purpose (tests only).")]
