"""Peak GPU memory of one training step, estimated on a machine without a GPU.

:func:`estimate_training_memory` answers "does this spec train at this batch size within
the budget?" before a sweep trial starts, without allocating the model: it builds the
model and a batch of *fake* tensors (``FakeTensorMode``: shapes, dtypes and strides, no
storage) and runs one complete training step on them under PyTorch's ``MemTracker``,
which follows every tensor storage that is created or freed and keeps the peak, split
into parameters, gradients, optimizer state, activations and temporaries. A DiT-XL/2 at
batch 128 takes a few seconds of CPU and little real memory, whatever the model's size.

The step that is traced is the one dicesearch trains with:

* ``model.forward_stages(x_t, t, y)`` under ``torch.autocast`` in fp16 or bf16 (fp32:
  no autocast), with the multi-scale loss (DiMR Eq. 8): every stage's noise prediction
  against the noise, area-downsampled to that prediction's side, weighted by
  ``spec.resolved_loss_weights()``;
* ``loss.backward()`` outside autocast, as the AMP recipe does;
* ``optimizer.step()`` then ``zero_grad(set_to_none=True)``: AdamW with ``foreach=True``,
  PyTorch's default implementation on CUDA, in its steady state (its moments already
  exist when the step begins, as in every step after the first);
* an EMA copy of the weights lives beside the model the whole time.

Mixed precision here is PyTorch AMP: the parameters stay fp32 (they are the master
weights, and the optimizer and EMA see fp32), and autocast makes fp16/bf16 copies of the
weights of matmuls and convolutions on first use in the forward pass, caches them until
autocast exits, and autograd keeps them for the backward pass. The tracer sees those
copies as activations (2 bytes per matmul/conv weight), so they are in ``activations``.

What is modelled, and how exactly:

* parameters, gradients, optimizer state, EMA: the bytes of the tensors that exist on
  the fake model, which equal the closed forms of :func:`closed_form_bytes` (4 B per
  parameter each for weights, gradients and EMA, 8 B per trainable parameter for Adam's
  two moments; frozen parameters such as DiT's sin-cos table have no gradient and no
  optimizer state). AdamW's per-tensor ``step`` counters live on the host on CUDA
  (``capturable=False``) and are left out.
* activations and temporaries: every tensor the step creates, while it is alive: what
  autograd saves, the autocast weight copies, gradients of activations in the backward
  pass, recomputation under gradient checkpointing, AdamW's foreach intermediates (a
  full fp32 copy of the trainable parameters while the step runs).
* CUDA's autocast policy. Fake tensors run on the CPU, and CPU autocast leaves some
  operations in half precision that CUDA autocast runs in fp32 (``layer_norm``,
  ``group_norm``, ``softmax``, ``exp``, ``sum`` ...), and vice versa. A small
  ``TorchFunctionMode`` (:class:`_CudaAutocastPolicy`) puts those operations in the
  dtype CUDA would use, so what autograd saves has CUDA's dtypes.

What is not modelled:

* the CUDA context and kernel images (outside PyTorch's allocator, not in
  ``torch.cuda.max_memory_allocated()``). :data:`CUDA_CONTEXT_BYTES` is a fixed
  allowance for them that :attr:`MemoryEstimate.total` and :meth:`MemoryEstimate.fits`
  add to the peak;
* the caching allocator's fragmentation and its rounding of each block (to 512 bytes;
  a few MB over thousands of tensors): ``torch.cuda.memory_reserved()`` exceeds the
  allocated peak by an amount that depends on the allocation pattern, so leave a margin
  in the budget;
* cuDNN/cuBLAS workspaces and copies made inside a kernel (e.g. a convolution making a
  non-contiguous input contiguous): they go through the allocator but are invisible at
  the level of PyTorch operators;
* the attention kernel CUDA picks: a fused one (flash or memory-efficient, no L x L
  matrix) is assumed, as on the CPU; PyTorch's math fallback would materialise it;
* GradScaler's few scalars, the learned-sigma (VLB) term's elementwise temporaries on a
  (B, C, H, W) tensor, data-loader pinned memory, gradient accumulation over several
  micro-batches, and ``fused=True`` AdamW (which needs no foreach intermediates, so it
  peaks 4 B per parameter lower when the optimizer step is the peak);
* CPU autocast applied inside composite operators: the policy classifies a Python-level
  function by its own name, so e.g. ``x.square()`` on fp16 (an fp32 ``pow`` inside on
  CUDA) stays fp16 here. The built-in blocks do such maths in fp32 explicitly.

Caveats. ``MemTracker`` lives in a private PyTorch module (``torch.distributed._tools``)
and the trimmed tracker overrides two of its private methods; a PyTorch that changes
them makes tracing fail, and the estimate falls back to closed forms rather than break.
MemTracker's module and optimizer hooks are process-global while it runs: do not
estimate while another thread of the same process trains or estimates. The first
estimate in a process pays a few seconds of one-off warm-up of PyTorch's meta and
fake-tensor machinery.

PyTorch's own tests hold ``MemTracker``'s peak within 10 % of the CUDA allocator's
active bytes. If tracing fails (an operator without a fake-tensor kernel in a
third-party block, say), the estimate falls back to closed forms for the activations
(:func:`analytic_activation_bytes`) and says so in ``method``; if even the model cannot
be built, ``method`` is ``"unavailable"``. The estimator never raises for a spec.
"""

