"""Every registered block x every conditioning method honours the block contract."""

import pytest
import torch

from dicesearch.registry import default_registry
from dicesearch.testing import (
    check_finite,
    check_float64,
    check_gradients_reach_every_parameter,
    check_output_shapes,
    check_seeded_determinism,
    check_spec_round_trip,
    tiny_spec,
)
from dicesearch.testing.contract import LAYOUTS

_registry = default_registry()
CASES = [
    (block, conditioning, layout)
    for block in sorted(_registry.blocks)
    for conditioning in sorted(_registry.conditionings)
    for layout in LAYOUTS
]


@pytest.fixture(params=CASES, ids=["-".join(c) for c in CASES])
def spec(request):
    block, conditioning, layout = request.param
    return tiny_spec(block, conditioning, layout=layout)


def test_output_shapes(spec):
    check_output_shapes(spec)


def test_every_parameter_gets_a_gradient(spec):
    check_gradients_reach_every_parameter(spec)


def test_finite_in_fp32(spec):
    check_finite(spec)


def test_finite_under_cpu_bf16_autocast(spec):
    check_finite(spec, torch.bfloat16)


FLOAT64_CASES = [(block, conditioning) for block, conditioning, layout in CASES if layout == "features"]


@pytest.mark.parametrize(("block", "conditioning"), FLOAT64_CASES, ids=["-".join(c) for c in FLOAT64_CASES])
def test_runs_in_float64(block, conditioning):
    """model.double() of a feature cascade (two stages, the connector, both conditioning paths)."""
    check_float64(tiny_spec(block, conditioning, layout="features"))


def test_seeded_determinism(spec):
    check_seeded_determinism(spec)


def test_spec_round_trip(spec):
    check_spec_round_trip(spec)


def test_the_checks_catch_a_broken_block():
    """The kit must fail a block whose parameter never reaches the output."""
    from pydantic import Field
    from torch import nn

    from dicesearch.plugin_api import BlockParams, BlockType, hookimpl
    from dicesearch.registry import Registry
    import dicesearch_plugins.adaln_zero as adaln_zero

    class LazyParams(BlockParams):
        width: int = Field(2)

    class LazyBlock(nn.Module):
        def __init__(self, params, ctx):
            super().__init__()
            self.unused = nn.Linear(4, 4)

        def forward(self, x, signal):
            return x

    class Plugin:
        @hookimpl
        def dicesearch_block_types(self):
            return [BlockType(name="lazy", params=LazyParams, build=LazyBlock)]

    registry = Registry.from_plugins(Plugin(), adaln_zero)
    spec = tiny_spec("lazy", registry=registry)
    with pytest.raises(AssertionError, match="no gradient reaches .*unused"):
        check_gradients_reach_every_parameter(spec, registry)


def test_build_block_returns_a_block_as_a_model_builds_it_with_inputs():
    from dicesearch.testing import build_block

    block, x, signal = build_block("convnext", "adaln_zero", block_params={"kernel_size": 3}, channels=16, resolution=4, batch=3)
    assert x.shape == (3, 4, 4, 16) and signal.t.shape == (3,)
    assert block.dwconv.kernel_size == (3, 3)
    out = block(x, signal)
    assert out.shape == x.shape
    assert torch.equal(out, x)  # adaLN-Zero's gates start at zero: a fresh block is the identity
    again = build_block("convnext", "adaln_zero", block_params={"kernel_size": 3}, channels=16, resolution=4, batch=3)
    assert torch.equal(again.x, x) and torch.equal(again.module.dwconv.weight, block.dwconv.weight)


# The options that reproduce official code, with every block: DiMR's TD-LN (time input,
# per-channel, RMS block norms, label in the first stage only) and Diffusion-RWKV's
# affine adaLN norms, with conditioned connectors and a plain head norm in one stage.
VARIANT_CONDITIONING = {
    "tdln_dimr": ("tdln", {"time_input": "dimr", "per_channel": True, "block_norm": "rms", "label_stages": "first", "eps": 1e-5}),
    "adaln_affine": ("adaln_zero", {"norm_affine": True, "block_eps": 1e-5}),
}
VARIANT_BLOCK_PARAMS = {"convnext": {"form": "dimr"}, "rwkv": {"stack_norms": True}}


def _variant_spec(block: str, variant: str):
    from dicesearch.spec import parse_spec

    conditioning, params = VARIANT_CONDITIONING[variant]
    spec = tiny_spec(block, conditioning, conditioning_params=params, block_params=VARIANT_BLOCK_PARAMS.get(block), layout="features")
    data = spec.model_dump(mode="json")
    data["cascade"]["connector_norm"] = "conditioned"
    data["stages"][0]["head_norm"] = "plain"
    return parse_spec(data, source=f"{spec.name}-{variant}")


@pytest.mark.parametrize("block", sorted(_registry.blocks))
@pytest.mark.parametrize("variant", sorted(VARIANT_CONDITIONING))
def test_official_code_variants_honour_the_contract(block, variant):
    if block not in _registry.blocks:
        pytest.skip(f"{block} not installed")
    spec = _variant_spec(block, variant)
    check_spec_round_trip(spec)
    check_output_shapes(spec)
    check_gradients_reach_every_parameter(spec)
    check_finite(spec)
    check_finite(spec, torch.bfloat16)
    check_seeded_determinism(spec)
