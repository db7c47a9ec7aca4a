"""Numerical kernels for the attention-free blocks, free of any block or plugin API.

* :mod:`dicesearch.ops.wkv` is Bi-WKV (Vision-RWKV / Diffusion-RWKV).
"""

from __future__ import annotations

from dicesearch.ops.wkv import bi_wkv, bi_wkv_reference

__all__ = ["bi_wkv", "bi_wkv_reference"]
