"""Which official layout a spec has, and which preset a foreign file fits."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from dicesearch.checkpoints import dimr, dit, drwkv
from dicesearch.checkpoints.layout import OfficialLayout
from dicesearch.errors import CheckpointError, DicesearchError

__all__ = ["FAMILIES", "fitting_preset", "layout_for"]

FAMILIES = (dit, drwkv, dimr)
"""Each a module with NAME, SOURCE, claims(spec), misfit(spec) -> reason | None, layout(spec)."""

_EXAMPLES = "DiT (DiT-S/2 ... DiT-XL/2), Diffusion-RWKV (DRWKV-S/2, -B/2, -H/2) or DiMR (DiMR-XL/2R)"


def layout_for(spec, where: str) -> OfficialLayout:
    """The official layout of ``spec``'s model family; ``CheckpointError`` if it has none."""
    for family in FAMILIES:
        if family.claims(spec):
            why = family.misfit(spec)
            if why is not None:
                raise CheckpointError(f"{where}: {spec.name} is not a {family.NAME} model: {why}; start from a {family.NAME} preset")
            return family.layout(spec)
    raise CheckpointError(f"{where}: {spec.name} has no official checkpoint layout; use a {_EXAMPLES} preset or spec")


def _matches(layout: OfficialLayout, state: Mapping[str, torch.Tensor]) -> bool:
    expected = layout.official_shapes()
    return len(expected) == len(state) and all(key in state and tuple(state[key].shape) == shape for key, shape in expected.items())


def fitting_preset(state: Mapping[str, torch.Tensor], registry=None) -> str | None:
    """The name of the shipped preset whose official layout ``state`` has exactly, if any."""
    from dicesearch.spec import list_presets, load_spec

    for name in list_presets():
        try:
            spec = load_spec(name, registry)
            layout = layout_for(spec, name)
        except DicesearchError:
            continue
        if _matches(layout, state):
            return spec.name
    return None
