"""Parameters and multiply-adds of a built model, per component (each block type, heads, ...)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from dicesearch.analysis.flops import FlopCount

STAGE_PARTS = {
    "patchify": "stage inputs (patchify, position, label)",
    "position": "stage inputs (patchify, position, label)",
    "label_input": "stage inputs (patchify, position, label)",
    "prefix_tokens": "stage inputs (patchify, position, label)",
    "skip_projections": "long skips",
    "connector": "cascade connectors",
    "head": "stage heads",
}
CONDITIONING = "conditioning (shared)"
OTHER = "other"


@dataclass(frozen=True)
class ComponentCost:
    name: str  # "attention blocks", "stage heads", ...
    parameters: int
    macs: int  # per forward at the counted batch


def _component(path: str, block_kinds: list[str]) -> tuple[str, str] | None:
    """(component, the path of the module that is one instance of it), or None for "other"."""
    parts = path.split(".")
    if parts[0] == "conditioning":
        return CONDITIONING, "conditioning"
    if parts[0] != "stages" or len(parts) < 3 or not parts[1].isdigit():
        return None
    index, part = int(parts[1]), parts[2]
    if part == "blocks" and len(parts) >= 4:
        return f"{block_kinds[index]} blocks", ".".join(parts[:4])
    if part == "skip_projections" and len(parts) >= 4:
        return STAGE_PARTS[part], ".".join(parts[:4])
    if part in STAGE_PARTS:
        return STAGE_PARTS[part], ".".join(parts[:3])
    return None


def component_costs(model: nn.Module, block_kinds: list[str], flops: FlopCount) -> list[ComponentCost]:
    """Every component's parameters and multiply-adds; blocks first, in stage order.

    ``block_kinds[i]`` is stage i's block kind; ``flops`` a count of one forward of
    ``model`` (its ``by_module`` attributes FLOPs to modules). Multiply-adds not inside
    any component (none for the built-in layers) are reported as "other".
    """
    parameters: dict[str, int] = {}
    for name, p in model.named_parameters():
        found = _component(name, block_kinds)  # a parameter's name starts with its module's path
        key = found[0] if found else OTHER
        parameters[key] = parameters.get(key, 0) + p.numel()
    component_flops: dict[str, int] = {}
    for path, n in flops.by_module.items():
        found = _component(path, block_kinds) if path else None
        if found is not None and found[1] == path:  # count each instance once, at its own root
            component_flops[found[0]] = component_flops.get(found[0], 0) + n
    attributed = sum(component_flops.values())
    if flops.flops - attributed:
        component_flops[OTHER] = flops.flops - attributed
    order = list(dict.fromkeys([f"{kind} blocks" for kind in block_kinds] + list(dict.fromkeys(STAGE_PARTS.values()))))
    order += [CONDITIONING, OTHER]
    names = [name for name in order if name in parameters or name in component_flops]
    return [ComponentCost(name, parameters.get(name, 0), component_flops.get(name, 0) // 2) for name in names]
