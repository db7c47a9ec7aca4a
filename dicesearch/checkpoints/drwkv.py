"""Diffusion-RWKV's checkpoint layout (Fei et al. 2024; feizc/Diffusion-RWKV ``models_drwkv.py``).

A DRWKV spec is one stage of an odd number N of ``rwkv`` blocks with U-ViT long skips,
adaLN-Zero (E = the stage's width), a learned position table and a linear head. The
official model splits the blocks into ``in_blocks`` (N // 2), ``mid_block`` and
``out_blocks`` (N // 2, each with a ``skip_linear``); ours are one list:

================================================  ==========================================
``pos_embed`` (1, g*g, D)                         ``stages.0.position`` (g, g, D), reshaped
``patch_embed.proj.*``                            ``stages.0.patchify.*``
``time_embed.mlp.{0,2}.*``                        ``conditioning.time_mlp.{0,2}.*``
``label_emb.embedding_table.weight``              ``conditioning.label_embedding.weight``
``in_blocks.i`` / ``mid_block`` / ``out_blocks.j``  ``stages.0.blocks.{i, N // 2, N // 2 + 1 + j}``
``.att.spatial_{decay,first}``                    ``.spatial.{decay,bonus}``
``.att.spatial_mix_{k,v,r}`` (1, 1, D)            ``.spatial.mix_{k,v,r}`` (D,), reshaped
``.att.{key,value,receptance,output}.weight``     ``.spatial.*.weight``
``.ffn.spatial_mix_{k,r}`` (1, 1, D)              ``.channel.mix_{k,r}`` (D,), reshaped
``.ffn.{key,receptance,value}.weight``            ``.channel.*.weight``
``.att.key_norm.*`` / ``.ffn.key_norm.*``         ``.spatial.key_norm.*`` / ``.channel.key_norm.*``
``.adaLN_modulation.1.*``                         ``.modulator.regress.1.*``
``out_blocks.j.skip_linear.*``                    ``stages.0.skip_projections.j.*``
``final_layer.linear.*``                          ``stages.0.head.proj.*``
``final_layer.adaLN_modulation.1.*``              ``stages.0.head.modulator.regress.1.*``
================================================  ==========================================

Not in the preset yet (the import names the first and stops): the affine weights of each
block's ``ln1``/``ln2`` (LayerNorm eps 1e-5 under the adaLN modulation), the first block's
extra input norm ``ln0`` and the final ``norm_f`` before the head (4D + 2D + 2D values,
exactly the official models' surplus over the presets).
"""

from __future__ import annotations

from dicesearch.checkpoints.layout import Entry, OfficialLayout, absent, entry
from dicesearch.checkpoints.transforms import Reshaped

NAME = "Diffusion-RWKV"
SOURCE = "feizc/Diffusion-RWKV models_drwkv.py"

NORM_AFFINE = "the affine weights of Diffusion-RWKV's block LayerNorms (ln1, ln2) are not in the preset's rwkv block yet"
INPUT_NORM = "Diffusion-RWKV's first block normalises its input (ln0); the preset's rwkv block has no such norm yet"
FINAL_NORM = "Diffusion-RWKV's final LayerNorm before the head (norm_f) is not in the preset yet"


def claims(spec) -> bool:
    return len(spec.stages) == 1 and spec.stages[0].block.kind == "rwkv"


def misfit(spec) -> str | None:
    stage, cond = spec.stages[0], spec.conditioning
    checks = [
        (cond.kind == "adaln_zero", f"conditioning is '{cond.kind}', Diffusion-RWKV's is adaln_zero"),
        (cond.kind != "adaln_zero" or cond.embed_dim in (None, stage.channels), "adaln_zero.embed_dim must be the stage's channels"),
        (stage.depth % 2 == 1, f"depth {stage.depth} is even; the official model has N // 2 in-blocks, a middle block and N // 2 out-blocks"),
        (stage.long_skip and stage.head == "linear", "Diffusion-RWKV has long skips and a linear head"),
        (stage.position_embedding == "learned", f"position_embedding is '{stage.position_embedding}', Diffusion-RWKV's is learned"),
    ]
    return next((why for ok, why in checks if not ok), None)


