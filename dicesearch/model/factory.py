"""A spec becomes a model, guarded: refuse in one line what cannot fit before allocating it."""

from __future__ import annotations

import torch

from dicesearch.model.denoiser import Denoiser
from dicesearch.model.limits import check_fits


def build_model(spec, registry=None) -> Denoiser:
    """Build the PyTorch module a spec describes (on the current default device).

    Raises SpecError, before allocating anything, if the weights cannot fit in that
    device's memory (see ``dicesearch.model.limits``).
    """
    if registry is None:
        from dicesearch.registry import default_registry

        registry = default_registry()
    device = torch.empty(0).device  # the current default device
    if device.type != "meta":
        check_fits(spec, registry, device)
    return Denoiser(spec, registry)
