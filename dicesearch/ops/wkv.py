"""Bidirectional WKV (Bi-WKV), the token mixer of Bi-RWKV blocks.

Diffusion-RWKV (Fei et al., 2024, Sec. 2.2, "Bi-directional RWKV block") builds on
Vision-RWKV and takes the bidirectional WKV from there (Sec. 1: "we employ Bi-RWKV [11]
for backbone"; Sec. 2.2 cites [90], Vision Mamba, at that point but describes Vision-RWKV's
quad-directional shift and bidirectional attention). Its own text only
writes out the causal RWKV recurrence (Eq. 7-8: "p_t = max(p_{t-1}, k_t)", "h_t =
(exp(p_{t-1} - p_t) a_{t-1} + exp(k_t - p_t) v_t) / (...)", with no decay or bonus). The
equation implemented here is therefore Vision-RWKV's Bi-WKV (Duan et al., 2024,
arXiv:2403.02308, subsection "Linear Complexity Bidirectional Attention"). For every
channel c (the channel index is left implicit):

    wkv_t = ( sum_{i != t} exp(-(|t-i| - 1)/T * w + k_i) v_i  +  exp(u + k_t) v_t )
            / ( sum_{i != t} exp(-(|t-i| - 1)/T * w + k_i)      +  exp(u + k_t)     )

with T the sequence length, w the per-channel spatial decay and u the per-channel bonus
of the current token.

Conventions, checked against the released Vision-RWKV and Diffusion-RWKV code (both
pass ``spatial_decay / T`` and ``spatial_first / T`` to the same CUDA kernel, which
weights token i by exp(-(|t-i|-1) * w' + k_i) and the current token by exp(u' + k_t)):

* The 1/T scaling of the decay is part of the equation and is applied here: pass the
  raw decay ``w`` (their ``spatial_decay``), not ``w / T``.
* ``w`` need not be positive. Both codebases leave it unconstrained (the "fancy" init
  spreads it over [-5, 3]), and Vision-RWKV's maintainers describe dropping RWKV's
  exp(-exp(w)) and adding the 1/T factor instead "to avoid potential overflow"
  (OpenGVLab/Vision-RWKV issue #21). Every real ``w`` is supported here. A block that
  wants a strictly decaying kernel can pass ``exp(w_raw)``.
* Both codebases also divide the bonus by T. The equation does not, so ``u`` is used
  as given here; pass ``spatial_first / T`` to reproduce the released models.
* The released CUDA kernel adds 1e-6 to the denominator. The equation does not, and
  none is needed here: after stabilisation the denominator is at least 1.

Algorithm (memory linear in T, no Python loop over tokens). The sum splits into a strict
causal part F_t = sum_{i<t} exp(-(t-1-i) s + k_i) v_i with s = w / T, an anti-causal
part G_t (the same thing on the reversed sequence) and the bonus term. F is computed
one chunk of ``chunk_size`` tokens at a time. Inside a chunk a small dense
(chunk+1) x chunk weight matrix is used. Between chunks a carried state is passed:
(n, d, p) stands for the numerator exp(p) * n and the denominator exp(p) * d, where p
is a running maximum of exponents, as in RWKV's log-sum-exp trick. Every
exponential is taken after its row maximum has been subtracted, so no exponent is
positive whatever the size of |k| or |w|. The maxima are detached: the value each
(n, d, p) triple stands for does not depend on the choice of p, so the gradients stay
exact. Both directions run in one sweep by stacking the reversed sequence on the batch
dimension. Under autograd each chunk step is checkpointed. Only its inputs (views of
k and v plus a (B, C) state) are kept, and the (chunk+1) x chunk weights are rebuilt
one chunk at a time during backward. Peak extra memory is O(B*T*C + B*chunk^2*C).

fp16/bf16 inputs are computed in fp32 and the result is cast back. float64 stays float64.
Autocast is disabled inside, so an autocast region never lowers the precision.

Cost (what FLOP counts report, :mod:`dicesearch.costs`): the linear-time recurrence RWKV
kernels run, not this chunked evaluation. Per token, channel and direction, the
numerator and denominator states a_t = e a_{t-1} + e' v_t and b_t = e b_{t-1} + e'
(5 FLOPs), then wkv_t = (a_fwd + a_bwd + e^(u+k_t) v_t) / (b_fwd + b_bwd + e^(u+k_t))
(6 FLOPs): ``BI_WKV_FLOPS`` = 16 FLOPs (8 multiply-adds) per batch x token x channel,
declared with :func:`dicesearch.costs.declared_cost`. Exponentials are not counted, as
activations are not.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from dicesearch.costs import declared_cost
from dicesearch.ops._autocast import autocast_disabled

__all__ = ["BI_WKV_FLOPS", "bi_wkv", "bi_wkv_reference", "default_chunk_size"]

BI_WKV_FLOPS = 16  # per batch x token x channel: 2 directions x 5 for the states, 6 to combine

# Tokens per dense block. Work per token grows with the chunk, Python/launch overhead with
# the number of chunks. On CPU, forward + backward at one thread (torch 2.13, the project's
# 2-core x86_64 machine): 8 was fastest up to 1,024 tokens (64 tokens, C 48, batch 64:
# 53 ms at 8, 101 at 16, 207 at 32; 1,024 tokens, C 384: 226 ms at 8, 595 at 32) and 16 at
# 4,096 (231 ms, 341 at 8). GPUs prefer fewer, larger blocks.
CHUNK_SIZE_CPU = 8
CHUNK_SIZE_CPU_LONG = 16  # above LONG_SEQUENCE tokens
LONG_SEQUENCE = 2048
CHUNK_SIZE_ACCELERATOR = 128


def default_chunk_size(k: Tensor) -> int:
    """The chunk for ``k`` (B, T, C): the CPU's by sequence length; on an accelerator, or when
    the memory estimate traces a training step on fake tensors (it estimates a GPU run), the
    accelerator's, so that the estimate holds the blocks a GPU run allocates."""
    from torch._subclasses.fake_tensor import FakeTensor

    if k.device.type != "cpu" or isinstance(k, FakeTensor):
        return CHUNK_SIZE_ACCELERATOR
    return CHUNK_SIZE_CPU if k.shape[1] <= LONG_SEQUENCE else CHUNK_SIZE_CPU_LONG


