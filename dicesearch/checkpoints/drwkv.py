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
``.ln1.weight`` + ``.ln2.weight`` (D,) each       ``.modulator.norm_weight`` (2, D), stacked
``.ln1.bias`` + ``.ln2.bias``                     ``.modulator.norm_bias`` (2, D), stacked
``.adaLN_modulation.1.*``                         ``.modulator.regress.1.*``
``in_blocks.0.ln0.*``                             ``stages.0.blocks.0.input_norm.*``
``out_blocks.j.skip_linear.*``                    ``stages.0.skip_projections.j.*``
``norm_f.*``                                      ``stages.0.blocks.{N - 1}.final_norm.*``
``final_layer.linear.*``                          ``stages.0.head.proj.*``
``final_layer.adaLN_modulation.1.*``              ``stages.0.head.modulator.regress.1.*``
================================================  ==========================================

Row 0 of ``norm_weight``/``norm_bias`` is the spatial mix's norm (``ln1``), row 1 the
channel mix's (``ln2``): adaLN-Zero's ``norm_affine`` (LayerNorm eps ``block_eps``
1e-5, nn.LayerNorm's default, then DiT's modulation). ``ln0`` is applied by the first
block to its input, ``norm_f`` by the last block to its output, the rwkv block's
``stack_norms``; the head's own norm (the code's ``norm_final``, eps 1e-6) has no affine.
Every tensor is copied as it is or reshaped, so an import is exact. A DRWKV-like spec
without ``norm_affine`` or ``stack_norms`` has no place for those norms: the import
names the first such key and the setting that gives it one.
"""

from __future__ import annotations

from dicesearch.checkpoints.layout import Entry, OfficialLayout, absent, entry
from dicesearch.checkpoints.transforms import Reshaped, Stacked

NAME = "Diffusion-RWKV"
SOURCE = "feizc/Diffusion-RWKV models_drwkv.py"

NORM_AFFINE = (
    "the affine weights of Diffusion-RWKV's block LayerNorms (ln1, ln2) need conditioning.norm_affine: true "
    "(as in the DRWKV presets)"
)
INPUT_NORM = "Diffusion-RWKV's first block normalises its input (ln0); set the rwkv block's stack_norms: true (as in the DRWKV presets)"
FINAL_NORM = "Diffusion-RWKV's final LayerNorm before the head (norm_f) needs the rwkv block's stack_norms: true (as in the DRWKV presets)"
BLOCK_EPS, HEAD_EPS = 1e-5, 1e-6  # the code's nn.LayerNorm default in the blocks; its FinalLayer's norm_final


def claims(spec) -> bool:
    return len(spec.stages) == 1 and spec.stages[0].block.kind == "rwkv"


def misfit(spec) -> str | None:
    stage, cond, block = spec.stages[0], spec.conditioning, spec.stages[0].block
    adaln = cond.kind == "adaln_zero"
    checks = [
        (adaln, f"conditioning is '{cond.kind}', Diffusion-RWKV's is adaln_zero"),
        (not adaln or cond.embed_dim in (None, stage.channels), "adaln_zero.embed_dim must be the stage's channels"),
        (not adaln or (cond.block_eps or cond.eps) == BLOCK_EPS, "adaln_zero.block_eps must be 1e-5, the eps of Diffusion-RWKV's block LayerNorms"),
        (not adaln or cond.eps == HEAD_EPS, "adaln_zero.eps must be 1e-6, the eps of Diffusion-RWKV's final-layer norm"),
        (
            block.shift_pixels == 1 and block.shift_fraction == 0.25 and block.bonus_over_length,
            "Diffusion-RWKV's blocks shift 1 pixel, a quarter of the channels each way, and divide the bonus by T "
            "(rwkv shift_pixels: 1, shift_fraction: 0.25, bonus_over_length: true)",
        ),
        (stage.depth % 2 == 1, f"depth {stage.depth} is even; the official model has N // 2 in-blocks, a middle block and N // 2 out-blocks"),
        (
            stage.long_skip and stage.head == "linear" and stage.head_norm == "conditioned",
            "Diffusion-RWKV has long skips and a linear head behind an adaLN-modulated norm (head_norm: conditioned)",
        ),
        (stage.position_embedding == "learned", f"position_embedding is '{stage.position_embedding}', Diffusion-RWKV's is learned"),
    ]
    return next((why for ok, why in checks if not ok), None)


def _layer_norm(spec, theirs: str, ours: str, why: str) -> list[Entry]:
    """An official nn.LayerNorm's weight and bias -> ``ours``.{weight,bias} with stack_norms, else absent."""
    d = spec.stages[0].channels
    if spec.stages[0].block.stack_norms:
        return [entry(f"{ours}.{p}", f"{theirs}.{p}", (d,)) for p in ("weight", "bias")]
    return [absent(f"{theirs}.{p}", (d,), why) for p in ("weight", "bias")]


def _block_norm_affines(spec, theirs: str, ours: str) -> list[Entry]:
    """ln1 and ln2 (D,) each -> the modulator's norm_weight and norm_bias (2, D), rows (ln1, ln2)."""
    d = spec.stages[0].channels
    if not spec.conditioning.norm_affine:
        return [absent(f"{theirs}.ln{n}.{p}", (d,), NORM_AFFINE) for n in (1, 2) for p in ("weight", "bias")]
    return [
        entry(f"{ours}.modulator.norm_{p}", tuple((f"{theirs}.ln{n}.{p}", (d,)) for n in (1, 2)), transform=Stacked((2, d)))
        for p in ("weight", "bias")
    ]


def _block(spec, theirs: str, ours: str, layer: int, skip: int | None) -> list[Entry]:
    stage = spec.stages[0]
    d, hidden = stage.channels, max(1, int(stage.channels * stage.block.hidden_ratio))
    key_norm = stage.block.key_norm
    items = _block_norm_affines(spec, theirs, ours)
    if layer == 0:
        items += _layer_norm(spec, f"{theirs}.ln0", f"{ours}.input_norm", INPUT_NORM)
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
    entries += _layer_norm(spec, "norm_f", f"stages.0.blocks.{stage.depth - 1}.final_norm", FINAL_NORM)
    entries += [
        entry("stages.0.head.proj.weight", "final_layer.linear.weight", (out, d)),
        entry("stages.0.head.proj.bias", "final_layer.linear.bias", (out,)),
        entry("stages.0.head.modulator.regress.1.weight", "final_layer.adaLN_modulation.1.weight", (2 * d, d)),
        entry("stages.0.head.modulator.regress.1.bias", "final_layer.adaLN_modulation.1.bias", (2 * d,)),
    ]
    return OfficialLayout(family=NAME, source=SOURCE, preset=spec.name, entries=tuple(entries))