from __future__ import annotations

import functools
import time
import warnings
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from dicesearch.model import build_model

__all__ = [
    "CUDA_CONTEXT_BYTES",
    "MemoryEstimate",
    "Optimizer",
    "Precision",
    "analytic_activation_bytes",
    "closed_form_bytes",
    "estimate_training_memory",
    "multiscale_loss",
]

Precision = Literal["fp32", "fp16", "bf16"]
Optimizer = Literal["adamw", "sgd"]

#: Allowance for what a CUDA process holds outside PyTorch's caching allocator: the
#: context, loaded kernel images, cuBLAS/cuDNN handles. Typically a few hundred MiB; it
#: varies with the GPU, the CUDA version and lazy module loading (CUDA_MODULE_LOADING).
CUDA_CONTEXT_BYTES = 512 * 2**20

_DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# bytes of optimizer state per trainable fp32 parameter: Adam's two moments; SGD's momentum
_STATE_BYTES: dict[str, int] = {"adamw": 8, "sgd": 4}
_GiB = 2**30
_PHASES = {"forward": "in the forward pass", "backward": "in the backward pass", "optimizer": "in the optimizer step"}


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of GPU memory one training step needs, by category (see the module docs).

    ``parameters``, ``gradients``, ``optimizer_state`` and ``ema`` are the sizes of those
    tensors (they live through the whole step; gradients from the backward pass until
    ``zero_grad``). ``activations`` is the most memory the batch-dependent tensors
    (saved activations, temporaries, the batch itself, autocast weight copies) hold at
    any moment of the forward and backward passes. ``peak`` is the most memory held at
    any moment of the step, everything included (the allocator-level figure, comparable
    with ``torch.cuda.max_memory_allocated()``); ``peak_phase`` says where it occurs.
    ``overhead`` is what the CUDA context holds outside the allocator.
    """

    name: str
    batch_size: int
    precision: str
    parameter_count: int  # every parameter, frozen ones included
    trainable_count: int
    parameters: int  # bytes, fp32 weights (+ buffers)
    gradients: int  # bytes, fp32, trainable parameters
    optimizer_state: int  # bytes, optimizer moments on the GPU
    ema: int  # bytes, fp32 EMA copy of the weights (0 without EMA)
    activations: int  # bytes, largest activations + temporaries in forward/backward
    peak: int  # bytes, peak of one step, EMA included
    peak_phase: str  # "forward", "backward" or "optimizer" ("" when unknown)
    method: str  # "mem_tracker/fake", "analytic" or "unavailable"
    ema_enabled: bool = True
    gradient_checkpointing: bool = False
    optimizer: str = "adamw"
    seconds: float = 0.0  # wall-clock time the estimate took
    overhead: int = CUDA_CONTEXT_BYTES  # bytes outside the allocator (CUDA context)
    note: str = ""  # why the estimate fell back, when it did

    @property
    def total(self) -> int:
        """Bytes the process needs on the GPU: the step's peak plus the CUDA context."""
        return self.peak + self.overhead

    @property
    def known(self) -> bool:
        return self.method != "unavailable"

    def fits(self, budget_bytes: int | float, *, if_unknown: bool = True) -> bool:
        """Whether :attr:`total` is within ``budget_bytes``.

        An ``"unavailable"`` estimate (the model could not even be built) answers
        ``if_unknown``: by default the trial is let through to fail or succeed on its own.
        """
        if not self.known:
            return if_unknown
        return self.total <= budget_bytes

    def summary(self) -> str:
        """A few lines for humans, in GiB."""
        def gib(n: int) -> str:
            return f"{n / _GiB:9.2f} GiB"

        head = f"{self.name}: batch {self.batch_size}, {self.precision}, {self.optimizer}"
        head += (", EMA" if self.ema_enabled else "") + (", gradient checkpointing" if self.gradient_checkpointing else "")
        if not self.known:
            return f"{head}\n  memory estimate unavailable: {self.note}"
        rows = [
            ("parameters", self.parameters, f"{self.parameter_count:,} fp32"),
            ("gradients", self.gradients, f"{self.trainable_count:,} trainable"),
            ("optimizer state", self.optimizer_state, ""),
            ("EMA copy", self.ema, ""),
            ("activations+temps", self.activations, "largest in forward/backward"),
            ("peak of one step", self.peak, _PHASES.get(self.peak_phase, "")),
            ("CUDA context", self.overhead, "fixed allowance"),
            ("total", self.total, ""),
        ]
        lines = [head] + [f"  {label:<18} {gib(n)}  {extra}".rstrip() for label, n, extra in rows]
        lines.append(f"  method: {self.method}, {self.seconds:.1f} s" + (f" ({self.note})" if self.note else ""))
        return "\n".join(lines)


