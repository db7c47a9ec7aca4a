"""Mixed precision: which autocast dtype, and whether a GradScaler guards fp16 gradients.

``auto`` is fp16 autocast with a GradScaler on CUDA (DICE Sec. 4.1 trains in half
precision) and fp32 elsewhere; the trainer first asks ``dicesearch.speed.precision``
whether a CPU's measured bf16 units make ``auto`` bf16 for training (nowhere yet: on the
project's CPU bf16 autocast steps are slower than fp32). The weights, the optimiser state,
the EMA and the loss stay fp32 in every mode.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from dicesearch.errors import DicesearchError

__all__ = ["MixedPrecision", "resolve_precision"]

_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class MixedPrecision:
    """A resolved precision mode for one device."""

    name: str  # fp32 | bf16 | fp16
    device: torch.device

    @property
    def dtype(self) -> torch.dtype | None:
        return _DTYPES.get(self.name)

    @property
    def scales_gradients(self) -> bool:
        """fp16 gradients underflow without loss scaling; bf16 has fp32's range."""
        return self.name == "fp16"

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A GradScaler that is a no-op unless this mode scales gradients."""
        return torch.amp.GradScaler(self.device.type, enabled=self.scales_gradients)


def resolve_precision(name: str, device: torch.device) -> MixedPrecision:
    """``auto`` | ``fp32`` | ``bf16`` | ``fp16`` on ``device`` -> a concrete mode."""
    if name == "auto":
        name = "fp16" if device.type == "cuda" else "fp32"
    if name not in ("fp32", *_DTYPES):
        raise DicesearchError(f"precision {name!r}: unknown; use auto, fp32, bf16 or fp16")
    if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise DicesearchError(f"precision bf16: {torch.cuda.get_device_name(device)} does not support bfloat16; use fp16 or fp32")
    return MixedPrecision(name=name, device=device)
