"""Convolutions with bias and ReLU by Winograd's minimal filtering, for inference on a CPU.

Winograd's minimal filtering F(m, r) (Lavin and Gray 2016) computes m outputs of an r-tap
correlation from the m + r - 1 inputs under them with m + r - 1 products where the direct
sum takes m r: with an input transform B^T, a filter transform G and an output transform A^T
(the Toom-Cook matrices of m + r - 2 points and infinity, ``toom_cook``),

    y = A^T [ (G g) . (B^T d) ],     and in two dimensions   Y = A_h^T [ (G_h g G_w^T) . (B_h^T d B_w) ] A_w.

Per tile, the sum over input channels of the elementwise products is one matrix product
(tiles x I) x (I x O) per point, which ``dicesearch/native/winograd.c`` does in register
blocks on one thread, the transforms around it. The FID Inception network
(``dicesearch.metrics.inception_eager``) spends two thirds of its time in convolutions of
this kind, at the CPU's matmul rate already; with fewer products they run 2-2.7x faster
(``benchmarks/sweep_speed.py --only winograd``):

* 3x3: F(4x4, 3x3) at 0, +-1, +-2 (36 products per 16 outputs instead of 144), with the
  transforms written out (``wg_conv3x3``);
* 1x7 and 7x1: F(4, 7) along the one axis at 0, +-1, +-1/2, +-2, +-3/4 (10 per 4 instead of 28);
* 1x3 and 3x1: F(4, 3) (6 per 4 instead of 12); 5x5: F(2x2, 5x5) (36 per 4 instead of 100);

all but the first through one general kernel (``wg_conv``) taking each axis's matrices.
The filters' transform is computed once, in float64 (``winograd_plan``). In float32 the
transforms' products round differently from the direct sum: a layer's output agrees with
``F.conv2d`` in float64 to about 5e-6 of its largest value (the direct fp32 sum: 1e-6), and
the network's pool features with the network file's own forward to about 2e-6 (tested, and
checked again whenever the eager network is built).

It runs at one torch thread (each of the eager Inception's micro-batches), on float32 CPU
tensors, stride 1, with input and output channels whole vectors of the kernels (16 where
the CPU has AVX-512, else 8); elsewhere, or without a C compiler, or with
``DICESEARCH_NATIVE`` not naming ``winograd``, the caller uses ``F.conv2d``.
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from dicesearch import native

__all__ = [
    "FILTER_TRANSFORM", "INPUT_TRANSFORM", "OUTPUT_TRANSFORM", "POINTS", "WinogradPlan", "conv_relu", "conv_relu_reference",
    "native_kernels", "toom_cook", "winograd_plan",
]  # fmt: skip

# F(4, 3) at the points 0, 1, -1, 2, -2 and infinity (Lavin and Gray 2016, Sec. 4.2): what
# toom_cook(4, 3, POINTS[3][1]) gives, and what wg_conv3x3 has written out for F(4x4, 3x3)
INPUT_TRANSFORM = torch.tensor(  # B^T (6, 6)
    [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
    dtype=torch.float64,
)
FILTER_TRANSFORM = torch.tensor(  # G (6, 3)
    [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6], [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]],
    dtype=torch.float64,
)
OUTPUT_TRANSFORM = torch.tensor(  # A^T (4, 6)
    [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
    dtype=torch.float64,
)


# the points (besides infinity) of each axis's algorithm, by kernel size: (outputs per tile, points);
# for 7 taps +-3/4 rather than the usual +-3: a FID network's 7x1 layer then agrees with float64 to
# 6e-6 of its largest output instead of 2.4e-5 (+-3/2: 1.2e-5), at the same speed
POINTS = {3: (4, (0.0, 1.0, -1.0, 2.0, -2.0)), 5: (2, (0.0, 1.0, -1.0, 2.0, -2.0)), 7: (4, (0.0, 1.0, -1.0, 0.5, -0.5, 2.0, -2.0, 0.75, -0.75))}


@functools.cache
def toom_cook(m: int, r: int, points: tuple[float, ...]) -> tuple[Tensor, Tensor, Tensor]:
    """(A^T (m, n), G (n, r), B^T (n, n)) of F(m, r) at ``points`` and infinity, n = m + r - 1, float64.

    A^T and G evaluate at the points (Vandermonde rows; G carries the Lagrange denominators),
    the last row of each being infinity's (the leading coefficient); B^T is then the unique
    matrix with A^T [(G g) . (B^T d)] equal to the correlation of d with g for every d and g,
    solved from that identity on the basis vectors (exact to ~1e-15 for these points).
    """
    n = m + r - 1
    if len(points) != n - 1:
        raise ValueError(f"F({m}, {r}) needs {n - 1} finite points, got {len(points)}")
    a = torch.tensor(points, dtype=torch.float64)
    denominators = torch.stack([torch.prod(torch.cat([a[j] - a[:j], a[j] - a[j + 1 :]])) for j in range(n - 1)])  # (n - 1,)
    at = torch.zeros(m, n, dtype=torch.float64)
    at[:, : n - 1] = a[None, :] ** torch.arange(m, dtype=torch.float64)[:, None]
    at[m - 1, n - 1] = 1.0
    g = torch.zeros(n, r, dtype=torch.float64)
    g[: n - 1] = a[:, None] ** torch.arange(r, dtype=torch.float64)[None, :] / denominators[:, None]
    g[n - 1, r - 1] = 1.0
    # sum_p at[i, p] g[p, k] bt[p, j] = [j == i + k] for all i < m, k < r, j < n: linear in bt
    coefficients = (at[:, None, :] * g.t()[None, :, :])  # (m, r, n): at[i, p] g[p, k]
    system = torch.zeros(m, r, n, n, n, dtype=torch.float64)  # (i, k, j) x (p, j')
    for j in range(n):
        system[:, :, j, :, j] = coefficients
    target = torch.zeros(m, r, n, dtype=torch.float64)
    for i in range(m):
        for k in range(r):
            target[i, k, i + k] = 1.0
    solution = torch.linalg.lstsq(system.reshape(m * r * n, n * n), target.reshape(-1, 1)).solution
    bt = solution.reshape(n, n)
    bt = torch.where(bt.abs() < 1e-12, torch.zeros_like(bt), bt)
    return at, g, bt


@functools.cache
def native_kernels() -> ctypes.CDLL | None:
    """``dicesearch/native/winograd.c`` built for this machine, or None (``native.why_unavailable``)."""
    library = native.load_library("winograd")
    if library is None:
        return None
    library.wg_conv3x3.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int] * 6
    library.wg_conv.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int] * 11 + [ctypes.c_void_p] * 4
    for function in (library.wg_conv3x3, library.wg_conv, library.wg_vector_width):
        function.restype = ctypes.c_int
    library.vector_width = library.wg_vector_width()
    return library


@dataclass(frozen=True, eq=False)
class WinogradPlan:
    """How one layer runs: its transformed filters and each axis's algorithm."""

    filters: Tensor  # (nh nw, I, O) float32: G_h g G_w^T of every filter, point-major
    kernel: tuple[int, int]
    padding: tuple[int, int]
    outputs: tuple[int, int]  # per tile, each axis
    transforms: tuple[Tensor, Tensor, Tensor, Tensor]  # B_h^T, A_h^T, B_w^T, A_w^T, float32

    @property
    def written_out(self) -> bool:
        """3x3 with equal padding 0 or 1: ``wg_conv3x3``, whose F(4x4, 3x3) transforms are code."""
        return self.kernel == (3, 3) and self.padding[0] == self.padding[1] in (0, 1)