def closed_form_bytes(parameter_count: int, trainable_count: int, *, optimizer: Optimizer = "adamw", ema: bool = True) -> dict[str, int]:
    """The categories with closed forms, for fp32 master weights (any AMP precision).

    parameters 4 B per parameter; gradients 4 B per trainable parameter; AdamW 2 x 4 B per
    trainable parameter (SGD with momentum 4 B); EMA 4 B per parameter.
    """
    return {
        "parameters": 4 * parameter_count,
        "gradients": 4 * trainable_count,
        "optimizer_state": _STATE_BYTES[optimizer] * trainable_count,
        "ema": 4 * parameter_count if ema else 0,
    }


def estimate_training_memory(
    spec,
    batch_size: int,
    precision: Precision = "fp16",
    *,
    ema: bool = True,
    gradient_checkpointing: bool = False,
    optimizer: Optimizer = "adamw",
    registry=None,
) -> MemoryEstimate:
    """Estimate the peak GPU memory of one training step of ``spec`` at ``batch_size``.

    ``precision``: "fp16" or "bf16" (PyTorch AMP: fp32 weights, autocast) or "fp32".
    ``ema``: keep an fp32 EMA copy of the weights. ``gradient_checkpointing``: as
    ``model.set_gradient_checkpointing(True)`` (every block recomputed in the backward
    pass). ``optimizer``: "adamw" (two fp32 moments) or "sgd" (momentum).

    Nothing the size of the model or its activations is allocated: the step runs on fake
    tensors under ``MemTracker`` (method ``"mem_tracker/fake"``). If that fails for this
    model, activations come from :func:`analytic_activation_bytes` (method
    ``"analytic"``); if the model cannot be built at all, the estimate is
    ``"unavailable"`` and :meth:`MemoryEstimate.fits` lets the trial through. Invalid
    arguments (an unknown precision, say) raise ``ValueError``; specs never do.
    """
    if precision not in _DTYPES:
        raise ValueError(f"precision must be one of {', '.join(_DTYPES)}, got {precision!r}")
    if optimizer not in _STATE_BYTES:
        raise ValueError(f"optimizer must be one of {', '.join(_STATE_BYTES)}, got {optimizer!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if registry is None:
        from dicesearch.registry import default_registry

        registry = default_registry()
    args = (spec, batch_size, precision, ema, gradient_checkpointing, optimizer)
    start = time.perf_counter()
    method, note = "mem_tracker/fake", ""
    try:
        model = _build_on_meta(spec, registry)
        sizes = _Sizes.of(model)
    except Exception as exc:  # noqa: BLE001 - the estimator never raises for a spec
        fields, method = _unavailable(), "unavailable"
        note = f"the model could not be built ({type(exc).__name__}: {_one_line(exc)})"
    else:
        try:
            fields = _traced(model, sizes, *args)
        except Exception as exc:  # noqa: BLE001 - e.g. an operator without a fake-tensor kernel
            method = "analytic"
            note = f"tracing failed ({type(exc).__name__}: {_one_line(exc)}); activations from closed forms"
            try:
                fields = _analytic(model, sizes, *args)
            except Exception as exc2:  # noqa: BLE001
                fields, method = _unavailable(), "unavailable"
                note += f"; the closed forms failed too ({type(exc2).__name__}: {_one_line(exc2)})"
    if note:
        warnings.warn(f"memory estimate for {getattr(spec, 'name', '?')}: {note}", RuntimeWarning, stacklevel=2)
    return MemoryEstimate(
        name=getattr(spec, "name", "") or "",
        batch_size=batch_size,
        precision=precision,
        method=method,
        ema_enabled=ema,
        gradient_checkpointing=gradient_checkpointing,
        optimizer=optimizer,
        seconds=time.perf_counter() - start,
        note=note,
        **fields,
    )


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] + ("..." if len(text) > 200 else "")


