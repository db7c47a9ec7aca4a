"""The size check every spec passes before a model is built, and the meta forward of `validate`."""

import time

import pytest
import torch
from torch import nn

from dicesearch.errors import SpecError
from dicesearch.model.feasibility import MAX_BLOCKS, check_forward, estimate_parameters
from dicesearch.plugin_api import BlockParams, BlockType, hookimpl
from dicesearch.registry import Registry
from dicesearch.spec import list_presets, load_spec, parse_spec
from dicesearch.spec.models import SpecFieldError
from dicesearch.testing import tiny_spec


def _full_count(spec, registry) -> int:
    """The reference: every block built, on the meta device."""
    from dicesearch.model.denoiser import Denoiser

    with torch.device("meta"):
        return sum(p.numel() for p in Denoiser(spec, registry).parameters())


@pytest.mark.parametrize("name", sorted(list_presets()))
def test_the_estimate_is_the_exact_count_for_every_preset(name, registry):
    spec = load_spec(name, registry)
    assert estimate_parameters(spec, registry).total == _full_count(spec, registry)


@pytest.mark.parametrize("layout", ["single", "noise", "features"])
@pytest.mark.parametrize("block", ["dice", "attention", "ssm"])
def test_the_estimate_counts_long_skips_and_feature_links_exactly(block, layout, registry):
    spec = tiny_spec(block, layout=layout, registry=registry)  # long skips; features_from: all_blocks
    assert estimate_parameters(spec, registry).total == _full_count(spec, registry)


def _spec(stage: dict, registry, resolution: int = 16):
    data = {"name": "t", "input": {"channels": 1, "resolution": resolution, "num_classes": 10}, "stages": [{"patch_size": 1, "channels": 16, "depth": 2, **stage}]}
    return parse_spec(data, "t.yaml", registry)


@pytest.mark.parametrize(
    ("stage", "message"),
    [
        ({"depth": 10**9, "block": {"kind": "dice"}}, rf"^t.yaml: stages\[0\]\.depth: 1,000,000,000 blocks: a model may have at most {MAX_BLOCKS:,} blocks"),
        ({"block": {"kind": "dice", "mlp_ratio": 1e30}}, r"^t.yaml: stages\[0\]\.block\.mlp_ratio: 1e\+30 makes the block too large to build \(TypeError: .*\); the default is 4\.0$"),
        ({"block": {"kind": "convnext", "kernel_size": 100001}}, r"^t.yaml: stages\[0\]\.block\.kernel_size: 100001 makes one convnext block .* more than any one device holds .*; the default is 7$"),
        ({"depth": 900, "channels": 4096, "block": {"kind": "attention"}}, r"^t.yaml: stages\[0\]\.depth: 900 blocks of [0-9,]+ parameters make .*; use at most [0-9]+ blocks$"),
        ({"channels": 3_000_000, "block": {"kind": "linear_attention", "heads": 1}}, r"^t.yaml: stages\[0\]\.channels: 3,000,000 channels make the model .*; use fewer channels$"),
    ],
)
def test_sizes_no_device_can_build_are_refused_in_well_under_a_second_naming_the_field(stage, message, registry):
    start = time.perf_counter()
    with pytest.raises(SpecError, match=message):
        _spec(stage, registry)
    assert time.perf_counter() - start < 10  # milliseconds in fact; generous for a loaded CI machine


def test_validation_consumes_no_random_numbers(registry):
    torch.manual_seed(0)
    before = torch.get_rng_state()
    _spec({"block": {"kind": "dice"}}, registry)
    assert torch.equal(before, torch.get_rng_state())  # seeded runs build the same weights as before


class _Params(BlockParams):
    widen: int = 2


class _Widens(nn.Module):
    def __init__(self, params, ctx):
        super().__init__()
        self.proj = nn.Linear(ctx.geometry.channels, params.widen * ctx.geometry.channels)

    def forward(self, x, signal):
        return self.proj(x)  # (B, H, W, C) -> (B, H, W, widen * C): the bug


class _Raises(_Widens):
    def forward(self, x, signal):
        return x @ torch.zeros(3, 3, device=x.device)  # a matmul of the wrong size


class _plugin:
    @staticmethod
    @hookimpl
    def dicesearch_block_types():
        return [BlockType(name="widens", params=_Params, build=_Widens), BlockType(name="raises", params=_Params, build=_Raises)]


@pytest.fixture(scope="module")
def with_broken_blocks():
    from dicesearch_plugins import adaln_zero, dice

    return Registry.from_plugins(adaln_zero, dice, _plugin(), distribution="dicesearch-test")


def test_the_meta_forward_names_a_block_of_the_wrong_shape_by_stage(with_broken_blocks):
    registry = with_broken_blocks
    spec = parse_spec(
        {"input": {"channels": 1, "resolution": 8, "num_classes": 2},
         "stages": [{"patch_size": 2, "channels": 8, "depth": 1, "block": {"kind": "dice"}},
                    {"patch_size": 1, "channels": 8, "depth": 2, "block": {"kind": "widens"}}]},
        "s.yaml", registry,
    )  # fmt: skip
    with pytest.raises(SpecFieldError) as error:
        check_forward(spec, registry)
    assert error.value.path == ("stages", 1, "block")
    assert "block 'widens' of plugin '_plugin' from distribution 'dicesearch-test': block 0 of stage 1 returned shape (1, 8, 8, 16)" in error.value.message


def test_the_meta_forward_names_a_block_that_raises(with_broken_blocks):
    registry = with_broken_blocks
    spec = tiny_spec("raises", registry=registry)
    with pytest.raises(SpecFieldError) as error:
        check_forward(spec, registry)
    assert error.value.path == ("stages", 0, "block")
    assert error.value.message.startswith("a forward on the meta device fails in block 0 of stage 0 (block 'raises' of plugin '_plugin' from distribution 'dicesearch-test'): RuntimeError: ")
