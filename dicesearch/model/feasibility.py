"""Can a spec be built at all? Sizes checked in milliseconds, before anything is built.

Every field of a spec can be valid on its own while the model cannot exist: ``depth:
1000000000`` (a billion modules to construct), ``mlp_ratio: 1.0e30`` (a layer wider than
torch can describe), a kernel of 100001 on a 16x16 grid (10^10 weights per channel).
:func:`check_buildable` runs inside spec validation, so every command (validate, profile,
train, every sweep trial) refuses such a spec at once, with the field to change:

1. the number of blocks is counted (at most ``MAX_BLOCKS``);
2. the conditioning method and *one* block of each stage are built on the meta device
   (shapes only, nothing allocated); a build that fails is traced to the block parameter
   that breaks it by trying each non-default one at its default;
3. the parameters are counted on models of at most five blocks a stage, deeper stages
   extrapolated (:func:`estimate_parameters`), and compared with ``MAX_PARAMETERS``, more
   than any single device holds in fp32.

:func:`check_forward` (``dicesearch validate``, a sweep's base spec) runs one forward at
batch 1 on the meta device: a block that returns the wrong shape is found by name without
training anything. ``dicesearch.model.limits.check_fits`` compares the same estimate with
the memory of the device a model is about to be built on.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch

from dicesearch.errors import PluginError, SpecFieldError, one_line
from dicesearch.plugin_api import BlockContext, ConditioningContext

MAX_BLOCKS = 1000  # blocks in all; the deepest preset (DiMR-XL/2R) has 61
MAX_PARAMETERS = 10**11  # 373 GiB of fp32 weights: no single device holds them
BUILD_ERRORS = (Exception,)  # a plugin's builder may raise anything on absurd sizes

_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # registry -> {spec JSON: estimate}, 256 each


@dataclass(frozen=True)
class ParameterEstimate:
    """Parameters of a spec's model, estimated without building more than one block a stage."""

    total: int
    block: tuple[int, ...]  # one block of each stage
    stage: tuple[int, ...]  # each stage in all (its blocks, skips, link to the next, patchify, head)

    def biggest_stage(self) -> int:
        return max(range(len(self.stage)), key=lambda i: self.stage[i])


def _problem(exc: BaseException) -> str:
    """'TypeError: <first line>' (torch appends C++ stacks to some messages)."""
    first = next((line for line in str(exc).splitlines() if line.strip()), "")
    return f"{type(exc).__name__}: {one_line(Exception(first), 160)}"


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _conditioning(spec, registry):
    context = ConditioningContext(num_classes=spec.input.num_classes, stage_channels=tuple(s.channels for s in spec.stages))
    return registry.conditioning(spec.conditioning.kind).build(spec.conditioning, context)


def _origin(registry, kind: str) -> str:
    registered = registry.blocks.get(kind)
    if registered is None or registered.distribution == "dicesearch":
        return f"block '{kind}'"
    return f"block '{kind}' of plugin '{registered.plugin}' from distribution '{registered.distribution}'"


def _block_builder(spec, index: int, registry, conditioning) -> Callable[[object], int]:
    """params -> parameters of one block of stage ``index`` built with them (raises if it cannot be)."""
    stage = spec.stages[index]
    block_type = registry.block(stage.block.kind)
    context = BlockContext(spec.geometry(index), conditioning, 0, stage.depth)

    def build(params) -> int:
        with torch.device("meta"):
            return _count(block_type.build(params, context))

    return build


def _culprit(params, build: Callable[[object], int], below: int | None = None) -> tuple[str, object, object] | None:
    """The numeric block parameter that, set back to its default, builds the smallest block
    (when the block fails to build: lets it build at all; else: makes it smaller than
    ``below``): (name, value, default), or None when no single parameter is to blame."""
    best = None
    for name, field in type(params).model_fields.items():
        if name == "kind" or field.is_required():
            continue
        value, default = getattr(params, name), field.get_default(call_default_factory=True)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value == default:
            continue
        try:
            count = build(params.model_copy(update={name: default}))
        except BUILD_ERRORS:
            continue
        if (below is None or count < below) and (best is None or count < best[0]):
            best = (count, name, value, default)
    return None if best is None else best[1:]


EXACT_DEPTH = 5  # stages up to this deep are built whole; deeper ones are extrapolated from depths 3, 4 and 5


def _with_depths(spec, depths: list[int]):
    return spec.model_copy(update={"stages": tuple(s.model_copy(update={"depth": d}) for s, d in zip(spec.stages, depths, strict=True))})