@dataclass(frozen=True)
class _Sizes:
    """What the closed forms need, read off the meta-built model."""

    parameter_count: int  # every parameter, frozen ones included
    trainable_count: int  # parameters with requires_grad
    weight_bytes: int  # parameters and buffers, in their own dtypes (fp32 here)

    @classmethod
    def of(cls, model: nn.Module) -> _Sizes:
        params = list(model.parameters())
        return cls(
            parameter_count=sum(p.numel() for p in params),
            trainable_count=sum(p.numel() for p in params if p.requires_grad),
            weight_bytes=sum(p.nbytes for p in params) + sum(b.nbytes for b in model.buffers()),
        )


def _unavailable() -> dict:
    return dict(
        parameter_count=0, trainable_count=0, parameters=0, gradients=0, optimizer_state=0,
        ema=0, activations=0, peak=0, peak_phase="",
    )


# --------------------------------------------------------------------------------------
# The traced estimate: one step on fake tensors under MemTracker
# --------------------------------------------------------------------------------------

def _tracker_class():
    """``MemTracker`` trimmed to what we read: the global peak, its phase, the largest
    activation total.

    MemTracker also keeps a peak snapshot per module, walking every tracked module on
    every operator (operators x modules); on DiT-XL/2 that bookkeeping took about three
    quarters of the run time, and we never read it.
    """
    from torch.distributed._tools import mem_tracker as mt

    transient = {mt._MemRefType.ACT, mt._MemRefType.TEMP, mt._MemRefType.OTH}
    total_key = mt._TOTAL_KEY
    device_query = torch.ops.prim.device.default

    class PeakTracker(mt.MemTracker):
        def __init__(self) -> None:
            super().__init__()
            self.peak_bytes = 0
            self.peak_phase = ""
            self.max_transient = 0  # ACT + TEMP + OTH, forward and backward only

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            # Autocast and the autograd engine ask a fake tensor for its device through
            # the dispatcher, several times per operator; nothing is allocated there.
            if func is device_query:
                return func(*args, **(kwargs or {}))
            return super().__torch_dispatch__(func, types, args, kwargs)

        def _update_peak_stats(self, peak_state) -> None:
            snaps = self._curr_mem_snap.values()
            total = sum(s[total_key] for s in snaps)
            if not self._in_opt:
                moving = sum(s[k] for s in snaps for k in transient)
                self.max_transient = max(self.max_transient, moving)
            if total > self.peak_bytes:
                self.peak_bytes = total
                self.peak_phase = "optimizer" if self._in_opt else ("backward" if self._mod_tracker.is_bw else "forward")

    return PeakTracker


