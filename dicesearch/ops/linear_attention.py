"""ReLU linear attention, the core of LiT's attention replacement.

LiT ("LiT: Delving into a Simple Linear Diffusion Transformer for Image Generation",
supplement Sec. G, Alg. 1 "Linear Attention in LiT") uses the kernelised attention of
Katharopoulos et al. (2020) with a ReLU feature map,
phi(x) = ReLU(x) + 1e-6 (Alg. 1: ``q = self.kernel_function(q) + 1e-6``), and
normalises with means over the N keys:

    z_i   = 1 / (phi(q_i) . mean_j phi(k_j) + eps)
    out_i = phi(q_i)^T (mean_j phi(k_j) v_j^T) * z_i

(Alg. 1: ``z = 1 / (q @ k.mean(dim=-2, keepdim=True).transpose(-2, -1) + 1e-6)``,
``kv = (k.transpose(-2, -1) * (N ** -0.5)) @ (v * (N ** -0.5))``, ``x = q @ kv * z``).
Multiplying through by N gives the sum form

    out_i = phi(q_i)^T (sum_j phi(k_j) v_j^T) / (phi(q_i)^T sum_j phi(k_j) + N * eps),

so the two differ only in how eps is scaled. Alg. 1 is followed here (mean form, eps
inside). ``feature_eps=0`` together with ``eps = eps_sum / N`` gives the plain
sum-form normaliser. Cost is O(N d d_v) time and O(d d_v) extra memory per head; no
N x N matrix is formed.

Precision follows Alg. 1's ``fp32_attention=True`` branch. Inputs are upcast to fp32
(float64 stays float64) and the whole core, normaliser included, runs with autocast
disabled. The output is cast back to the input dtype. (Alg. 1 casts to float16
unconditionally; the input dtype is used here so that bf16 and fp32 callers get what
they passed.) The depthwise convolution on V, the projections and the head split
belong to the block and are not here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from dicesearch.ops._autocast import autocast_disabled

__all__ = ["relu_feature_map", "linear_attention", "linear_attention_reference"]


def relu_feature_map(x: Tensor, feature_eps: float = 1e-6) -> Tensor:
    """phi(x) = ReLU(x) + feature_eps, LiT Alg. 1's kernel function."""
    return F.relu(x) + feature_eps


def _check_shapes(q: Tensor, k: Tensor, v: Tensor) -> None:
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError("q, k, v must be (B, heads, N, d)")
    if q.shape[:2] != k.shape[:2] or k.shape[:3] != v.shape[:3] or q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"incompatible shapes q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}: "
            "need q (B, h, Nq, d), k (B, h, N, d), v (B, h, N, dv)"
        )


def linear_attention(q: Tensor, k: Tensor, v: Tensor, *, eps: float = 1e-6, feature_eps: float = 1e-6) -> Tensor:
    """LiT linear attention core (Alg. 1), O(N d dv).

    Args:
        q: (B, heads, Nq, d) queries (pre-feature-map).
        k: (B, heads, N, d) keys (pre-feature-map).
        v: (B, heads, N, dv) values.
        eps: added to the mean-form normaliser (Alg. 1: 1e-6).
        feature_eps: added after the ReLU (Alg. 1: 1e-6); keeps the normaliser positive.

    Returns:
        (B, heads, Nq, dv) in the input dtype, computed in fp32 (float64 for double inputs).
    """
    _check_shapes(q, k, v)
    out_dtype = torch.promote_types(torch.promote_types(q.dtype, k.dtype), v.dtype)
    dtype = torch.float64 if torch.float64 in (q.dtype, k.dtype, v.dtype) else torch.float32
    with autocast_disabled(q.device):
        q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
        phi_q = relu_feature_map(q, feature_eps)  # (B, h, Nq, d)
        phi_k = relu_feature_map(k, feature_eps)  # (B, h, N, d)
        inv_n = 1.0 / k.shape[-2]
        kv = (phi_k.transpose(-2, -1) @ v) * inv_n  # (B, h, d, dv)   mean_j phi(k_j) v_j^T
        k_mean = phi_k.mean(dim=-2)  # (B, h, d)
        num = phi_q @ kv  # (B, h, Nq, dv)
        den = phi_q @ k_mean.unsqueeze(-1) + eps  # (B, h, Nq, 1)
        out = num / den  # (B, h, Nq, dv)
    return out.to(out_dtype)


def linear_attention_reference(
    q: Tensor, k: Tensor, v: Tensor, *, eps: float = 1e-6, feature_eps: float = 1e-6
) -> Tensor:
    """The same kernelised formula with the explicit (Nq, N) matrix phi(Q) phi(K)^T; tests only."""
    _check_shapes(q, k, v)
    scores = relu_feature_map(q, feature_eps) @ relu_feature_map(k, feature_eps).transpose(-2, -1)  # (B, h, Nq, N)
    n = k.shape[-2]
    return (scores @ v / n) / (scores.sum(dim=-1, keepdim=True) / n + eps)  # (B, h, Nq, dv)