def _skeleton(spec, registry, depths: list[int]):
    """The model of ``spec`` with these depths, on the meta device."""
    from dicesearch.model.denoiser import Denoiser

    with torch.device("meta"):
        try:
            return Denoiser(_with_depths(spec, depths), registry)
        except BUILD_ERRORS as exc:
            widest = max(range(len(spec.stages)), key=lambda i: spec.stages[i].channels)
            raise SpecFieldError(("stages", widest, "channels"), f"the model cannot be built ({_problem(exc)}); use fewer channels") from None


def estimate_parameters(spec, registry) -> ParameterEstimate:
    """Parameters of ``spec``'s model without building more than a few blocks a stage.

    A stage up to ``EXACT_DEPTH`` blocks deep is built whole. A deeper one is measured at
    depths 3, 4 and 5 (first, middle and last blocks, one and two long skips, the link to
    the next stage) and extrapolated: parameters = K + a * depth + b * (depth // 2), exact
    whenever the middle blocks are alike. A stage too large to measure this way (its
    blocks alone beyond ten times ``MAX_PARAMETERS``) is estimated as depth x one block.
    Raises SpecFieldError naming the field when a block cannot be built at all.
    """
    cache = _CACHE.setdefault(registry, OrderedDict())
    key = spec.model_dump_json()
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    with torch.device("meta"):
        try:
            conditioning = _conditioning(spec, registry)
        except BUILD_ERRORS as exc:
            raise SpecFieldError(("conditioning",), f"the conditioning method cannot be built ({_problem(exc)})") from None
    blocks = []
    for i, stage in enumerate(spec.stages):
        build = _block_builder(spec, i, registry, conditioning)
        try:
            blocks.append(build(stage.block))
        except BUILD_ERRORS as exc:
            found = _culprit(stage.block, build)
            problem = _problem(exc)
            if found is not None:
                name, value, default = found
                raise SpecFieldError(("stages", i, "block", name), f"{value!r} makes the block too large to build ({problem}); the default is {default!r}") from None
            side = spec.grid(i)
            raise SpecFieldError(
                ("stages", i, "block"),
                f"{_origin(registry, stage.block.kind)} cannot be built with {stage.channels} channels on a {side}x{side} grid ({problem})",
            ) from None
    rough = [s.depth * b for s, b in zip(spec.stages, blocks, strict=True)]
    if sum(rough) > 10 * MAX_PARAMETERS:  # far too large: no need to be exact
        estimate = ParameterEstimate(total=sum(rough), block=tuple(blocks), stage=tuple(rough))
    else:
        estimate = _measured(spec, registry, blocks)
    cache[key] = estimate
    if len(cache) > 256:
        cache.popitem(last=False)
    return estimate