def _compute_dtype(*tensors: Tensor) -> torch.dtype:
    """float64 if any input is float64, else float32 (fp16/bf16 are upcast)."""
    if any(t.dtype == torch.float64 for t in tensors):
        return torch.float64
    return torch.float32


def _check_shapes(w: Tensor, u: Tensor, k: Tensor, v: Tensor) -> None:
    if k.dim() != 3 or k.shape != v.shape:
        raise ValueError(f"k and v must both be (B, T, C); got {tuple(k.shape)} and {tuple(v.shape)}")
    channels = k.shape[-1]
    if w.shape != (channels,) or u.shape != (channels,):
        raise ValueError(
            f"w and u must be ({channels},) to match C of k; got {tuple(w.shape)} and {tuple(u.shape)}"
        )


def _chunk_step(
    decay_exp: Tensor,  # (n+1, n, C) exponent -(tau-1-j)*s, -inf where j >= tau
    state_decay: Tensor,  # (n+1, C)    tau * s  (n = this chunk's length)
    k: Tensor,  # (B2, n, C)
    v: Tensor,  # (B2, n, C)
    n_in: Tensor,  # (B2, C)
    d_in: Tensor,  # (B2, C)
    p_in: Tensor,  # (B2, C)      detached log-scale of the carried state
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """One chunk of the strict causal sum F, returned in stabilised form.

    Row tau (0 <= tau <= n) of the result is F at chunk position tau, i.e. the sum over
    every earlier token. Row n, one past the chunk, is the state carried into the next
    chunk.
    """
    length = k.shape[1]
    exps = decay_exp + k[:, None]  # (B2, n+1, n, C)
    exps_state = p_in[:, None] - state_decay  # (B2, n+1, C)
    row_max = torch.maximum(exps.amax(dim=2), exps_state).detach()  # (B2, n+1, C)
    weights = torch.exp(exps - row_max[:, :, None])  # (B2, n+1, n, C), zero where masked
    carried = torch.exp(exps_state - row_max)  # (B2, n+1, C)
    num = (weights * v[:, None]).sum(dim=2) + carried * n_in[:, None]  # (B2, n+1, C)
    den = weights.sum(dim=2) + carried * d_in[:, None]  # (B2, n+1, C)
    return (
        num[:, :length],
        den[:, :length],
        row_max[:, :length],
        num[:, length],
        den[:, length],
        row_max[:, length],
    )


def _strict_causal_sweep(s: Tensor, k: Tensor, v: Tensor, chunk_size: int) -> tuple[Tensor, Tensor, Tensor]:
    """F_t = sum_{i<t} exp(-(t-1-i) s + k_i) v_i as (num, den, log-scale), each (B2, T, C).

    F_t = exp(p_t) * num_t and its denominator is exp(p_t) * den_t.
    """
    batch, length, channels = k.shape
    n = min(chunk_size, length)
    tau = torch.arange(n + 1, device=k.device, dtype=k.dtype)  # (n+1,)
    col = torch.arange(n, device=k.device, dtype=k.dtype)  # (n,)
    gap = tau[:, None] - 1.0 - col[None, :]  # (n+1, n), tau-1-j
    decay_exp = (-gap[..., None] * s).masked_fill((gap < 0)[..., None], float("-inf"))  # (n+1, n, C)
    state_decay = tau[:, None] * s  # (n+1, C)

    # An empty sum: num = den = 0 with a very negative (finite, so no inf - inf) scale.
    n_state = k.new_zeros(batch, channels)
    d_state = k.new_zeros(batch, channels)
    p_state = k.new_full((batch, channels), torch.finfo(k.dtype).min / 4)

    # split() rather than per-chunk slicing: its backward is one concatenation, whereas
    # each slice's backward would allocate a zero (B2, T, C) gradient (O(T^2) in total).
    k_chunks, v_chunks = k.split(n, dim=1), v.split(n, dim=1)
    last = k_chunks[-1].shape[1]  # a shorter final chunk uses the top-left block
    decay_last, state_decay_last = decay_exp[: last + 1, :last], state_decay[: last + 1]

    use_checkpoint = torch.is_grad_enabled() and any(t.requires_grad for t in (s, k, v))
    nums, dens, scales = [], [], []
    for index, (k_chunk, v_chunk) in enumerate(zip(k_chunks, v_chunks)):
        final = index == len(k_chunks) - 1
        args = (
            decay_last if final else decay_exp,
            state_decay_last if final else state_decay,
            k_chunk,
            v_chunk,
            n_state,
            d_state,
            p_state,
        )
        if use_checkpoint:
            out = checkpoint(_chunk_step, *args, use_reentrant=False, preserve_rng_state=False)  # no randomness inside
        else:
            out = _chunk_step(*args)
        num, den, scale, n_state, d_state, p_state = out
        nums.append(num)
        dens.append(den)
        scales.append(scale)
    return torch.cat(nums, dim=1), torch.cat(dens, dim=1), torch.cat(scales, dim=1)


def bi_wkv(w: Tensor, u: Tensor, k: Tensor, v: Tensor, *, chunk_size: int | None = None) -> Tensor:
    """Bidirectional WKV of Vision-RWKV / Diffusion-RWKV (see the module docstring).

    Args:
        w: (C,) spatial decay, any real value; divided by T inside, as in the equation.
        u: (C,) bonus for the current token.
        k: (B, T, C) keys.
        v: (B, T, C) values.
        chunk_size: tokens per dense block, trading Python/launch overhead against
            O(chunk) work per token. None: :func:`default_chunk_size`. The result does
            not depend on it beyond rounding.

    Returns:
        (B, T, C) in the dtype of ``k``/``v`` (computed in fp32 for fp16/bf16 inputs).
    """
    _check_shapes(w, u, k, v)
    if chunk_size is None:
        chunk_size = default_chunk_size(k)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    out_dtype = torch.promote_types(k.dtype, v.dtype)
    dtype = _compute_dtype(w, u, k, v)
    with declared_cost("bi_wkv", BI_WKV_FLOPS * k.numel()), autocast_disabled(k.device):
        w, u, k, v = (t.to(dtype) for t in (w, u, k, v))
        batch, length, _ = k.shape
        s = w / length  # (C,) the paper's 1/T scaling of the decay

        # Forward direction on the batch's first half, reversed sequence on its second.
        k2 = torch.cat([k, k.flip(1)], dim=0)  # (2B, T, C)
        v2 = torch.cat([v, v.flip(1)], dim=0)  # (2B, T, C)
        num2, den2, scale2 = _strict_causal_sweep(s, k2, v2, chunk_size)  # each (2B, T, C)
        num_f, den_f, p_f = num2[:batch], den2[:batch], scale2[:batch]  # sum over i < t
        num_b, den_b, p_b = num2[batch:].flip(1), den2[batch:].flip(1), scale2[batch:].flip(1)  # i > t

        p_u = u + k  # (B, T, C) exponent of the current token's own term
        top = torch.maximum(torch.maximum(p_f, p_b), p_u).detach()  # (B, T, C)
        e_f, e_b, e_u = torch.exp(p_f - top), torch.exp(p_b - top), torch.exp(p_u - top)
        num = e_f * num_f + e_b * num_b + e_u * v  # (B, T, C)
        den = e_f * den_f + e_b * den_b + e_u  # (B, T, C), >= 1
        out = num / den
    return out.to(out_dtype)


def bi_wkv_reference(w: Tensor, u: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Bi-WKV written straight from the equation with a dense (T, T) weight tensor.

    No stabilisation: exp() is applied to the raw exponents, so use it in float64 with
    moderate values (|k| + |w| + |u| well below ~700). O(B*T^2*C) memory; tests only.
    """
    _check_shapes(w, u, k, v)
    length = k.shape[1]
    pos = torch.arange(length, device=k.device)
    dist = (pos[:, None] - pos[None, :]).abs().to(k.dtype)  # (T, T) |t - i|
    off_diag = torch.exp(-(dist[..., None] - 1.0) / length * w + k[:, None, :, :])  # (B, T_t, T_i, C)
    on_diag = torch.exp(u + k)  # (B, T, C)
    eye = torch.eye(length, dtype=torch.bool, device=k.device)[None, :, :, None]  # (1, T, T, 1)
    weight = torch.where(eye, on_diag[:, :, None, :], off_diag)  # (B, T_t, T_i, C)
    num = (weight * v[:, None, :, :]).sum(dim=2)  # (B, T, C)
    den = weight.sum(dim=2)  # (B, T, C)
    return num / den
