"""The block contract, as executable checks (see :mod:`dicesearch.testing`)."""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from dicesearch.conditioning import ConditionSignal

from dicesearch.model import build_model
from dicesearch.registry import Registry, default_registry
from dicesearch.spec import dump_spec, parse_spec
from dicesearch.spec.io import read_yaml

Layout = Literal["single", "noise", "features"]
LAYOUTS: tuple[Layout, ...] = ("single", "noise", "features")


def tiny_spec(
    block: str,
    conditioning: str = "adaln_zero",
    *,
    block_params: dict | None = None,
    conditioning_params: dict | None = None,
    layout: Layout = "single",
    channels: int = 32,
    resolution: int = 8,
    num_classes: int = 4,
    learn_sigma: bool = True,
    registry: Registry | None = None,
):
    """A small spec exercising ``block``: one stage at 8x8, or a 4x4 -> 8x8 cascade."""
    stage = {"channels": channels, "depth": 2, "block": {"kind": block, **(block_params or {})}}
    if layout == "single":
        stages = [{**stage, "patch_size": 1, "long_skip": True, "position_embedding": "learned"}]
    else:
        stages = [{**stage, "patch_size": 2, "depth": 3, "long_skip": True}, {**stage, "patch_size": 1}]
    data = {
        "name": f"contract-{block}-{conditioning}-{layout}",
        "input": {"channels": 3, "resolution": resolution, "num_classes": num_classes, "learn_sigma": learn_sigma},
        "conditioning": {"kind": conditioning, **(conditioning_params or {})},
        "cascade": {"kind": "features" if layout == "features" else "noise", "features_from": "all_blocks"},
        "stages": stages,
    }
    return parse_spec(data, source=data["name"], registry=registry or default_registry())


class BuiltBlock(NamedTuple):
    """One block as a stage builds it, and inputs for it (see :func:`build_block`)."""

    module: torch.nn.Module  # forward(x, signal) -> (B, H, W, C)
    x: torch.Tensor  # (B, H, W, C) standard normal features
    signal: ConditionSignal  # the conditioning of a random (t, y) batch


def build_block(
    block: str,
    conditioning: str = "adaln_zero",
    *,
    block_params: dict | None = None,
    channels: int = 32,
    resolution: int = 8,
    batch: int = 2,
    seed: int = 0,
    registry: Registry | None = None,
) -> BuiltBlock:
    """The first block of :func:`tiny_spec`'s model, with inputs, for tests of one block.

    The block is validated, built and initialised exactly as in a real model (the spec's
    init scheme, then ``reset_special_parameters()``), inside a model whose conditioning
    method produced ``signal``. ``x`` is ``(batch, resolution, resolution, channels)``.
    """
    registry = registry or default_registry()
    spec = tiny_spec(block, conditioning, block_params=block_params, channels=channels, resolution=resolution, registry=registry)
    torch.manual_seed(seed)
    model = build_model(spec, registry)
    _, t, y = _inputs(spec, batch, seed)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(batch, resolution, resolution, channels, generator=g)
    with torch.no_grad():
        signal = model.conditioning(t, y)
    return BuiltBlock(model.stages[0].blocks[0], x, signal)


