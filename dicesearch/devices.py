"""Where tensors live: one resolver for every ``--device`` and ``device=`` argument."""

from __future__ import annotations

import torch

from dicesearch.errors import DataError, one_line

__all__ = ["resolve_device"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``device`` as a ``torch.device``: ``"auto"`` is CUDA when there is one, else the CPU.

    An unknown or unavailable device raises ``DataError`` (one line naming it and the fix).
    """
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise DataError(f"device {device!r}: not a device name ({one_line(exc)}); use 'cpu', 'cuda' or 'auto'") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise DataError(f"device {device!r}: CUDA is not available on this machine; use 'cpu'")
    if resolved.type == "cuda" and (resolved.index or 0) >= torch.cuda.device_count():
        raise DataError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s); use 'cuda' or 'cuda:0'")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise DataError(f"device {device!r}: MPS is not available on this machine; use 'cpu'")
    return resolved
