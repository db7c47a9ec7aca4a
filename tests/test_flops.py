"""FLOP counting, including the fused attention kernel PyTorch's counter skips on CPU."""

import torch

from dicesearch.analysis.flops import count_flops
from dicesearch.model import build_model
from dicesearch.spec import parse_spec


def _attention_spec(channels=64, heads=4, side=8):
    return parse_spec({
        "input": {"channels": 4, "resolution": side, "num_classes": 0},
        "conditioning": {"kind": "tdln"},
        "stages": [{"channels": channels, "depth": 1, "block": {"kind": "attention", "heads": heads}, "head": "conv3x3"}],
    })


def test_cpu_fused_attention_matmuls_are_counted():
    d, side = 64, 8
    L = side * side
    model = build_model(_attention_spec(d, 4, side)).eval()
    x = torch.randn(1, 4, side, side)
    with torch.no_grad():
        counted = count_flops(lambda: model(x, torch.tensor([3]))).flops
    expected = (
        2 * 4 * d * L  # patchify 1x1 conv
        + 2 * L * d * 3 * d  # qkv
        + 4 * L * L * d  # q k^T and attn v
        + 2 * L * d * d  # out projection
        + 2 * 2 * L * d * 4 * d  # MLP
        + 2 * L * d * 4 * 9  # 3x3 head conv
    )
    assert counted == expected


def test_plain_flop_counter_misses_cpu_attention():
    """Why count_flops registers the kernel: without it the attention term is lost."""
    from torch.utils.flop_counter import FlopCounterMode

    q = torch.randn(1, 2, 16, 8)
    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.scaled_dot_product_attention(q, q, q)
    assert counter.get_total_flops() == 0
    assert count_flops(lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q)).flops == 4 * 2 * 16 * 16 * 8


def test_backward_of_cpu_attention_is_counted():
    q = torch.randn(1, 2, 16, 8, requires_grad=True)
    forward = count_flops(lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q)).flops
    both = count_flops(lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q).sum().backward()).flops
    assert both > 2 * forward
