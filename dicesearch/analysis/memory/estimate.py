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

import time
import warnings
from dataclasses import dataclass

from dicesearch.analysis.memory.analytic import analytic_step_bytes
from dicesearch.analysis.memory.sizes import (
    OPTIMIZER_STATE_BYTES,
    PRECISION_DTYPES,
    ModelSizes,
    Optimizer,
    Precision,
    build_on_meta,
)
from dicesearch.analysis.memory.traced import traced_step_bytes
from dicesearch.errors import one_line

#: Allowance for what a CUDA process holds outside PyTorch's caching allocator: the
#: context, loaded kernel images, cuBLAS/cuDNN handles. Typically a few hundred MiB; it
#: varies with the GPU, the CUDA version and lazy module loading (CUDA_MODULE_LOADING).
CUDA_CONTEXT_BYTES = 512 * 2**20

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
    if precision not in PRECISION_DTYPES:
        raise ValueError(f"precision must be one of {', '.join(PRECISION_DTYPES)}, got {precision!r}")
    if optimizer not in OPTIMIZER_STATE_BYTES:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZER_STATE_BYTES)}, got {optimizer!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if registry is None:
        from dicesearch.registry import default_registry

        registry = default_registry()
    args = (spec, batch_size, precision, ema, gradient_checkpointing, optimizer)
    start = time.perf_counter()
    method, note = "mem_tracker/fake", ""
    try:
        model = build_on_meta(spec, registry)
        sizes = ModelSizes.of(model)
    except Exception as exc:  # noqa: BLE001 - the estimator never raises for a spec
        fields, method = _unavailable(), "unavailable"
        note = f"the model could not be built ({type(exc).__name__}: {one_line(exc)})"
    else:
        try:
            fields = traced_step_bytes(model, sizes, *args)
        except Exception as exc:  # noqa: BLE001 - e.g. an operator without a fake-tensor kernel
            method = "analytic"
            note = f"tracing failed ({type(exc).__name__}: {one_line(exc)}); activations from closed forms"
            try:
                fields = analytic_step_bytes(model, sizes, *args)
            except Exception as exc2:  # noqa: BLE001
                fields, method = _unavailable(), "unavailable"
                note += f"; the closed forms failed too ({type(exc2).__name__}: {one_line(exc2)})"
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



def _unavailable() -> dict:
    return dict(
        parameter_count=0, trainable_count=0, parameters=0, gradients=0, optimizer_state=0,
        ema=0, activations=0, peak=0, peak_phase="",
    )