def _inputs(spec, batch: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    r, c = spec.input.resolution, spec.input.channels
    x = torch.randn(batch, c, r, r, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    y = torch.randint(0, spec.input.num_classes, (batch,), generator=g) if spec.input.num_classes else None
    return x, t, y


def check_output_shapes(spec, registry: Registry | None = None) -> None:
    """Output (B, C_out, H, W); every stage's prediction at its stated resolution."""
    model = build_model(spec, registry)
    x, t, y = _inputs(spec)
    predictions = model.forward_stages(x, t, y)
    assert len(predictions) == len(spec.stages), f"{len(predictions)} predictions for {len(spec.stages)} stages"
    last = len(spec.stages) - 1
    for i, pred in enumerate(predictions):
        side = spec.prediction_side(i)
        channels = spec.output_channels if i == last else spec.input.channels
        expected = (x.shape[0], channels, side, side)
        assert tuple(pred.shape) == expected, f"{spec.name}: stage {i} predicted {tuple(pred.shape)}, expected {expected}"
    out = model(x, t, y)
    assert out.shape == predictions[-1].shape, "forward() must return the last stage's prediction"


@torch.no_grad()
def _perturb(model: torch.nn.Module, seed: int = 1) -> None:
    """Move every parameter off its initial value (zero-initialised gates, p1 == p2, ...)."""
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        if p.requires_grad:
            p.add_(0.05 * torch.randn(p.shape, generator=g))


def check_gradients_reach_every_parameter(spec, registry: Registry | None = None) -> None:
    """Every trainable parameter gets a non-zero gradient (after perturbing zero-inits)."""
    model = build_model(spec, registry)
    _perturb(model)
    x, t, y = _inputs(spec)
    loss = sum(pred.square().mean() for pred in model.forward_stages(x, t, y))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert not missing, f"{spec.name}: no gradient reaches {', '.join(missing[:8])}" + (" ..." if len(missing) > 8 else "")


def check_finite(spec, dtype: torch.dtype | None = None, registry: Registry | None = None) -> None:
    """Forward and backward stay finite in fp32, or under CPU autocast to ``dtype``."""
    model = build_model(spec, registry)
    _perturb(model)
    x, t, y = _inputs(spec)
    with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
        predictions = model.forward_stages(x, t, y)
        loss = sum(pred.float().square().mean() for pred in predictions)
    where = f"{spec.name} ({dtype or 'fp32'})"
    for i, pred in enumerate(predictions):
        assert torch.isfinite(pred).all(), f"{where}: stage {i} prediction has NaN/inf"
    loss.backward()
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad, f"{where}: non-finite gradient in {', '.join(bad[:8])}"


def check_seeded_determinism(spec, registry: Registry | None = None) -> None:
    """The same seed builds the same weights and outputs; another seed, other weights."""
    def build(seed: int):
        torch.manual_seed(seed)
        return build_model(spec, registry)

    a, b, c = build(0), build(0), build(1)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), f"{spec.name}: parameter {name} differs between two builds with seed 0"
    x, t, y = _inputs(spec)
    with torch.no_grad():
        assert torch.equal(a(x, t, y), b(x, t, y)), f"{spec.name}: same seed, same input, different output"
    differs = any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters(), strict=True))
    assert differs, f"{spec.name}: seeds 0 and 1 built identical weights (is the RNG used?)"


class _NarrowResults(TorchDispatchMode):
    """Records every operation that produces a floating tensor narrower than float64."""

    NARROW = (torch.float32, torch.float16, torch.bfloat16, torch.complex64)

    def __init__(self):
        super().__init__()
        self.found: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in tree_flatten(out)[0]:
            if isinstance(value, torch.Tensor) and value.dtype in self.NARROW:
                self.found.append(f"{func} -> {value.dtype}")
        return out


def check_float64(spec, registry: Registry | None = None) -> None:
    """After ``model.double()`` every operation runs in float64 and computes what fp32 does."""
    model = build_model(spec, registry)
    _perturb(model)
    x, t, y = _inputs(spec)
    with torch.no_grad():
        expected = model(x, t, y)
        model.double()
        x = x.double()
        with _NarrowResults() as watch:
            out = model(x, t, y)
    assert out.dtype == torch.float64, f"{spec.name}: model.double() returned {out.dtype}"
    narrow = sorted(set(watch.found))
    assert not narrow, f"{spec.name}: under model.double() these ops computed in lower precision: {', '.join(narrow[:6])}"
    scale = float(expected.abs().max()) or 1.0
    error = float((out - expected.double()).abs().max())
    assert error <= 1e-4 * scale, f"{spec.name}: float64 and float32 outputs differ by {error:.3g} (max |output| {scale:.3g})"


def check_spec_round_trip(spec, registry: Registry | None = None) -> None:
    """spec -> YAML -> spec is exact, and so is YAML -> spec -> YAML."""
    text = dump_spec(spec)
    again = parse_spec(read_yaml(text, "round-trip"), "round-trip", registry or default_registry(), text)
    assert again == spec, f"{spec.name}: spec changed through YAML:\n{text}"
    assert dump_spec(again) == text, f"{spec.name}: YAML changed through a spec"


def check_block(
    block: str,
    conditionings: tuple[str, ...] | None = None,
    *,
    block_params: dict | None = None,
    layouts: tuple[Layout, ...] = LAYOUTS,
    registry: Registry | None = None,
) -> None:
    """Run every contract check for ``block`` with each conditioning and layout."""
    registry = registry or default_registry()
    for conditioning in conditionings or tuple(sorted(registry.conditionings)):
        for layout in layouts:
            spec = tiny_spec(block, conditioning, block_params=block_params, layout=layout, registry=registry)
            check_spec_round_trip(spec, registry)
            check_output_shapes(spec, registry)
            check_gradients_reach_every_parameter(spec, registry)
            check_finite(spec, None, registry)
            check_finite(spec, torch.bfloat16, registry)
            check_float64(spec, registry)
            check_seeded_determinism(spec, registry)