def _block(spec, theirs: str, ours: str, layer: int, skip: int | None) -> list[Entry]:
    stage = spec.stages[0]
    d, hidden = stage.channels, max(1, int(stage.channels * stage.block.hidden_ratio))
    key_norm = stage.block.key_norm
    items = [
        absent(f"{theirs}.ln1.weight", (d,), NORM_AFFINE),
        absent(f"{theirs}.ln1.bias", (d,), NORM_AFFINE),
        absent(f"{theirs}.ln2.weight", (d,), NORM_AFFINE),
        absent(f"{theirs}.ln2.bias", (d,), NORM_AFFINE),
    ]
    if layer == 0:
        items += [absent(f"{theirs}.ln0.weight", (d,), INPUT_NORM), absent(f"{theirs}.ln0.bias", (d,), INPUT_NORM)]
    items += [
        entry(f"{ours}.spatial.decay", f"{theirs}.att.spatial_decay", (d,)),
        entry(f"{ours}.spatial.bonus", f"{theirs}.att.spatial_first", (d,)),
        *(entry(f"{ours}.spatial.mix_{c}", f"{theirs}.att.spatial_mix_{c}", (1, 1, d), Reshaped((d,))) for c in "kvr"),
        *(entry(f"{ours}.spatial.{name}.weight", f"{theirs}.att.{name}.weight", (d, d)) for name in ("key", "value", "receptance")),
    ]
    if key_norm:
        items += [entry(f"{ours}.spatial.key_norm.{p}", f"{theirs}.att.key_norm.{p}", (d,)) for p in ("weight", "bias")]
    items += [
        entry(f"{ours}.spatial.output.weight", f"{theirs}.att.output.weight", (d, d)),
        *(entry(f"{ours}.channel.mix_{c}", f"{theirs}.ffn.spatial_mix_{c}", (1, 1, d), Reshaped((d,))) for c in "kr"),
        entry(f"{ours}.channel.key.weight", f"{theirs}.ffn.key.weight", (hidden, d)),
    ]
    if key_norm:
        items += [entry(f"{ours}.channel.key_norm.{p}", f"{theirs}.ffn.key_norm.{p}", (hidden,)) for p in ("weight", "bias")]
    items += [
        entry(f"{ours}.channel.receptance.weight", f"{theirs}.ffn.receptance.weight", (d, d)),
        entry(f"{ours}.channel.value.weight", f"{theirs}.ffn.value.weight", (d, hidden)),
        entry(f"{ours}.modulator.regress.1.weight", f"{theirs}.adaLN_modulation.1.weight", (6 * d, d)),
        entry(f"{ours}.modulator.regress.1.bias", f"{theirs}.adaLN_modulation.1.bias", (6 * d,)),
    ]
    if skip is not None:
        items += [
            entry(f"stages.0.skip_projections.{skip}.weight", f"{theirs}.skip_linear.weight", (d, 2 * d)),
            entry(f"stages.0.skip_projections.{skip}.bias", f"{theirs}.skip_linear.bias", (d,)),
        ]
    return items


def layout(spec) -> OfficialLayout:
    stage = spec.stages[0]
    d, p, g, half = stage.channels, stage.patch_size, spec.grid(0), stage.depth // 2
    freq = spec.conditioning.frequency_dim
    entries: list[Entry] = [
        entry("stages.0.position", "pos_embed", (1, g * g, d), Reshaped((g, g, d))),
        entry("stages.0.patchify.weight", "patch_embed.proj.weight", (d, spec.input.channels, p, p)),
        entry("stages.0.patchify.bias", "patch_embed.proj.bias", (d,)),
        entry("conditioning.time_mlp.0.weight", "time_embed.mlp.0.weight", (d, freq)),
        entry("conditioning.time_mlp.0.bias", "time_embed.mlp.0.bias", (d,)),
        entry("conditioning.time_mlp.2.weight", "time_embed.mlp.2.weight", (d, d)),
        entry("conditioning.time_mlp.2.bias", "time_embed.mlp.2.bias", (d,)),
    ]
    if spec.input.num_classes:
        entries.append(entry("conditioning.label_embedding.weight", "label_emb.embedding_table.weight", (spec.input.num_classes + 1, d)))
    for i in range(half):
        entries += _block(spec, f"in_blocks.{i}", f"stages.0.blocks.{i}", i, None)
    entries += _block(spec, "mid_block", f"stages.0.blocks.{half}", half, None)
    for j in range(half):
        entries += _block(spec, f"out_blocks.{j}", f"stages.0.blocks.{half + 1 + j}", half + 1 + j, j)
    out = p * p * spec.output_channels
    entries += [
        absent("norm_f.weight", (d,), FINAL_NORM),
        absent("norm_f.bias", (d,), FINAL_NORM),
        entry("stages.0.head.proj.weight", "final_layer.linear.weight", (out, d)),
        entry("stages.0.head.proj.bias", "final_layer.linear.bias", (out,)),
        entry("stages.0.head.modulator.regress.1.weight", "final_layer.adaLN_modulation.1.weight", (2 * d, d)),
        entry("stages.0.head.modulator.regress.1.bias", "final_layer.adaLN_modulation.1.bias", (2 * d,)),
    ]
    return OfficialLayout(family=NAME, source=SOURCE, preset=spec.name, entries=tuple(entries))
