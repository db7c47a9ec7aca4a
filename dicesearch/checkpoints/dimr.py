"""DiMR's checkpoint layout (Liu et al. 2024; qihao067/DiMR ``libs/core/blocks.py``, ``MRModel``).

A DiMR spec is a feature cascade (``features_from: all_blocks``) of two or more stages
with TD-LN, each of an odd number of ``attention`` (DiMR's TransformerBlock) or
``convnext`` blocks with GeGLU MLPs, U-ViT long skips, a learned position table and a
3x3 output convolution. Per stage s (``stages.s.`` on both sides):

=================================================  =========================================
``input_layer.1.*`` (D, C, p, p)                   ``patchify.*``
``input_layer.3.position_embeddings.weight``       ``position`` (g, g, D), reshaped
(g*g, D)
``upsample.1.kernel.*`` (D*r*r, F), s > 0          ``connector.proj.*``, rows from DiMR's
                                                   (r1, r2, c) to pixel-shuffle (c, r1, r2)
``blocks.i.block1.query_key_value.weight``         ``blocks.i.attn.qkv.weight``
``blocks.i.block1.dense.*``                        ``blocks.i.attn.proj.*``
``blocks.i.block1.1.*`` (ConvNeXt)                 ``blocks.i.dwconv.*``
``blocks.i.block2.w0.*`` + ``w1.*``                ``blocks.i.mlp.fc1.*``, concatenated
                                                   (GeGLU: act(w0 x) * w1 x)
``blocks.i.block2.w2.*``                           ``blocks.i.mlp.fc2.*``
``skip_denses.j.*``                                ``skip_projections.j.*``
``output_layer.2.*``                               ``head.proj.*``
=================================================  =========================================

Not in the preset yet (the import names the first and stops):

- every norm: DiMR's are time-dependent, each affine vector a ``TimeDependentParameter``
  of four tensors (``param0``, ``param1``, ``nodecay_weight``, ``nodecay_bias``:
  sigmoid((1 + nodecay_weight) * log-SNR / 4 + nodecay_bias) interpolates param0 and
  param1). The blocks' norms are RMSNorms with a scale only (``norm_type: TDRMSN`` in
  the XL config), the connector's and the output's LayerNorms have weight and bias;
  the preset's TD-LN is LayerNorm-based (one ``modulator`` per block) and its connector
  norms are plain LayerNorms.
- ``class_embeds`` of a transformer stage: DiMR prepends the class as a token to that
  branch's sequence; the preset adds a class embedding to every position of each stage.
"""

from __future__ import annotations

from dicesearch.checkpoints.layout import Entry, OfficialLayout, absent, entry
from dicesearch.checkpoints.transforms import Reshaped, ShuffledRows, Stacked

NAME = "DiMR"
SOURCE = "qihao067/DiMR libs/core/blocks.py"

TD_PARTS = ("param0", "param1", "nodecay_weight", "nodecay_bias")
BLOCK_NORM = "DiMR's blocks use a time-dependent RMSNorm (TDRMSN, 4 tensors per scale); the preset's TD-LN is LayerNorm-based"
TD_LAYERNORM = "DiMR's {what} LayerNorm is time-dependent (4 tensors per weight and bias); the preset's is {ours}"
CLASS_TOKEN = (
    "DiMR feeds the class as a token to this branch's attention; the preset adds a class embedding to every "
    "position (stages.{s}.label_input), which computes something else"
)


def claims(spec) -> bool:
    return len(spec.stages) >= 2 and spec.cascade.kind == "features"


def misfit(spec) -> str | None:
    checks = [
        (spec.cascade.features_from == "all_blocks", "DiMR's cascade passes all block outputs (features_from: all_blocks)"),
        (spec.conditioning.kind == "tdln", f"conditioning is '{spec.conditioning.kind}', DiMR's is tdln"),
        (not spec.input.learn_sigma, "DiMR predicts noise only (learn_sigma: false)"),
    ]
    for s, stage in enumerate(spec.stages):
        block = stage.block
        checks += [
            (block.kind in ("attention", "convnext"), f"stage {s} has '{block.kind}' blocks; DiMR's are attention or convnext"),
            (getattr(block, "glu", False) and getattr(block, "activation", "") == "gelu", f"stage {s}: DiMR's MLPs are GeGLU with exact GELU"),
            (block.kind != "attention" or not block.qkv_bias, f"stage {s}: DiMR's qkv has no bias"),
            (stage.depth % 2 == 1 and stage.long_skip, f"stage {s}: DiMR stages have an odd number of blocks and long skips"),
            (stage.position_embedding == "learned" and stage.head == "conv3x3", f"stage {s}: DiMR has learned positions and a conv3x3 head"),
        ]
    return next((why for ok, why in checks if not ok), None)


def _time_dependent(key: str, shape: tuple[int, ...], why: str) -> list[Entry]:
    return [absent(f"{key}.{part}", shape, why) for part in TD_PARTS]