def _axis(k: int) -> tuple[int, Tensor, Tensor, Tensor]:
    """(outputs per tile, A^T, G, B^T) of one axis of kernel size k; k = 1 is the identity."""
    if k == 1:
        one = torch.ones(1, 1, dtype=torch.float64)
        return 1, one, one, one
    m, points = POINTS[k]
    at, g, bt = toom_cook(m, k, points)
    return m, at, g, bt


def winograd_plan(weight: Tensor, stride: int, padding: list[int]) -> WinogradPlan | None:
    """The plan of a convolution with this filter (O, I, kh, kw), stride and padding, or None where
    it does not run here (module docstring; the input's device, dtype and threads aside)."""
    kh, kw = weight.shape[2:]
    if stride != 1 or kh not in (1, *POINTS) or kw not in (1, *POINTS) or (kh, kw) == (1, 1):
        return None
    if not (0 <= padding[0] <= kh // 2 and 0 <= padding[1] <= kw // 2):
        return None
    if weight.device.type != "cpu" or weight.dtype != torch.float32:
        return None
    library = native_kernels()
    if library is None or weight.shape[0] % library.vector_width or weight.shape[1] % library.vector_width:
        return None
    (mh, at_h, g_h, bt_h), (mw, at_w, g_w, bt_w) = _axis(kh), _axis(kw)
    u = torch.einsum("ak,oikl,bl->abio", g_h, weight.double(), g_w)  # (nh, nw, I, O)
    filters = u.reshape(-1, weight.shape[1], weight.shape[0]).float().contiguous()
    transforms = tuple(t.float().contiguous() for t in (bt_h, at_h, bt_w, at_w))
    return WinogradPlan(filters=filters, kernel=(kh, kw), padding=(padding[0], padding[1]), outputs=(mh, mw), transforms=transforms)


def conv_relu_reference(x: Tensor, weight: Tensor, bias: Tensor, padding: list[int]) -> Tensor:
    """relu(F.conv2d(x, weight, bias, padding=padding)): what ``conv_relu`` computes."""
    return F.conv2d(x, weight, bias, 1, padding).relu_()


def conv_relu(x: Tensor, plan: WinogradPlan, bias: Tensor) -> Tensor:
    """relu(conv(x) + bias) by the plan: x (B, I, H, W) float32 on a CPU, at one torch thread ->
    (B, O, Ho, Wo) in channels-last memory."""
    b, i, h, w = x.shape
    o = plan.filters.shape[2]
    (kh, kw), (ph, pw) = plan.kernel, plan.padding
    rows = x.permute(0, 2, 3, 1).contiguous()  # (B, H, W, I); a no-op for channels-last memory
    out = x.new_empty(b, h + 2 * ph - kh + 1, w + 2 * pw - kw + 1, o)  # (B, Ho, Wo, O)
    library, what = native_kernels(), "native Winograd convolution"
    if plan.written_out:
        native.call(library.wg_conv3x3, rows, plan.filters, bias, out, b, h, w, i, o, ph, what=what)
    else:
        native.call(library.wg_conv, rows, plan.filters, bias, out, b, h, w, i, o, kh, kw, ph, pw, *plan.outputs, *plan.transforms, what=what)
    return out.permute(0, 3, 1, 2)
