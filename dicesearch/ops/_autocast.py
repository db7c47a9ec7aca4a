"""Autocast switched off around an op's fp32 maths, on whatever device its inputs live."""

from __future__ import annotations

import contextlib

import torch


def autocast_disabled(device: torch.device) -> contextlib.AbstractContextManager:
    """``torch.autocast(device.type, enabled=False)``, or no context where autocast does not exist.

    Meta tensors (used to count a preset's parameters and FLOPs without allocating it)
    have no autocast, and ``torch.autocast("meta")`` raises; nothing can lower their
    precision, so there is nothing to disable.
    """
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()