class _CudaAutocastPolicy(TorchFunctionMode):
    """Give CPU autocast CUDA autocast's dtypes, so saved tensors have CUDA's sizes.

    Active only while CPU autocast is enabled. Operations CUDA autocasts to fp32 but CPU
    autocast leaves alone run on fp32 copies of their floating-point inputs (as CUDA
    would make them); reductions CUDA runs "in fp32 unless a dtype is given" get
    ``dtype=torch.float32``; the few matmuls CUDA lowers but CPU does not get
    half-precision inputs; and operations CPU autocasts to fp32 but CUDA does not (3-D
    pooling, reflection/replication padding, ...) run with autocast off, in their
    inputs' dtype. Lists: PyTorch's ``aten/src/ATen/autocast_mode.{h,cpp}``.
    """

    FP32 = frozenset({
        "acos", "asin", "cosh", "erfinv", "exp", "expm1", "log", "log10", "log2", "log1p",
        "reciprocal", "rsqrt", "sinh", "tan", "pow", "__pow__", "__rpow__", "softplus",
        "layer_norm", "group_norm", "cosine_similarity", "poisson_nll_loss",
        "cosine_embedding_loss", "hinge_embedding_loss", "kl_div", "l1_loss",
        "smooth_l1_loss", "huber_loss", "margin_ranking_loss", "multilabel_margin_loss",
        "soft_margin_loss", "triplet_margin_loss", "multi_margin_loss",
        "binary_cross_entropy_with_logits", "dist", "pdist", "renorm", "logsumexp",
    })
    FP32_UNLESS_DTYPE = frozenset({
        "softmax", "log_softmax", "cumsum", "cumprod", "sum", "prod", "vector_norm", "matrix_norm",
    })
    LOWER = frozenset({"mv", "addmv", "addr", "chain_matmul", "multi_dot"})
    NATIVE = frozenset({
        "avg_pool3d", "max_pool3d", "adaptive_avg_pool3d", "adaptive_max_pool3d",
        "max_unpool2d", "max_unpool3d", "fractional_max_pool2d", "fractional_max_pool3d",
        "pad", "grid_sample", "trace",
    })

    def __init__(self, lower: torch.dtype):
        super().__init__()
        self.lower = lower

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not torch.is_autocast_enabled("cpu"):
            return func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        if name in self.FP32:
            return func(*_cast_floats(args, torch.float32), **_cast_floats(kwargs, torch.float32))
        if name in self.FP32_UNLESS_DTYPE:
            first = args[0] if args else None
            explicit = kwargs.get("dtype") is not None or any(isinstance(a, torch.dtype) for a in args)
            if not explicit and isinstance(first, torch.Tensor) and first.dtype in (torch.float16, torch.bfloat16):
                return func(*args, **{**kwargs, "dtype": torch.float32})
        elif name in self.LOWER:
            return func(*_cast_floats(args, self.lower), **_cast_floats(kwargs, self.lower))
        elif name in self.NATIVE:
            with torch.autocast("cpu", enabled=False):
                return func(*args, **kwargs)
        return func(*args, **kwargs)


def _policy_in_every_forward(model: nn.Module, lower: torch.dtype) -> None:
    """Make every module's ``forward`` run under :class:`_CudaAutocastPolicy`.

    Torch-function modes are thread-local state that the autograd engine does not carry
    into the backward pass, so the recomputation of gradient checkpointing would run
    without the policy (and fail checkpointing's dtype check). Wrapping the forwards of
    this (fake, throw-away) model re-enters the policy wherever a module runs.
    """
    for module in model.modules():
        module.forward = functools.partial(_forward_under_policy, module.forward, lower)


def _forward_under_policy(forward, lower: torch.dtype, *args, **kwargs):
    if any(isinstance(mode, _CudaAutocastPolicy) for mode in _function_mode_stack()):
        return forward(*args, **kwargs)
    with _CudaAutocastPolicy(lower):
        return forward(*args, **kwargs)


def _function_mode_stack() -> list:
    from torch.overrides import _get_current_function_mode_stack

    return _get_current_function_mode_stack()


