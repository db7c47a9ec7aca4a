"""Static analysis of a spec (DICE Tab. 2): parameters, multiply-adds, FLOPs, samples/s.

Multiply-adds follow the counting conventions of :mod:`dicesearch.costs` (FFTs, complex
products and declared costs included) and are broken down per component: each block
type, stage inputs, long skips, connectors, heads and the shared conditioning.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from dicesearch.analysis.breakdown import ComponentCost, component_costs
from dicesearch.analysis.flops import count_flops
from dicesearch.model import build_model


@dataclass(frozen=True)
class StageProfile:
    index: int
    block: str
    channels: int
    depth: int
    grid: int
    parameters: int


@dataclass(frozen=True)
class Profile:
    name: str
    device: str
    parameters: int  # every parameter (incl. frozen tables such as DiT's sin-cos)
    trainable_parameters: int
    shared_parameters: int  # conditioning: embedders used by every stage
    stages: list[StageProfile]
    macs: int  # per forward at batch 1
    flops: int
    sampling_steps: int
    batch_size: int
    seconds_per_forward: float
    timed_forwards: int
    samples_per_second: float = field(default=0.0)
    components: list[ComponentCost] = field(default_factory=list)  # per block type, heads, ...


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def example_inputs(spec, batch_size: int, device: torch.device):
    g = torch.Generator().manual_seed(0)
    res, ch = spec.input.resolution, spec.input.channels
    x = torch.randn(batch_size, ch, res, res, generator=g).to(device)
    t = torch.randint(0, 1000, (batch_size,), generator=g).to(device)
    y = torch.randint(0, max(spec.input.num_classes, 1), (batch_size,), generator=g).to(device) if spec.input.num_classes else None
    return x, t, y


@torch.inference_mode()
def profile_spec(
    spec,
    registry=None,
    device: str | torch.device = "cpu",
    sampling_steps: int = 250,
    batch_size: int = 1,
    timed_forwards: int = 3,
    dtype: torch.dtype | None = None,
) -> Profile:
    """Build the spec's model on ``device`` and measure it.

    Multiply-adds and FLOPs are for one forward at batch 1. Samples/s is for
    ``sampling_steps`` denoiser evaluations per sample at ``batch_size``, extrapolated
    from ``timed_forwards`` timed forwards after one warm-up (the sampler's own work is
    negligible next to the network's).
    """
    device = torch.device(device)
    model = build_model(spec, registry).to(device).eval()
    parameters = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    shared = sum(p.numel() for p in model.conditioning.parameters())
    stages = [
        StageProfile(
            index=i,
            block=s.block.kind,
            channels=s.channels,
            depth=s.depth,
            grid=spec.grid(i),
            parameters=sum(p.numel() for p in model.stages[i].parameters()),
        )
        for i, s in enumerate(spec.stages)
    ]
    x1, t1, y1 = example_inputs(spec, 1, device)
    flops = count_flops(lambda: model(x1, t1, y1))
    x, t, y = example_inputs(spec, batch_size, device)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else torch.autocast(device.type, enabled=False)
    with autocast:
        model(x, t, y)  # warm-up
        _sync(device)
        start = time.perf_counter()
        for _ in range(timed_forwards):
            model(x, t, y)
        _sync(device)
    per_forward = (time.perf_counter() - start) / timed_forwards
    return Profile(
        name=spec.name,
        device=str(device),
        parameters=parameters,
        trainable_parameters=trainable,
        shared_parameters=shared,
        stages=stages,
        macs=flops.macs,
        flops=flops.flops,
        sampling_steps=sampling_steps,
        batch_size=batch_size,
        seconds_per_forward=per_forward,
        timed_forwards=timed_forwards,
        samples_per_second=batch_size / (per_forward * sampling_steps),
        components=component_costs(model, [s.block.kind for s in spec.stages], flops),
    )
