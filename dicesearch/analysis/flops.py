"""Count multiply-adds and FLOPs of a forward (and backward) pass.

Built on ``torch.utils.flop_counter.FlopCounterMode``, which counts real matrix products
and convolutions (2 FLOPs per multiply-add) and attributes them to the modules that ran
them. Added here, so that every operator the built-in blocks use is counted by its
standard cost (the conventions are stated in :mod:`dicesearch.costs`):

* fused attention on CPU (``aten._scaled_dot_product_flash_attention_for_cpu`` and its
  backward, which PyTorch's counter sees as zero), with PyTorch's own SDPA formula;
* FFTs (``aten._fft_r2c``, ``_fft_c2r``, ``_fft_c2c``): 2.5 n log2 n FLOPs per real
  transform of length n, 5 n log2 n per complex one;
* a convolution's backward at the forward's count per gradient, groups included (PyTorch's
  own formula counts a grouped weight gradient as dense);
* complex matrix products at 4x the real count, and complex elementwise products
  (6 FLOPs each, 2 for complex x real): an FFT convolution's pointwise product of
  spectra and S4D's Vandermonde kernel are counted;
* regions a plugin or an op declares with :func:`dicesearch.costs.declared_cost`
  (Bi-WKV declares its recurrence), whose operators are then not counted again.

Real elementwise work (norms, activations, the DICE merge, exponentials) is not counted,
as in fvcore and the DiT/DiMR papers' "Gflops".
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count, flop_registry, sdpa_backward_flop_count, sdpa_flop_count

from dicesearch.costs import COMPLEX_MULTIPLY_FLOPS, complex_fft_flops, counting_into, real_fft_flops

aten = torch.ops.aten


def _cpu_flash_forward(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _cpu_flash_backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


def _transform(shape, dim) -> tuple[int, int]:
    """(n, batch) of an FFT over ``dim`` of a tensor of ``shape``: n = product of those sizes."""
    n = math.prod(shape[d] for d in dim)
    return n, (math.prod(shape) // n if n else 0)


def _fft_r2c(self_shape, dim, *args, out_shape=None, **kwargs) -> int:
    n, batch = _transform(self_shape, dim)  # the real input's length
    return real_fft_flops(n, batch)


def _fft_c2r(self_shape, dim, *args, out_shape=None, **kwargs) -> int:
    n, batch = _transform(out_shape, dim)  # the real output's length
    return real_fft_flops(n, batch)


def _fft_c2c(self_shape, dim, *args, out_shape=None, **kwargs) -> int:
    n, batch = _transform(self_shape, dim)
    return complex_fft_flops(n, batch)


def _convolution_backward(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed, _output_padding, _groups, output_mask, out_shape=None, **kwargs) -> int:
    """A convolution's backward: each gradient asked for (input, weight) costs what the forward
    product costs, groups included. (PyTorch's formula counts the weight gradient of a grouped
    convolution as if it were dense: a depthwise convolution's backward came out ``channels``
    times too large.)"""
    forward = conv_flop_count(list(x_shape), list(w_shape), list(grad_out_shape), transposed)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def _raw(formula: Callable) -> Callable:
    formula._get_raw = True  # FlopCounterMode passes tensors (not shapes) to raw formulas
    return formula


def _complex_aware(packet) -> Callable:
    """PyTorch's real formula for a matrix product, x4 when the result is complex."""
    real_formula = flop_registry[packet]  # takes tensors, counts 2 x m x n x k

    def formula(*args, out_val=None, **kwargs) -> int:
        flops = real_formula(*args, out_val=out_val, **kwargs)
        return 4 * flops if isinstance(out_val, torch.Tensor) and out_val.is_complex() else flops

    return _raw(formula)


def _complex_multiply(a, b, *args, out_val=None, **kwargs) -> int:
    """6 FLOPs per complex x complex product, 2 per complex x real one; real products: 0."""
    if not (isinstance(out_val, torch.Tensor) and out_val.is_complex()):
        return 0
    both = all(isinstance(t, torch.Tensor) and t.is_complex() for t in (a, b))
    return (COMPLEX_MULTIPLY_FLOPS if both else 2) * out_val.numel()