def _cast_floats(tree, dtype: torch.dtype):
    """Cast the fp16/bf16/fp32 tensors in a (nested) tuple/list/dict to ``dtype``."""
    if isinstance(tree, torch.Tensor):
        if tree.dtype in (torch.float16, torch.bfloat16, torch.float32) and tree.dtype != dtype:
            return tree.to(dtype)
        return tree
    if isinstance(tree, (list, tuple)):
        return type(tree)(_cast_floats(x, dtype) for x in tree)
    if isinstance(tree, dict):
        return {k: _cast_floats(v, dtype) for k, v in tree.items()}
    return tree


def _build_on_meta(spec, registry) -> nn.Module:
    """The spec's model with every tensor on the meta device: shapes only, no storage.

    Built on meta rather than directly under FakeTensorMode because some initialisers
    branch on values (``trunc_normal_`` resamples until no value is out of range), which
    fake tensors cannot answer; PyTorch's initialisers skip meta tensors.
    """
    with torch.device("meta"):
        return build_model(spec, registry)


def _to_fake(model: nn.Module) -> None:
    """Replace every meta parameter and buffer by a fake CPU tensor of the same shape.

    Call under the FakeTensorMode. Parameters with ``requires_grad=False`` become buffers:
    MemTracker installs a gradient hook on every parameter and fails on frozen ones
    (DiT's sin-cos table), and memory-wise a frozen parameter is a buffer (no gradient,
    no optimizer state). Attribute access is unchanged; shared tensors stay shared.
    """
    made: dict[int, torch.Tensor] = {}  # id(meta tensor) -> its fake replacement
    originals: list[torch.Tensor] = []  # keeps the meta tensors alive, so their ids stay unique

    def fake(t: torch.Tensor, parameter: bool) -> torch.Tensor:
        if id(t) not in made:
            originals.append(t)
            empty = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="cpu")
            made[id(t)] = nn.Parameter(empty) if parameter else empty
        return made[id(t)]

    for module in model.modules():
        for name, buffer in list(module._buffers.items()):
            if buffer is not None:
                module._buffers[name] = fake(buffer, parameter=False)
        for name, param in list(module._parameters.items()):
            if param is None:
                continue
            if param.requires_grad:
                module._parameters[name] = fake(param, parameter=True)
            else:
                del module._parameters[name]
                module.register_buffer(name, fake(param, parameter=False))


def _make_optimizer(kind: str, params: list[torch.Tensor]) -> torch.optim.Optimizer:
    """The optimizer as trained, with the multi-tensor (foreach) kernels CUDA defaults to."""
    if kind == "adamw":
        return torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0, foreach=True)
    return torch.optim.SGD(params, lr=1e-2, momentum=0.9, foreach=True)


def _primed_stand_in(kind: str, numel: int) -> tuple[torch.optim.Optimizer, torch.Tensor]:
    """An optimizer over one flat fp32 parameter of ``numel`` elements, after one step.

    An optimizer's memory depends only on how many elements it updates: its state is
    per element and the foreach intermediates are elementwise. One flat tensor costs a
    handful of fake operators where the model's parameter tensors would cost tens per
    tensor (seconds for a model with thousands of them). The priming step makes the
    state exist, as it does in every step after the first.
    """
    flat = nn.Parameter(torch.zeros(numel))
    opt = _make_optimizer(kind, [flat])
    flat.grad = torch.zeros_like(flat)
    opt.step()
    flat.grad = None
    return opt, flat


def _device_state_bytes(opt: torch.optim.Optimizer) -> tuple[int, int]:
    """(bytes of optimizer state on the GPU, bytes of host-side step counters).

    On CUDA, Adam's per-tensor ``step`` counters are 0-d CPU tensors (``capturable=False``),
    so only the tensors with dimensions count toward GPU memory.
    """
    device = host = 0
    for state in opt.state.values():
        for value in state.values():
            if isinstance(value, torch.Tensor):
                if value.dim() == 0:
                    host += value.nbytes
                else:
                    device += value.nbytes
    return device, host


def _batch(spec, batch_size: int) -> tuple[torch.Tensor, ...]:
    """x_t, noise (B, C, H, W) fp32; t (B,) int64; y (B,) int64 or None (fake under fake mode)."""
    c, r = spec.input.channels, spec.input.resolution
    noise = torch.randn(batch_size, c, r, r)
    x_t = torch.randn(batch_size, c, r, r)
    t = torch.randint(0, 1000, (batch_size,))
    y = torch.randint(0, spec.input.num_classes, (batch_size,)) if spec.input.num_classes else None
    return x_t, noise, t, y


