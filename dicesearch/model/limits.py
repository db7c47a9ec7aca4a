"""Refuse, in one line, to build a model that cannot fit in the device's memory.

A spec of a few billion parameters validates (no device-independent limit is crossed),
but building it on a small machine would try to allocate more than it has. ``check_fits``
estimates the parameters first (one block a stage on the meta device, nothing allocated)
and compares their fp32 size with the memory of the device the model is about to be
built on.
"""

from __future__ import annotations

import os

import torch

from dicesearch.errors import SpecError


def device_memory_bytes(device: torch.device) -> int | None:
    """Total memory of ``device`` (RAM for the CPU), or None if unknown."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    if device.type == "cpu":
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            return None
    return None


def parameter_count(spec, registry) -> int:
    """The model's parameters, estimated from one block a stage (``dicesearch.model.feasibility``):
    milliseconds even for a thousand blocks, and exact when a stage's blocks are alike."""
    from dicesearch.model.feasibility import estimate_parameters

    return estimate_parameters(spec, registry).total


def check_fits(spec, registry, device: torch.device) -> None:
    """Raise SpecError if the model's fp32 weights alone exceed the device's memory."""
    available = device_memory_bytes(device)
    if available is None:
        return
    count = parameter_count(spec, registry)
    needed = 4 * count
    if needed > available:
        from dicesearch.model.feasibility import estimate_parameters

        widest = estimate_parameters(spec, registry).biggest_stage()
        raise SpecError(
            f"{spec.name}: {count:,} parameters need {needed / 2**30:,.1f} GiB for the fp32 weights alone, more than "
            f"the {available / 2**30:,.1f} GiB of {device.type} memory here; reduce stages[{widest}].channels or "
            f"stages[{widest}].depth"
        )
