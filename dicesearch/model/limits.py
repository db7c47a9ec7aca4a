"""Refuse, in one line, to build a model that cannot fit in the device's memory.

A spec with 10 million channels validates (every field is a positive integer), but
building it would try to allocate terabytes. ``check_fits`` counts the parameters on the
meta device first (nothing allocated) and compares their fp32 size with the memory of
the device the model is about to be built on.
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
    from dicesearch.model.denoiser import Denoiser

    with torch.device("meta"):
        return sum(p.numel() for p in Denoiser(spec, registry).parameters())


def check_fits(spec, registry, device: torch.device) -> None:
    """Raise SpecError if the model's fp32 weights alone exceed the device's memory."""
    available = device_memory_bytes(device)
    if available is None:
        return
    count = parameter_count(spec, registry)
    needed = 4 * count
    if needed > available:
        widest = max(range(len(spec.stages)), key=lambda i: spec.stages[i].channels * spec.stages[i].depth)
        raise SpecError(
            f"{spec.name}: {count:,} parameters need {needed / 2**30:,.1f} GiB for the fp32 weights alone, more than "
            f"the {available / 2**30:,.1f} GiB of {device.type} memory here; reduce stages[{widest}].channels or "
            f"stages[{widest}].depth"
        )
