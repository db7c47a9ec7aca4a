"""The traced estimate: one training step on fake tensors under PyTorch's ``MemTracker``."""

from __future__ import annotations

from contextlib import ExitStack

import torch
from torch import nn

from dicesearch.analysis.memory.cuda_autocast import CudaAutocastPolicy, policy_in_every_forward
from dicesearch.analysis.memory.sizes import PRECISION_DTYPES, ModelSizes


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



def to_fake(model: nn.Module) -> None:
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
    """x0, noise (B, C, H, W) fp32; t (B,) int64; y (B,) int64 or None (fake under fake mode)."""
    c, r = spec.input.channels, spec.input.resolution
    x0 = torch.randn(batch_size, c, r, r)
    noise = torch.randn(batch_size, c, r, r)
    t = torch.randint(0, 1000, (batch_size,))
    y = torch.randint(0, spec.input.num_classes, (batch_size,)) if spec.input.num_classes else None
    return x0, noise, t, y


def _current_bytes(tracker) -> int:
    return sum(snap[_total_key()] for snap in tracker.get_tracker_snapshot("current").values())


def _total_key() -> str:
    from torch.distributed._tools import mem_tracker as mt

    return mt._TOTAL_KEY


def traced_step_bytes(model, sizes: ModelSizes, spec, batch_size, precision, ema, checkpointing, optimizer) -> dict:
    """One training step of the meta-built ``model`` on fake tensors under MemTracker.

    The step is the trainer's own: :func:`dicesearch.train.diffusion.training_loss` (the
    forward under autocast, the multi-scale loss and, with ``learn_sigma``, the VLB in
    fp32; pixel data's decoder term, the larger of the two), then ``backward``.
    """
    from torch._subclasses.fake_tensor import FakeTensorMode

    from dicesearch.train.diffusion import NoiseSchedule, training_loss

    tracker_class = _tracker_class()
    lower = PRECISION_DTYPES[precision]
    schedule = NoiseSchedule()  # real (T,) tables: a few KB, made fake where they meet the batch
    with FakeTensorMode(allow_non_fake_inputs=True):
        to_fake(model)
        trainable = list(model.parameters())  # the frozen ones are buffers now
        model.train()
        model.set_gradient_checkpointing(checkpointing)
        if precision != "fp32":
            policy_in_every_forward(model, lower)
        weights = sum(t.nbytes for t in model.parameters()) + sum(t.nbytes for t in model.buffers())
        opt, flat = _primed_stand_in(optimizer, sizes.trainable_count)
        state_bytes, host_bytes = _device_state_bytes(opt)
        x0, noise, t, y = _batch(spec, batch_size)

        # forward and backward, with the optimizer state resident
        tracker = tracker_class()
        tracker.track_external(model, opt, x0, noise, t, y)
        with tracker, ExitStack() as policy:
            if precision != "fp32":
                policy.enter_context(CudaAutocastPolicy(lower))
            autocast = torch.autocast("cpu", dtype=lower, enabled=precision != "fp32")
            terms = training_loss(model, schedule, x0, t, noise, y, spec.resolved_loss_weights(), spec.input.learn_sigma, "pixels", autocast)
            terms.total.backward()
            del terms
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