def _custom_formulas() -> dict:
    formulas = {
        aten._fft_r2c: _fft_r2c,
        aten._fft_c2r: _fft_c2r,
        aten._fft_c2c: _fft_c2c,
        aten.mul: _raw(_complex_multiply),
        aten.convolution_backward: _convolution_backward,
        **{packet: _complex_aware(packet) for packet in (aten.mm, aten.bmm, aten.addmm, aten.baddbmm)},
    }
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        formulas[aten._scaled_dot_product_flash_attention_for_cpu] = _cpu_flash_forward
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward"):
        formulas[aten._scaled_dot_product_flash_attention_for_cpu_backward] = _cpu_flash_backward
    return formulas


class _Counter(FlopCounterMode):
    """FlopCounterMode with the formulas above and declared costs (a ``CostSink``)."""

    def __init__(self) -> None:
        super().__init__(display=False, custom_mapping=_custom_formulas())
        self._suppressed = 0

    def _count_flops(self, func_packet, out, args, kwargs):
        if self._suppressed:  # inside a declared_cost region: its declaration is the count
            return out
        return super()._count_flops(func_packet, out, args, kwargs)

    def add_declared(self, name: str, flops: int) -> None:
        if self._suppressed:  # nested in another declaration, which covers it
            return
        for parent in set(self.mod_tracker.parents):
            self.flop_counts[parent][name] += flops

    @contextlib.contextmanager
    def suppressed(self) -> Iterator[None]:
        self._suppressed += 1
        try:
            yield
        finally:
            self._suppressed -= 1


@dataclass(frozen=True)
class FlopCount:
    flops: int  # 2 x multiply-adds
    by_operator: dict[str, int]  # operator (or declared name) -> FLOPs, zero entries left out
    by_module: dict[str, int] = field(default_factory=dict)  # "stages.0.blocks.3" -> FLOPs within it

    @property
    def macs(self) -> int:
        """Multiply-adds: the unit DiT and DiMR report as "Gflops"."""
        return self.flops // 2


def _module_path(name: str) -> str:
    """FlopCounterMode names modules "<RootClass>.a.b"; keep "a.b" ("" for the root)."""
    _, _, path = name.partition(".")
    return path


def count_flops(run: Callable[[], object]) -> FlopCount:
    """FLOPs of whatever ``run()`` executes (a forward, or a forward and a backward)."""
    counter = _Counter()
    with counter, counting_into(counter):
        run()
    counts = counter.get_flop_counts()
    by_operator = {str(op): int(n) for op, n in counts.get("Global", {}).items() if n}
    by_module = {_module_path(name): int(sum(ops.values())) for name, ops in counts.items() if name != "Global"}
    return FlopCount(flops=int(counter.get_total_flops()), by_operator=by_operator, by_module=by_module)


def static_metrics(spec) -> dict[str, float]:
    """Parameters and multiply-adds per forward at batch 1, counted on the meta device."""
    from dicesearch.model import build_model

    with torch.device("meta"):
        model = build_model(spec)
        r, c = spec.input.resolution, spec.input.channels
        x = torch.zeros(1, c, r, r)
        t = torch.zeros(1)
        y = torch.zeros(1, dtype=torch.long) if spec.input.num_classes else None
    flops = count_flops(lambda: model(x, t, y))
    return {
        "params": float(sum(p.numel() for p in model.parameters() if p.requires_grad)),
        "gmacs": flops.macs / 1e9,  # the unit DiT and DiMR report as "Gflops"
        "gflops": flops.flops / 1e9,
    }


def training_step_flops(spec, batch_size: int) -> int:
    """FLOPs of one training step's forward and backward at ``batch_size`` (counted on the meta
    device with the same counter as :func:`static_metrics`; the loss's own arithmetic and the
    optimiser's update, elementwise, are not counted)."""
    from dicesearch.model import build_model

    with torch.device("meta"):
        model = build_model(spec)
        r, c = spec.input.resolution, spec.input.channels
        x = torch.zeros(batch_size, c, r, r)  # (B, C, H, W)
        t = torch.zeros(batch_size)  # (B,)
        y = torch.zeros(batch_size, dtype=torch.long) if spec.input.num_classes else None  # (B,)

    def step() -> None:
        model(x, t, y).float().square().mean().backward()

    return count_flops(step).flops
