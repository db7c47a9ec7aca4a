"""DiT's checkpoint layout (Peebles & Xie 2023; facebookresearch/DiT ``models.py``).

A DiT spec is one stage of ``attention`` blocks (qkv with bias, plain MLP, tanh-GELU),
adaLN-Zero with E = the stage's width and LayerNorm eps 1e-6, DiT's sin-cos table and a
linear head. Official key -> ours (shapes for width D, depth N, patch p, grid g = 32/p):

==========================================  ==============================================
``pos_embed`` (1, g*g, D)                   ``stages.0.position`` (g, g, D), reshaped
``x_embedder.proj.{weight,bias}``           ``stages.0.patchify.*``
``t_embedder.mlp.{0,2}.*``                  ``conditioning.time_mlp.{0,2}.*``
``y_embedder.embedding_table.weight``       ``conditioning.label_embedding.weight`` (K + 1, D)
``blocks.i.attn.{qkv,proj}.*``              ``stages.0.blocks.i.attn.{qkv,proj}.*``
``blocks.i.mlp.{fc1,fc2}.*``                ``stages.0.blocks.i.mlp.{fc1,fc2}.*``
``blocks.i.adaLN_modulation.1.*``           ``stages.0.blocks.i.modulator.regress.1.*`` (6D)
``final_layer.linear.*``                    ``stages.0.head.proj.*`` (p*p*C_out)
``final_layer.adaLN_modulation.1.*``        ``stages.0.head.modulator.regress.1.*`` (2D)
==========================================  ==============================================

The chunk orders agree (shift, scale, gate per sub-layer; qkv as 3 x heads x head_dim;
the head's (p, p, C) unpatchify order), so every tensor but ``pos_embed`` is copied as is.
"""

from __future__ import annotations

from dicesearch.checkpoints.layout import Entry, OfficialLayout, entry
from dicesearch.checkpoints.transforms import Reshaped

NAME = "DiT"
SOURCE = "facebookresearch/DiT models.py"


def claims(spec) -> bool:
    """A single stage of attention blocks: a DiT, or a near miss worth explaining."""
    return len(spec.stages) == 1 and spec.stages[0].block.kind == "attention"


def misfit(spec) -> str | None:
    """Why ``spec`` is not a DiT model (None: it is)."""
    stage, block, cond = spec.stages[0], spec.stages[0].block, spec.conditioning
    checks = [
        (cond.kind == "adaln_zero", f"conditioning is '{cond.kind}', DiT's is adaln_zero"),
        (cond.kind != "adaln_zero" or cond.embed_dim in (None, stage.channels), "adaln_zero.embed_dim must be the stage's channels"),
        (cond.kind != "adaln_zero" or cond.eps == 1e-6, "adaln_zero.eps must be 1e-6, DiT's LayerNorm eps"),
        (spec.input.num_classes > 0, "DiT is class-conditional (input.num_classes > 0)"),
        (block.qkv_bias and not block.glu and block.activation == "gelu_tanh", "DiT's blocks have qkv_bias, no glu and gelu_tanh"),
        (stage.position_embedding == "sincos", f"position_embedding is '{stage.position_embedding}', DiT's is sincos"),
        (stage.head == "linear" and not stage.long_skip, "DiT has a linear head and no long skips"),
    ]
    return next((why for ok, why in checks if not ok), None)


def layout(spec) -> OfficialLayout:
    stage = spec.stages[0]
    d, p, g = stage.channels, stage.patch_size, spec.grid(0)
    hidden = int(d * stage.block.mlp_ratio)
    freq = spec.conditioning.frequency_dim
    entries: list[Entry] = [
        entry("stages.0.position", "pos_embed", (1, g * g, d), Reshaped((g, g, d))),
        entry("stages.0.patchify.weight", "x_embedder.proj.weight", (d, spec.input.channels, p, p)),
        entry("stages.0.patchify.bias", "x_embedder.proj.bias", (d,)),
        entry("conditioning.time_mlp.0.weight", "t_embedder.mlp.0.weight", (d, freq)),
        entry("conditioning.time_mlp.0.bias", "t_embedder.mlp.0.bias", (d,)),
        entry("conditioning.time_mlp.2.weight", "t_embedder.mlp.2.weight", (d, d)),
        entry("conditioning.time_mlp.2.bias", "t_embedder.mlp.2.bias", (d,)),
        entry("conditioning.label_embedding.weight", "y_embedder.embedding_table.weight", (spec.input.num_classes + 1, d)),
    ]
    for i in range(stage.depth):
        ours, theirs = f"stages.0.blocks.{i}", f"blocks.{i}"
        entries += [
            entry(f"{ours}.attn.qkv.weight", f"{theirs}.attn.qkv.weight", (3 * d, d)),
            entry(f"{ours}.attn.qkv.bias", f"{theirs}.attn.qkv.bias", (3 * d,)),
            entry(f"{ours}.attn.proj.weight", f"{theirs}.attn.proj.weight", (d, d)),
            entry(f"{ours}.attn.proj.bias", f"{theirs}.attn.proj.bias", (d,)),
            entry(f"{ours}.mlp.fc1.weight", f"{theirs}.mlp.fc1.weight", (hidden, d)),
            entry(f"{ours}.mlp.fc1.bias", f"{theirs}.mlp.fc1.bias", (hidden,)),
            entry(f"{ours}.mlp.fc2.weight", f"{theirs}.mlp.fc2.weight", (d, hidden)),
            entry(f"{ours}.mlp.fc2.bias", f"{theirs}.mlp.fc2.bias", (d,)),
            entry(f"{ours}.modulator.regress.1.weight", f"{theirs}.adaLN_modulation.1.weight", (6 * d, d)),
            entry(f"{ours}.modulator.regress.1.bias", f"{theirs}.adaLN_modulation.1.bias", (6 * d,)),
        ]
    out = p * p * spec.output_channels
    entries += [
        entry("stages.0.head.proj.weight", "final_layer.linear.weight", (out, d)),
        entry("stages.0.head.proj.bias", "final_layer.linear.bias", (out,)),
        entry("stages.0.head.modulator.regress.1.weight", "final_layer.adaLN_modulation.1.weight", (2 * d, d)),
        entry("stages.0.head.modulator.regress.1.bias", "final_layer.adaLN_modulation.1.bias", (2 * d,)),
    ]
    return OfficialLayout(family=NAME, source=SOURCE, preset=spec.name, entries=tuple(entries))


_SIZES = {(12, 384, 6): "S", (12, 768, 12): "B", (24, 1024, 16): "L", (28, 1152, 16): "XL"}


def sample_command(spec, path) -> str | None:
    """The DiT ``sample.py`` command line that runs an exported ``path``, when DiT has the config."""
    stage = spec.stages[0]
    size = _SIZES.get((stage.depth, stage.channels, stage.block.heads))
    image = spec.input.resolution * 8  # DiT's SD VAE downsamples by 8
    if (
        size is None or stage.patch_size not in (2, 4, 8) or stage.block.mlp_ratio != 4.0 or image not in (256, 512)
        or spec.input.channels != 4 or not spec.input.learn_sigma or spec.conditioning.frequency_dim != 256
    ):  # fmt: skip
        return None
    classes = "" if spec.input.num_classes == 1000 else f" --num-classes {spec.input.num_classes}"
    return f"python sample.py --model DiT-{size}/{stage.patch_size} --image-size {image}{classes} --ckpt {path}"
