"""What operations cost, and how a plugin declares the cost of its own (public API).

dicesearch counts the work of a forward pass in FLOPs, real floating-point operations,
and reports multiply-adds = FLOPs / 2, the unit DiT and DiMR call "Gflops". The
conventions (``dicesearch.analysis.flops`` applies them to every PyTorch operator):

* Matrix products and convolutions: 2 FLOPs per multiply-add (PyTorch's own formulas).
  A complex multiply-add is 4 real ones, so complex matrix products count 4x.
* FFTs, by the standard radix-2 count (the one FFTW's benchmarks report): a complex
  FFT of length n is 5 n log2 n FLOPs, a real-input FFT (or its inverse) half that,
  2.5 n log2 n; an n-point transform over several dimensions uses n = their product.
  In multiply-adds: 2.5 n log2 n and 1.25 n log2 n.
* Elementwise products of complex tensors (the pointwise product of spectra in an FFT
  convolution): 6 FLOPs per complex x complex product, 2 per complex x real one.
* Fused attention: its two matrix products, 4 B heads L^2 head_dim FLOPs.
* Other elementwise work (norms, activations, real products and sums, exponentials)
  is not counted, as in fvcore and the papers' "Gflops".

An operation whose cost these rules miss (a custom kernel, a loop of elementwise maths
that is really a recurrence, a Triton kernel) declares it::

    from dicesearch.plugin_api import declared_cost

    with declared_cost("my_scan", flops=6 * batch * length * channels):
        y = my_scan(x)

Inside the ``with``, the counter adds ``flops`` under the name ``my_scan`` and counts none
of the operators that run there (so nothing is counted twice). Outside a counting run it
does nothing and costs nothing. It covers the forward pass; a backward pass through the
region is counted operator by operator.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Protocol

__all__ = [
    "COMPLEX_MULTIPLY_FLOPS",
    "CostSink",
    "complex_fft_flops",
    "counting_into",
    "declared_cost",
    "real_fft_flops",
]

COMPLEX_MULTIPLY_FLOPS = 6  # (a + ib)(c + id): 4 real multiplies, 2 adds


def complex_fft_flops(n: int, batch: int = 1) -> int:
    """FLOPs of ``batch`` complex FFTs (or inverse FFTs) of length n: 5 n log2 n each."""
    return round(batch * 5 * n * math.log2(n)) if n > 1 else 0


def real_fft_flops(n: int, batch: int = 1) -> int:
    """FLOPs of ``batch`` real-input FFTs of length n, or their inverses: 2.5 n log2 n each."""
    return round(batch * 2.5 * n * math.log2(n)) if n > 1 else 0


class CostSink(Protocol):
    """What a counter offers :func:`declared_cost` (``dicesearch.analysis.flops`` has one)."""

    def add_declared(self, name: str, flops: int) -> None: ...

    def suppressed(self) -> contextlib.AbstractContextManager: ...


_sink: ContextVar[CostSink | None] = ContextVar("dicesearch_cost_sink", default=None)


@contextlib.contextmanager
def counting_into(sink: CostSink) -> Iterator[None]:
    """Make ``sink`` the counter that :func:`declared_cost` reports to, for the ``with`` body."""
    token = _sink.set(sink)
    try:
        yield
    finally:
        _sink.reset(token)


@contextlib.contextmanager
def declared_cost(name: str, flops: int) -> Iterator[None]:
    """Count ``flops`` for what runs inside, under ``name``, instead of its operators."""
    sink = _sink.get()
    if sink is None:
        yield
        return
    if flops < 0:
        raise ValueError(f"declared_cost({name!r}): flops must be >= 0, got {flops}")
    sink.add_declared(name, int(flops))
    with sink.suppressed():
        yield
