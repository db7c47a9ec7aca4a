"""FLOP counting, including the fused attention kernel PyTorch's counter skips on CPU."""

import math

import pytest

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


# -- FFTs, complex products and declared costs (conventions: dicesearch/costs.py) ---------


def test_fft_long_convolution_is_counted_by_hand():
    """rfft of u and K (length 2L), the pointwise product of spectra, irfft: 2.5 n log2 n per real FFT."""
    from dicesearch.ops import fft_causal_conv

    batch, length, channels = 2, 8, 3
    n = 2 * length  # zero-padded to 2L = 16, log2 16 = 4
    real_fft = 2.5 * n * 4
    expected = (
        batch * channels * real_fft  # rfft of u: B x H transforms
        + channels * real_fft  # rfft of the kernel: H transforms
        + batch * channels * (length + 1) * 6  # complex x complex product of the L + 1 bins
        + batch * channels * real_fft  # irfft back
    )
    count = count_flops(lambda: fft_causal_conv(torch.randn(batch, length, channels), torch.randn(channels, length)))
    assert count.flops == expected == 2724
    assert count.by_operator == {"aten._fft_r2c": 1440, "aten.mul": 324, "aten._fft_c2r": 960}


def test_complex_fft_is_5_n_log2_n_and_complex_matmul_4_real_ones():
    x = torch.randn(4, 32, dtype=torch.complex64)
    assert count_flops(lambda: torch.fft.fft(x)).flops == 4 * 5 * 32 * 5
    assert count_flops(lambda: torch.fft.ifft(x)).flops == 4 * 5 * 32 * 5
    assert count_flops(lambda: torch.fft.fft2(x)).flops == round(5 * 128 * 7)  # one 4 x 32 transform, n = 128
    a, b = torch.randn(2, 3, 4, dtype=torch.complex64), torch.randn(2, 4, 5, dtype=torch.complex64)
    assert count_flops(lambda: a @ b).flops == 4 * (2 * 2 * 3 * 4 * 5)  # 8 real FLOPs per complex multiply-add
    assert count_flops(lambda: a.real @ b.real).flops == 2 * 2 * 3 * 4 * 5
    assert count_flops(lambda: torch.randn(5, 5) * torch.randn(5, 5)).flops == 0  # real elementwise: not counted


def test_the_ssm_blocks_ffts_and_kernel_are_counted():
    """The built-in SSM's count now holds its FFT convolutions and S4D's complex Vandermonde product."""
    from dicesearch.ops import BidirectionalS4DLayer

    layer = BidirectionalS4DLayer(6, d_state=4)
    length = 9  # kernel split R = Q = 3; FFTs of length 18
    with torch.no_grad():
        ops = count_flops(lambda: layer(torch.randn(1, length, 6))).by_operator
    real_fft = 2.5 * 18 * math.log2(18)
    assert ops["aten._fft_r2c"] == round(6 * real_fft) + 2 * round(6 * real_fft)  # u, then forward and backward kernels
    assert ops["aten._fft_c2r"] == round(12 * real_fft)
    assert ops["aten.bmm"] == 4 * 2 * 12 * 3 * 2 * 3  # 2D = 12 kernels: (Q x M) @ (M x R), M = 2 modes, complex


def test_a_declared_cost_replaces_the_count_of_what_runs_inside():
    from dicesearch.plugin_api import declared_cost

    a = torch.randn(8, 8)

    def scan():
        with declared_cost("my_scan", flops=1000):
            return a @ a @ a  # 2 x 1024 FLOPs that the declaration stands for

    count = count_flops(scan)
    assert count.flops == 1000 and count.by_operator == {"my_scan": 1000}
    with declared_cost("outside", flops=5):  # no counter running: nothing happens
        pass
    nested = count_flops(lambda: [scan() for _ in range(2)] and None)
    assert nested.flops == 2000


def test_bi_wkv_declares_its_recurrence():
    from dicesearch.ops import bi_wkv
    from dicesearch.ops.wkv import BI_WKV_FLOPS

    k, v = torch.randn(2, 7, 5), torch.randn(2, 7, 5)
    count = count_flops(lambda: bi_wkv(torch.randn(5), torch.randn(5), k, v))
    assert BI_WKV_FLOPS == 2 * 5 + 6 and count.by_operator == {"bi_wkv": 16 * 2 * 7 * 5}


def test_flops_are_attributed_to_modules():
    model = build_model(_attention_spec(16, 2, 4)).eval()
    with torch.no_grad():
        count = count_flops(lambda: model(torch.randn(1, 4, 4, 4), torch.tensor([3])))
    head = 2 * 16 * 16 * 4 * 9  # 3x3 conv, 16 -> 4 channels, 16 positions
    assert count.by_module["stages.0.head"] == head
    assert count.by_module["stages.0"] == count.flops


@pytest.mark.parametrize("groups", [1, 4, 16])
def test_a_convolutions_backward_costs_its_forward_once_per_gradient(groups):
    """The naive count: every output element is (C_in / groups) x k x k multiply-adds; each
    gradient (input, weight) is a product of the same size. Depthwise (groups = C) included,
    which PyTorch's own formula counted C times too large in the weight gradient."""
    conv = torch.nn.Conv2d(16, 16, 3, padding=1, groups=groups, bias=False)
    x = torch.randn(2, 16, 8, 8, requires_grad=True)
    forward = 2 * (2 * 16 * 8 * 8) * (16 // groups) * 3 * 3  # FLOPs = 2 x multiply-adds
    assert count_flops(lambda: conv(x)).flops == forward
    assert count_flops(lambda: conv(x).sum().backward()).flops == 3 * forward  # forward, input and weight gradients
    frozen = x.detach()  # no gradient for the input: the weight's alone
    assert count_flops(lambda: conv(frozen).sum().backward()).flops == 2 * forward


def test_a_training_step_costs_three_forwards_on_every_preset_family():
    from dicesearch.analysis.flops import static_metrics, training_step_flops
    from dicesearch.spec import load_spec

    for preset in ["DICE-digits", "DiT-S/2", "LiT-S/2"]:
        spec = load_spec(preset)
        forward = static_metrics(spec)["gflops"] * 1e9
        step = training_step_flops(spec, 2)
        # forward + input and weight gradients; the first layer's input (the noised image) needs no gradient
        assert 3 * 2 * forward * 0.99 < step <= 3 * 2 * forward, preset
