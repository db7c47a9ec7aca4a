"""S4D diagonal state-space layer: initialisation, Vandermonde kernel, FFT convolution.

DiffuSSM (Yan et al., 2023, Sec. 4.1) uses S4D as its SSM core: "We use one of these,
S4D [15], as our backbone model". It makes the SSM bidirectional "by concatenating the
outputs of two SSM layers ... to yield a L x 2D output" (Sec. 4.1, 4.2: Y =
Bidirectional-SSM(U) in R^{L x 2D}). The SSM itself follows S4D (Gu, Gupta, Goel and Ré,
"On the parameterization and initialization of diagonal state space models", NeurIPS
2022), discretised into DiffuSSM Sec. 4.1's recurrence x_k = Ā x_{k-1} + B̄ u_k,
y_k = C̄ x_k:

* Continuous diagonal SSM per channel h: x' = A x + B u, y = C x + D u, with A, B, C
  complex of size N/2. The conjugate modes are implied, so the real state size is N
  and y = 2 Re(C x) + D u.
* ZOH discretisation with step dt = exp(log_dt): Ā = exp(dt A),
  B̄ = (exp(dt A) - 1) / A * B.
* Convolution kernel (Vandermonde form): K_l = 2 Re( sum_n C_n B̄_n Ā_n^l ), l < L.
* y = K * u, a causal convolution done with real FFTs padded to 2L, in O(L log L).

Initialisation: S4D-Lin by default, A_n = -1/2 + i pi n. S4D-Inv,
A_n = -1/2 + i (N/pi) (N/(2n+1) - 1), is available as ``init="inv"``. DiffuSSM does not
say which it used. Lin is the default because it is the initialisation of S4D's own
minimal reference layer, and because its evenly spaced imaginary parts (Fourier-like
frequencies) spread the kernel over all frequencies without favouring long memory in
one scan direction. Inv approximates the spectrum of
S4(D)-LegS and is kept as a searchable alternative. (S4D-LegS proper needs an
eigendecomposition of the HiPPO matrix and is not provided.) In both: the real part is
parametrised as -exp(log_a_real), so it stays negative while training; B = 1; C is
complex standard normal; log_dt ~ U[log dt_min, log dt_max]; the skip term D ~ N(0, 1).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from dicesearch.ops._autocast import autocast_disabled

__all__ = [
    "S4DInit",
    "s4d_init_a",
    "zoh_discretize",
    "s4d_kernel",
    "fft_causal_conv",
    "fft_bidirectional_conv",
    "S4DKernel",
    "S4DLayer",
    "BidirectionalS4DLayer",
]

S4DInit = Literal["lin", "inv"]


def _real_dtype(*tensors: Tensor) -> torch.dtype:
    """float64 if any input is float64/complex128, else float32 (halves are upcast)."""
    wide = {torch.float64, torch.complex128}
    return torch.float64 if any(t.dtype in wide for t in tensors) else torch.float32


def s4d_init_a(d_state: int, init: S4DInit = "lin") -> Tensor:
    """Diagonal A of S4D (Gu et al. 2022): (d_state // 2,) complex64.

    ``"lin"``: A_n = -1/2 + i pi n. ``"inv"``: A_n = -1/2 + i (N/pi) (N/(2n+1) - 1).
    """
    if d_state < 2 or d_state % 2:
        raise ValueError(f"d_state must be an even number >= 2 (conjugate pairs), got {d_state}")
    n = torch.arange(d_state // 2, dtype=torch.float64)
    if init == "lin":
        imag = math.pi * n
    elif init == "inv":
        imag = d_state / math.pi * (d_state / (2 * n + 1) - 1)
    else:
        raise ValueError(f"unknown S4D init {init!r}; known: 'lin', 'inv'")
    return torch.complex(torch.full_like(n, -0.5), imag).to(torch.complex64)


def _expm1_complex(z: Tensor) -> Tensor:
    """exp(z) - 1 for complex z without cancellation at small |z|."""
    x, y = z.real, z.imag
    real = torch.expm1(x) * torch.cos(y) - 2 * torch.sin(y / 2) ** 2  # e^x cos y - 1
    imag = torch.exp(x) * torch.sin(y)
    return torch.complex(real, imag)


def zoh_discretize(a: Tensor, b: Tensor, log_dt: Tensor) -> tuple[Tensor, Tensor]:
    """Zero-order hold: Ā = exp(dt A), B̄ = (exp(dt A) - 1)/A * B.

    a, b: (H, M) complex; log_dt: (H,). Returns (dt*A, B̄), both (H, M). Ā is
    returned as its log dt*A so that powers can be formed as exp(l * dt*A).
    """
    dt_a = torch.exp(log_dt)[:, None] * a  # (H, M)
    b_bar = _expm1_complex(dt_a) / a * b  # (H, M)
    return dt_a, b_bar


def s4d_kernel(a: Tensor, b: Tensor, c: Tensor, log_dt: Tensor, length: int) -> Tensor:
    """S4D's Vandermonde convolution kernel K (H, L), K_l = 2 Re(sum_n C_n B̄_n Ā_n^l).

    a, b, c: (H, M) complex (M = d_state // 2 modes, conjugates implied);
    log_dt: (H,) real. The Vandermonde product is split as l = q*R + r with
    R = ceil(sqrt(L)), so Ā^l = Ā^(qR) Ā^r and the kernel is one batched matmul of an
    (H, Q, M) and an (H, M, R) matrix. Memory is O(H*M*sqrt(L) + H*L), never H*M*L. Each
    power is exp(exact exponent), so nothing is accumulated by repeated multiplication.
    Computed in fp32 (float64 for double inputs) with autocast disabled.
    """
    if length < 1:
        raise ValueError(f"kernel length must be >= 1, got {length}")
    real = _real_dtype(a, b, c, log_dt)
    cplx = torch.complex128 if real == torch.float64 else torch.complex64
    with autocast_disabled(log_dt.device):
        a, b, c, log_dt = a.to(cplx), b.to(cplx), c.to(cplx), log_dt.to(real)
        dt_a, b_bar = zoh_discretize(a, b, log_dt)  # (H, M) each
        coeff = c * b_bar  # (H, M)
        inner = math.ceil(math.sqrt(length))  # R
        outer = math.ceil(length / inner)  # Q
        steps = torch.arange(max(inner, outer), device=a.device, dtype=real)
        fine = torch.exp(dt_a[:, :, None] * steps[:inner])  # (H, M, R)   Ā^r
        coarse = torch.exp(dt_a[:, :, None] * (steps[:outer] * inner))  # (H, M, Q)   Ā^(qR)
        blocks = (coeff[:, :, None] * coarse).transpose(1, 2) @ fine  # (H, Q, R)
        return 2 * blocks.reshape(a.shape[0], outer * inner)[:, :length].real  # (H, L)


def _check_conv_shapes(u: Tensor, *kernels: Tensor) -> None:
    if u.dim() != 3:
        raise ValueError(f"u must be (B, L, H), got {tuple(u.shape)}")
    _, length, channels = u.shape
    for kernel in kernels:
        if kernel.shape != (channels, length):
            raise ValueError(f"kernel must be (H, L) = ({channels}, {length}), got {tuple(kernel.shape)}")


def fft_causal_conv(u: Tensor, kernel: Tensor) -> Tensor:
    """Causal long convolution y_t = sum_{s<=t} K_{t-s} u_s via real FFTs of size 2L.

    u: (B, L, H); kernel: (H, L). Returns (B, L, H) in u's dtype. The FFT runs in fp32
    (float64 for double inputs) with autocast disabled.
    """
    _check_conv_shapes(u, kernel)
    out_dtype, real = u.dtype, _real_dtype(u, kernel)
    length = u.shape[1]
    with autocast_disabled(u.device):
        u_f = torch.fft.rfft(u.to(real).transpose(1, 2), n=2 * length)  # (B, H, L+1)
        k_f = torch.fft.rfft(kernel.to(real), n=2 * length)  # (H, L+1)
        y = torch.fft.irfft(u_f * k_f, n=2 * length)[..., :length]  # (B, H, L)
    return y.transpose(1, 2).to(out_dtype)


def fft_bidirectional_conv(u: Tensor, kernel_fwd: Tensor, kernel_bwd: Tensor) -> Tensor:
    """DiffuSSM's bidirectional SSM convolution: forward and reversed-sequence outputs, concatenated.

    y_fwd_t = sum_{s<=t} Kf_{t-s} u_s (causal), and
    y_bwd_t = sum_{s>=t} Kb_{s-t} u_s, which is flip(causal_conv(flip(u), Kb)).
    The second is a correlation: with zero padding to 2L, multiplying by conj(FFT(Kb))
    gives it exactly, so u is transformed once and never flipped.

    u: (B, L, H); kernel_fwd, kernel_bwd: (H, L). Returns (B, L, 2H) = [y_fwd, y_bwd]
    ("L x 2D", DiffuSSM Sec. 4.1).
    """
    _check_conv_shapes(u, kernel_fwd, kernel_bwd)
    out_dtype, real = u.dtype, _real_dtype(u, kernel_fwd, kernel_bwd)
    length = u.shape[1]
    with autocast_disabled(u.device):
        u_f = torch.fft.rfft(u.to(real).transpose(1, 2), n=2 * length)  # (B, H, L+1)
        kf_f = torch.fft.rfft(kernel_fwd.to(real), n=2 * length)  # (H, L+1)
        kb_f = torch.fft.rfft(kernel_bwd.to(real), n=2 * length)  # (H, L+1)
        spectra = torch.cat([u_f * kf_f, u_f * kb_f.conj()], dim=1)  # (B, 2H, L+1)
        y = torch.fft.irfft(spectra, n=2 * length)[..., :length]  # (B, 2H, L)
    return y.transpose(1, 2).to(out_dtype)


class S4DKernel(nn.Module):
    """Learnable S4D parameters for ``channels`` independent SSMs; ``forward(L)`` gives K (H, L)."""

    def __init__(
        self,
        channels: int,  # H: independent SSMs, one per channel
        d_state: int = 64,  # N: real state size; N // 2 complex modes are stored
        init: S4DInit = "lin",  # S4D-Lin or S4D-Inv imaginary parts
        dt_min: float = 1e-3,  # log_dt ~ U[log dt_min, log dt_max]
        dt_max: float = 1e-1,
    ) -> None:
        super().__init__()
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max, got {dt_min}, {dt_max}")
        a = s4d_init_a(d_state, init).expand(channels, -1)  # (H, M)
        modes = a.shape[1]
        self.log_a_real = nn.Parameter(torch.log(-a.real).clone())  # (H, M); Re A = -exp(.) < 0
        self.a_imag = nn.Parameter(a.imag.clone())  # (H, M)
        self.b = nn.Parameter(torch.view_as_real(torch.ones(channels, modes, dtype=torch.complex64)).clone())
        self.c = nn.Parameter(torch.view_as_real(torch.randn(channels, modes, dtype=torch.complex64)).clone())
        log_dt = torch.rand(channels) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        self.log_dt = nn.Parameter(log_dt)  # (H,)

    def ssm(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(A, B, C, log_dt): A, B, C complex (H, M); log_dt (H,). At least fp32, even if the module was halved."""
        real = _real_dtype(self.log_dt)
        log_a_real, a_imag, b, c = (p.to(real) for p in (self.log_a_real, self.a_imag, self.b, self.c))
        a = torch.complex(-torch.exp(log_a_real), a_imag)
        return a, torch.view_as_complex(b), torch.view_as_complex(c), self.log_dt.to(real)

    def forward(self, length: int) -> Tensor:
        return s4d_kernel(*self.ssm(), length)  # (H, L)


class S4DLayer(nn.Module):
    """Causal S4D layer (B, L, D) -> (B, L, D): y = K * u + D u."""

    def __init__(
        self,
        d_model: int,  # D: channels of the input sequence
        d_state: int = 64,  # N: real state size per channel (N // 2 complex modes)
        init: S4DInit = "lin",  # S4D-Lin or S4D-Inv
        dt_min: float = 1e-3,  # range of the initial step size dt
        dt_max: float = 1e-1,
    ) -> None:
        super().__init__()
        self.kernel = S4DKernel(d_model, d_state, init, dt_min, dt_max)
        self.skip = nn.Parameter(torch.randn(d_model))  # D, (D,)

    def forward(self, u: Tensor) -> Tensor:
        # u: (B, L, D)
        kernel = self.kernel(u.shape[1])  # (D, L)
        return fft_causal_conv(u, kernel) + u * self.skip.to(u.dtype)  # (B, L, D)


class BidirectionalS4DLayer(nn.Module):
    """DiffuSSM's bidirectional SSM (Sec. 4.1): two S4D layers, one on the reversed sequence.

    (B, L, D) -> (B, L, 2D), channels [0, D) the forward SSM, [D, 2D) the backward one.
    Each direction has its own A, B, C, dt and skip D.
    """

    def __init__(
        self,
        d_model: int,  # D: channels of the input sequence
        d_state: int = 64,  # N: real state size per channel (N // 2 complex modes)
        init: S4DInit = "lin",  # S4D-Lin or S4D-Inv
        dt_min: float = 1e-3,  # range of the initial step size dt
        dt_max: float = 1e-1,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.kernel = S4DKernel(2 * d_model, d_state, init, dt_min, dt_max)  # forward, then backward
        self.skip = nn.Parameter(torch.randn(2 * d_model))  # (2D,)

    def forward(self, u: Tensor) -> Tensor:
        # u: (B, L, D)
        kernels = self.kernel(u.shape[1])  # (2D, L)
        y = fft_bidirectional_conv(u, kernels[: self.d_model], kernels[self.d_model :])  # (B, L, 2D)
        return y + u.repeat(1, 1, 2) * self.skip.to(u.dtype)  # (B, L, 2D)
