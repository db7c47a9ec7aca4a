"""The gMLP plugin's tests. They use only dicesearch's public plugin API and testing kit,
and need the plugin installed (`pip install -e .`): dicesearch finds blocks through entry
points, so these tests also prove the entry point is declared right."""

import pytest
import torch

from dicesearch.testing import build_block, check_block, tiny_spec


def test_gmlp_honours_the_block_contract():
    # shapes, a gradient for every parameter, finite in fp32 and bf16, seeded determinism and
    # spec -> YAML -> spec; with every installed conditioning method, on one stage and on
    # noise and feature cascades
    check_block("gmlp")


def test_gmlp_with_a_narrow_silu_mlp_honours_the_contract_too():
    check_block("gmlp", ("adaln_zero",), block_params={"mlp_ratio": 1.0, "activation": "silu"}, layouts=("single",))


def test_the_spatial_gate_starts_at_one_so_the_block_starts_token_wise():
    block, _, _ = build_block("gmlp")
    assert torch.equal(block.spatial_bias, torch.ones(64))  # 8x8 tokens
    assert block.spatial_weight.abs().max() <= 1e-3


def test_every_position_reaches_every_other_in_one_block():
    # TD-LN has no residual gates, so a fresh block is not the identity
    block, x, signal = build_block("gmlp", "tdln")
    x.requires_grad_(True)
    block(x, signal)[:, -1, -1].sum().backward()  # the bottom-right token ...
    assert x.grad[:, 0, 0].abs().sum() > 0  # ... depends on the top-left one


def test_a_grid_over_max_tokens_is_rejected_by_field_before_building():
    with pytest.raises(Exception, match=r"stages\[0\]\.block\.max_tokens: the stage's 8x8 grid has 64 tokens, over the limit of 32"):
        tiny_spec("gmlp", block_params={"max_tokens": 32})