def _measured(spec, registry, blocks: list[int]) -> ParameterEstimate:
    base = [s.depth if s.depth <= EXACT_DEPTH else 3 for s in spec.stages]
    model = _skeleton(spec, registry, base)
    t3 = total = _count(model)
    stages = [_count(s) for s in model.stages]
    for i, stage in enumerate(spec.stages):
        if stage.depth <= EXACT_DEPTH:
            continue
        t4 = _count(_skeleton(spec, registry, [*base[:i], 4, *base[i + 1:]]))
        t5 = _count(_skeleton(spec, registry, [*base[:i], 5, *base[i + 1:]]))
        per_block, per_skip = t5 - t4, t4 - t3 - (t5 - t4)  # depth 3 -> 4 adds a block and a skip, 4 -> 5 a block
        extra = per_block * (stage.depth - 3) + per_skip * (stage.depth // 2 - 1)
        total += extra
        stages[i] += extra  # (a feature-cascade link that grows with this stage is counted here)
        blocks[i] = per_block
    return ParameterEstimate(total=total, block=tuple(blocks), stage=tuple(stages))


def _gib(parameters: int) -> str:
    return f"{4 * parameters / 2**30:,.1f} GiB"


def check_buildable(spec, registry) -> None:
    """Raise SpecFieldError (the field to change) if ``spec``'s model cannot be built anywhere."""
    total_blocks = sum(s.depth for s in spec.stages)
    if total_blocks > MAX_BLOCKS:
        deepest = max(range(len(spec.stages)), key=lambda i: spec.stages[i].depth)
        depth = spec.stages[deepest].depth
        raise SpecFieldError(
            ("stages", deepest, "depth"),
            f"{depth:,} blocks: a model may have at most {MAX_BLOCKS:,} blocks in all (the deepest preset has 61); use fewer",
        )
    estimate = estimate_parameters(spec, registry)
    if estimate.total <= MAX_PARAMETERS:
        return
    i = estimate.biggest_stage()
    stage, block = spec.stages[i], estimate.block[i]
    limit = f"more than any one device holds (at most {MAX_PARAMETERS:,} parameters, {_gib(MAX_PARAMETERS)})"
    others = estimate.total - stage.depth * block
    if stage.depth * block > estimate.total // 2:  # the stage's blocks are the bulk
        if stage.depth > 1 and others + block <= MAX_PARAMETERS:
            most = max(1, (MAX_PARAMETERS - others) // max(block, 1))
            raise SpecFieldError(
                ("stages", i, "depth"),
                f"{stage.depth:,} blocks of {block:,} parameters make {estimate.total:,} in all ({_gib(estimate.total)} of fp32 "
                f"weights), {limit}; use at most {most:,} blocks",
            )
        builder = _block_builder(spec, i, registry, _meta_conditioning(spec, registry))
        found = _culprit(stage.block, builder, below=block // 10)  # a parameter that makes the block 10x too big
        if found is not None:
            name, value, default = found
            raise SpecFieldError(
                ("stages", i, "block", name),
                f"{value!r} makes one {stage.block.kind} block {block:,} parameters ({_gib(block)} of fp32 weights), {limit}; "
                f"the default is {default!r}",
            )
    raise SpecFieldError(
        ("stages", i, "channels"),
        f"{stage.channels:,} channels make the model {estimate.total:,} parameters ({_gib(estimate.total)} of fp32 weights), {limit}; "
        "use fewer channels",
    )


def _meta_conditioning(spec, registry):
    with torch.device("meta"):
        return _conditioning(spec, registry)


def check_prefix_tokens(spec, registry) -> None:
    """Raise SpecFieldError if the conditioning gives prefix tokens to a stage whose blocks cannot take them.

    A conditioning method's ``stage_tokens`` (TD-LN's ``label_input: token``) prepends
    tokens to a stage's sequence; only block types declaring ``prefix_tokens`` take them.
    """
    unable = [i for i, stage in enumerate(spec.stages) if not registry.block(stage.block.kind).prefix_tokens]
    conditioning = _meta_conditioning(spec, registry) if unable else None
    capable = sorted(name for name, registered in registry.blocks.items() if registered.type.prefix_tokens)
    for i in unable:
        stage = spec.stages[i]
        with torch.device("meta"):
            tokens = conditioning.stage_tokens(stage.channels, i)
        if tokens is not None:
            raise SpecFieldError(
                ("stages", i, "block", "kind"),
                f"'{stage.block.kind}' blocks cannot take the prefix tokens that conditioning '{spec.conditioning.kind}' "
                f"gives stage {i} (blocks that can: {', '.join(capable) or 'none installed'}); use one of those, or set "
                "the conditioning so that this stage gets none (tdln: label_input: add, or label_stages: first)",
            )


def check_forward(spec, registry) -> None:
    """One forward at batch 1 on the meta device; raise SpecFieldError naming the stage's block
    (and its plugin) if it fails, e.g. a block that returns another shape than it was given."""
    from dicesearch.model.denoiser import Denoiser

    where = {"stage": 0, "block": 0}
    with torch.device("meta"):
        model = Denoiser(spec, registry)
        hooks = []
        for s, stage in enumerate(model.stages):
            hooks.append(stage.register_forward_pre_hook(lambda *_, s=s: where.update(stage=s, block=None)))
            for b, block in enumerate(stage.blocks):
                hooks.append(block.register_forward_pre_hook(lambda *_, b=b: where.update(block=b)))
        side, channels = spec.input.resolution, spec.input.channels
        x, t = torch.zeros(1, channels, side, side), torch.zeros(1)
        y = torch.zeros(1, dtype=torch.long) if spec.input.num_classes else None
        try:
            with torch.no_grad():
                model(x, t, y)
        except Exception as exc:
            s = where["stage"]
            kind = spec.stages[s].block.kind
            if isinstance(exc, PluginError):  # the stage's own check of a block's output: says it all
                raise SpecFieldError(("stages", s, "block"), one_line(exc, 400)) from None
            part = f"block {where['block']}" if where["block"] is not None else "the stage around its blocks"
            raise SpecFieldError(
                ("stages", s, "block"),
                f"a forward on the meta device fails in {part} of stage {s} ({_origin(registry, kind)}): "
                f"{_problem(exc)}",
            ) from None
        finally:
            for hook in hooks:
                hook.remove()


__all__ = [
    "MAX_BLOCKS",
    "MAX_PARAMETERS",
    "ParameterEstimate",
    "check_buildable",
    "check_forward",
    "check_prefix_tokens",
    "estimate_parameters",
]
