"""Numerical kernels for the attention-free blocks, free of any block or plugin API.

* :mod:`dicesearch.ops.wkv` is Bi-WKV (Vision-RWKV / Diffusion-RWKV).
* :mod:`dicesearch.ops.s4d` is the S4D kernel, FFT convolutions and small S4D layers (DiffuSSM).
* :mod:`dicesearch.ops.linear_attention` is LiT's ReLU linear attention core.
"""

from __future__ import annotations

from dicesearch.ops.linear_attention import linear_attention, linear_attention_reference, relu_feature_map
from dicesearch.ops.s4d import (
    BidirectionalS4DLayer,
    S4DKernel,
    S4DLayer,
    fft_bidirectional_conv,
    fft_causal_conv,
    s4d_init_a,
    s4d_kernel,
)
from dicesearch.ops.wkv import bi_wkv, bi_wkv_reference

__all__ = [
    "BidirectionalS4DLayer",
    "S4DKernel",
    "S4DLayer",
    "bi_wkv",
    "bi_wkv_reference",
    "fft_bidirectional_conv",
    "fft_causal_conv",
    "linear_attention",
    "linear_attention_reference",
    "relu_feature_map",
    "s4d_init_a",
    "s4d_kernel",
]