def multiscale_loss(spec, predictions: list[torch.Tensor], noise: torch.Tensor) -> torch.Tensor:
    """DiMR Eq. 8: sum_r w_r * MSE(eps_hat_r, noise area-downsampled to eps_hat_r's side).

    predictions: coarse-to-fine (B, C_out, s_r, s_r); noise: (B, C, H, W) -> scalar.
    Only the noise channels are supervised here (a learned variance's VLB term is
    elementwise on a (B, C, H, W) tensor: a few MB).
    """
    c = spec.input.channels
    loss = noise.new_zeros(())
    for weight, pred in zip(spec.resolved_loss_weights(), predictions, strict=True):
        if weight == 0:
            continue
        target = noise if pred.shape[-2:] == noise.shape[-2:] else F.interpolate(noise, size=pred.shape[-2:], mode="area")
        loss = loss + weight * F.mse_loss(pred[:, :c].float(), target)
    return loss


def _current_bytes(tracker) -> int:
    return sum(snap[_total_key()] for snap in tracker.get_tracker_snapshot("current").values())


def _total_key() -> str:
    from torch.distributed._tools import mem_tracker as mt

    return mt._TOTAL_KEY


def _traced(model, sizes: _Sizes, spec, batch_size, precision, ema, checkpointing, optimizer) -> dict:
    """One training step of the meta-built ``model`` on fake tensors under MemTracker."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    tracker_class = _tracker_class()
    lower = _DTYPES[precision]
    with FakeTensorMode():
        _to_fake(model)
        trainable = list(model.parameters())  # the frozen ones are buffers now
        model.train()
        model.set_gradient_checkpointing(checkpointing)
        if precision != "fp32":
            _policy_in_every_forward(model, lower)
        weights = sum(t.nbytes for t in model.parameters()) + sum(t.nbytes for t in model.buffers())
        opt, flat = _primed_stand_in(optimizer, sizes.trainable_count)
        state_bytes, host_bytes = _device_state_bytes(opt)
        x_t, noise, t, y = _batch(spec, batch_size)

        # forward and backward, with the optimizer state resident
        tracker = tracker_class()
        tracker.track_external(model, opt, x_t, noise, t, y)
        with tracker, ExitStack() as amp:
            if precision != "fp32":
                amp.enter_context(_CudaAutocastPolicy(lower))
            with torch.autocast("cpu", dtype=lower, enabled=precision != "fp32"):
                predictions = model.forward_stages(x_t, t, y)
                loss = multiscale_loss(spec, predictions, noise)
            del predictions
            loss.backward()
            del loss
            after_backward = _current_bytes(tracker)  # weights, gradients, state, batch
        gradients = sum(p.grad.nbytes for p in trainable if p.grad is not None)

        # the optimizer step: what it allocates on top of everything resident
        flat.grad = torch.zeros_like(flat)
        stepper = tracker_class()
        stepper.track_external(opt, flat, flat.grad)
        before_step = _current_bytes(stepper)
        with stepper:
            opt.step()
        step_extra = max(0, stepper.peak_bytes - before_step)

    step_peak = after_backward + step_extra
    peak, phase = (tracker.peak_bytes, tracker.peak_phase) if tracker.peak_bytes >= step_peak else (step_peak, "optimizer")
    ema_bytes = weights if ema else 0
    return dict(
        parameter_count=sizes.parameter_count,
        trainable_count=sizes.trainable_count,
        parameters=weights,
        gradients=gradients,
        optimizer_state=state_bytes,
        ema=ema_bytes,
        activations=tracker.max_transient,
        peak=peak - host_bytes + ema_bytes,  # the step counters live on the host
        peak_phase=phase,
    )


# --------------------------------------------------------------------------------------
# The analytic fallback
# --------------------------------------------------------------------------------------

def analytic_activation_bytes(model: nn.Module, spec, batch_size: int, precision: Precision = "fp16", gradient_checkpointing: bool = False) -> tuple[int, int]:
    """Closed-form activations of one forward pass: (total bytes, largest block's bytes).

    Used when tracing fails. With B the batch, L_s = h_s * w_s the tokens of stage s,
    C_s its channels, a the bytes of an autocast activation (2, or 4 in fp32):

    * every per-token ``nn.Linear`` (in -> out) keeps its input and its output (the
      input of the following nonlinearity) for the backward pass: B * L_s * (in + out) * a;
      a ``nn.Conv2d`` does the same per output position, its input counted as
      in_channels * stride^2 values (a patchify reads p^2 pixels per token);
    * every block also keeps about three fp32 (B, L_s, C_s) tensors for its conditioned
      norms, modulation and residual gate (LayerNorm runs in fp32 under autocast):
      12 * B * L_s * C_s bytes; attention adds its output: B * L_s * C_s * a;
    * under autocast, the half-precision copies of every Linear/Conv weight: 2 B each;
    * the batch: x_t and the noise, 2 * B * C * H * W * 4 bytes.

    Layers inside a ``Modulator`` act per sample, not per token, and are negligible.
    With gradient checkpointing a block keeps only its fp32 input, 4 * B * L_s * C_s,
    and one block's activations are rebuilt at a time in the backward pass.

    Against the traced estimate on the built-in blocks and presets (batch 32, fp16/fp32,
    with and without checkpointing) this lands between about 20 % under (DICE in fp16,
    whose merge runs in fp32) and 45 % over (ConvNeXt in fp32): a rough stand-in.
    """
    from dicesearch.conditioning import Modulator

    a = 4 if precision == "fp32" else 2
    b = batch_size
    total = 2 * b * spec.input.channels * spec.input.resolution**2 * 4
    largest = 0
    for index, stage in enumerate(model.stages):
        tokens = spec.grid(index) ** 2
        channels = spec.stages[index].channels
        per_sample = {id(m) for mod in stage.modules() if isinstance(mod, Modulator) for m in mod.modules()}
        for block in stage.blocks:
            kept = _layer_bytes(block, per_sample, tokens, b, a) + 12 * b * tokens * channels
            if spec.stages[index].block.kind == "attention":
                kept += b * tokens * channels * a
            largest = max(largest, kept)
            total += 4 * b * tokens * channels if gradient_checkpointing else kept
        outside = [m for m in stage.children() if m is not stage.blocks]
        total += sum(_layer_bytes(m, per_sample, tokens, b, a) for m in outside)
    if precision != "fp32":
        total += 2 * sum(p.numel() for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d)) for p in m.parameters(recurse=False))
    return total, largest


def _layer_bytes(root: nn.Module, per_sample: set[int], tokens: int, batch: int, a: int) -> int:
    kept = 0
    for m in root.modules():
        if id(m) in per_sample:
            continue
        if isinstance(m, nn.Linear):
            kept += batch * tokens * (m.in_features + m.out_features) * a
        elif isinstance(m, nn.Conv2d):
            kept += batch * tokens * (m.in_channels * m.stride[0] * m.stride[1] + m.out_channels) * a
    return kept


def _analytic(model, sizes: _Sizes, spec, batch_size, precision, ema, checkpointing, optimizer) -> dict:
    """Closed forms for everything (``model`` only provides structure and sizes)."""
    parameter_count, trainable_count = sizes.parameter_count, sizes.trainable_count
    fixed = closed_form_bytes(parameter_count, trainable_count, optimizer=optimizer, ema=ema)
    fixed["parameters"] = sizes.weight_bytes
    fixed["ema"] = sizes.weight_bytes if ema else 0
    activations, largest = analytic_activation_bytes(model, spec, batch_size, precision, checkpointing)
    # the backward pass holds the activations plus the gradients flowing through one
    # block; the foreach optimizer step holds every gradient plus one fp32 intermediate
    # per trainable parameter (AdamW) while it runs
    resident = fixed["parameters"] + fixed["optimizer_state"] + fixed["ema"]
    backward = activations + largest
    step = fixed["gradients"] + (4 * trainable_count if optimizer == "adamw" else 0)
    return dict(
        parameter_count=parameter_count,
        trainable_count=trainable_count,
        activations=activations + largest,
        peak=resident + max(backward, step),
        peak_phase="backward" if backward >= step else "optimizer",
        **fixed,
    )