def _time_dependent_layernorm(key: str, size: int, what: str, ours: str) -> list[Entry]:
    why = TD_LAYERNORM.format(what=what, ours=ours)
    return _time_dependent(f"{key}.weight", (size,), why) + _time_dependent(f"{key}.bias", (size,), why)


def _block(spec, s: int, i: int) -> list[Entry]:
    stage = spec.stages[s]
    d, hidden = stage.channels, int(stage.channels * stage.block.mlp_ratio)
    ours, theirs = f"stages.{s}.blocks.{i}", f"stages.{s}.blocks.{i}"
    if stage.block.kind == "attention":
        mixer = [
            *_time_dependent(f"{theirs}.block1.norm.scale", (d,), BLOCK_NORM),
            entry(f"{ours}.attn.qkv.weight", f"{theirs}.block1.query_key_value.weight", (3 * d, d)),
            entry(f"{ours}.attn.proj.weight", f"{theirs}.block1.dense.weight", (d, d)),
            entry(f"{ours}.attn.proj.bias", f"{theirs}.block1.dense.bias", (d,)),
        ]
    else:
        k = stage.block.kernel_size
        mixer = [
            entry(f"{ours}.dwconv.weight", f"{theirs}.block1.1.weight", (d, 1, k, k)),
            entry(f"{ours}.dwconv.bias", f"{theirs}.block1.1.bias", (d,)),
        ]
    w0, w1, w2 = (f"{theirs}.block2.w{n}" for n in range(3))
    return mixer + [
        *_time_dependent(f"{theirs}.block2.norm.scale", (d,), BLOCK_NORM),
        entry(f"{ours}.mlp.fc1.weight", ((f"{w0}.weight", (hidden, d)), (f"{w1}.weight", (hidden, d))), transform=Stacked()),
        entry(f"{ours}.mlp.fc1.bias", ((f"{w0}.bias", (hidden,)), (f"{w1}.bias", (hidden,))), transform=Stacked()),
        entry(f"{ours}.mlp.fc2.weight", f"{w2}.weight", (d, hidden)),
        entry(f"{ours}.mlp.fc2.bias", f"{w2}.bias", (d,)),
    ]


def _stage(spec, s: int) -> list[Entry]:
    stage = spec.stages[s]
    d, p, g = stage.channels, stage.patch_size, spec.grid(s)
    pre = f"stages.{s}"
    items = [
        entry(f"{pre}.patchify.weight", f"{pre}.input_layer.1.weight", (d, spec.input.channels, p, p)),
        entry(f"{pre}.patchify.bias", f"{pre}.input_layer.1.bias", (d,)),
        entry(f"{pre}.position", f"{pre}.input_layer.3.position_embeddings.weight", (g * g, d), Reshaped((g, g, d))),
    ]
    if stage.block.kind == "attention" and spec.input.num_classes:
        items.append(absent(f"{pre}.class_embeds.weight", (spec.input.num_classes + 1, d), CLASS_TOKEN.format(s=s)))
    if s > 0:
        coarse = spec.stages[s - 1]
        width, ratio = coarse.channels * (coarse.depth + 1), g // spec.grid(s - 1)
        rows = d * ratio * ratio
        items += _time_dependent_layernorm(f"{pre}.upsample.0", width, "connector input", "a plain LayerNorm (FeatureConnector)")
        items += [
            entry(f"{pre}.connector.proj.weight", f"{pre}.upsample.1.kernel.weight", (rows, width), ShuffledRows(ratio)),
            entry(f"{pre}.connector.proj.bias", f"{pre}.upsample.1.kernel.bias", (rows,), ShuffledRows(ratio)),
        ]
        items += _time_dependent_layernorm(f"{pre}.upsample.2", d, "connector output", "a plain LayerNorm (FeatureConnector)")
    for i in range(stage.depth):
        items += _block(spec, s, i)
    for j in range(stage.depth // 2):
        items += [
            entry(f"{pre}.skip_projections.{j}.weight", f"{pre}.skip_denses.{j}.weight", (d, 2 * d)),
            entry(f"{pre}.skip_projections.{j}.bias", f"{pre}.skip_denses.{j}.bias", (d,)),
        ]
    items += _time_dependent_layernorm(f"{pre}.output_layer.0", d, "output", "TD-LN's modulator (head.modulator)")
    c = spec.input.channels
    items += [
        entry(f"{pre}.head.proj.weight", f"{pre}.output_layer.2.weight", (c, d, 3, 3)),
        entry(f"{pre}.head.proj.bias", f"{pre}.output_layer.2.bias", (c,)),
    ]
    return items


def layout(spec) -> OfficialLayout:
    entries = [item for s in range(len(spec.stages)) for item in _stage(spec, s)]
    return OfficialLayout(family=NAME, source=SOURCE, preset=spec.name, entries=tuple(entries))
