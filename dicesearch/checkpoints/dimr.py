"""DiMR's checkpoint layout (Liu et al. 2024; qihao067/DiMR ``libs/core/blocks.py``, ``MRModel``).

A DiMR spec is a feature cascade (``features_from: all_blocks``) of two or more stages
with TD-LN, each of an odd number of ``attention`` (DiMR's TransformerBlock) or
``convnext`` (``form: dimr``, DiMR's ConvNeXtBlock) blocks with GeGLU MLPs, U-ViT long
skips, a learned position table and a 3x3 output convolution. Per stage s
(``stages.s.`` on both sides):

=================================================  =========================================
``input_layer.1.*`` (D, C, p, p)                   ``patchify.*``
``input_layer.3.position_embeddings.weight``       ``position`` (g, g, D), reshaped
(g*g, D)
``class_embeds.weight`` (K + 1, D), attention      ``prefix_tokens.embedding.weight``
                                                   (``label_input.embedding.weight`` with
                                                   ``label_input: add``)
``upsample.0.{weight,bias}.*``, s > 0              ``connector.norm_in.{p,w,b}``
``upsample.1.kernel.*`` (D*r*r, F), s > 0          ``connector.proj.*``, rows from DiMR's
                                                   (r1, r2, c) to pixel-shuffle (c, r1, r2)
``upsample.2.{weight,bias}.*``, s > 0              ``connector.norm_out.{p,w,b}``
``blocks.i.block1.norm.*`` (attention)             ``blocks.i.modulator.*``, sub-layer 0
``blocks.i.block1.query_key_value.weight``         ``blocks.i.attn.qkv.weight``
``blocks.i.block1.dense.*``                        ``blocks.i.attn.proj.*``
``blocks.i.block1.1.*`` (ConvNeXt)                 ``blocks.i.dwconv.*``
``blocks.i.block2.norm.*``                         ``blocks.i.modulator.*``, the last sub-layer
``blocks.i.block2.w0.*`` + ``w1.*``                ``blocks.i.mlp.fc1.*``, concatenated
                                                   (GeGLU: act(w0 x) * w1 x)
``blocks.i.block2.w2.*``                           ``blocks.i.mlp.fc2.*``
``skip_denses.j.*``                                ``skip_projections.j.*``
``output_layer.0.{weight,bias}.*``                 ``head.modulator.{p,w,b}``
``output_layer.2.*``                               ``head.proj.*``
=================================================  =========================================

The time-dependent norms: each affine vector of DiMR's ``LayerNorm`` (weight, bias) and
``TDRMSNorm`` (scale) is a ``TimeDependentParameter`` of four (C,) tensors, used as
``param1 + sigmoid(tau * (nodecay_weight + 1) + nodecay_bias) * (param0 - param1)``
with tau = log-SNR / 4. TD-LN's modulator (``plugins/tdln.py``, ``per_channel``) holds
the same numbers per sub-layer k and vector v (v = 0 the weight or scale, 1 the bias):
``p[k, 2v]`` = param0, ``p[k, 2v + 1]`` = param1, ``w[k, v]`` = nodecay_weight + 1
(:class:`~dicesearch.checkpoints.transforms.Offset`, in fp32 as the official forward
adds it) and ``b[k, v]`` = nodecay_bias. The blocks' norms are TDRMSNorm scales in the
XL and G configs (``norm_type: TDRMSN``: ``block_norm: rms``) or LayerNorms
(``norm_type: LN``, the code's default: ``block_norm: layer``); the output and
upsampler norms are always LayerNorms.

The class label: DiMR prepends ``class_embeds(y)`` to a transformer branch's sequence as
an extra token, which attention mixes with the others and the output strips. TD-LN's
``label_input: token`` does the same (the DiMR presets), so the imported model is the
official one. A spec with ``label_input: add`` (the row added to every position of the
branch's input) takes the same tensors and loads strictly, but its outputs differ from
the official model's; the import says so (:data:`CLASS_TOKEN`).
"""

from __future__ import annotations

from dicesearch.checkpoints.layout import Entry, OfficialLayout, entry
from dicesearch.checkpoints.transforms import Offset, Reshaped, ShuffledRows, Stacked

NAME = "DiMR"
SOURCE = "qihao067/DiMR libs/core/blocks.py"

LAYER_EPS, RMS_EPS = 1e-5, 1e-8  # DiMR's time-dependent LayerNorm and TDRMSNorm
CLASS_TOKEN = (
    "outputs differ from the official DiMR model's: its code prepends the class embedding to the attention "
    "sequence of branch {branches} as an extra token, this spec adds the same embedding (class_embeds, imported "
    "as label_input) to every position of that branch's input (tdln.label_input: add); every other tensor "
    "computes what the official one does; use tdln.label_input: token for the official model"
)


def claims(spec) -> bool:
    return len(spec.stages) >= 2 and spec.cascade.kind == "features"


def _has_class_table(spec, s: int) -> bool:
    """Whether DiMR's stage s has ``class_embeds``: every transformer stage of a class-conditional model."""
    return spec.input.num_classes > 0 and spec.stages[s].block.kind == "attention"


def _has_label_input(spec, s: int) -> bool:
    """Whether the spec's stage s has a label table (TD-LN's ``label_stages``)."""
    return spec.input.num_classes > 0 and (spec.conditioning.label_stages == "all" or s == 0)


def _as_token(spec) -> bool:
    """Whether the label enters as DiMR's class token (tdln.label_input: token) rather than added."""
    return getattr(spec.conditioning, "label_input", "add") == "token"


def misfit(spec) -> str | None:
    cond = spec.conditioning
    tdln = cond.kind == "tdln"
    checks = [
        (spec.cascade.features_from == "all_blocks", "DiMR's cascade passes all block outputs (features_from: all_blocks)"),
        (spec.cascade.connector_norm == "conditioned", "DiMR's upsampler norms are time-dependent (cascade.connector_norm: conditioned)"),
        (tdln, f"conditioning is '{cond.kind}', DiMR's is tdln"),
        (not tdln or cond.per_channel, "DiMR's time-dependent parameters are per channel (tdln.per_channel: true)"),
        (not tdln or cond.time_input == "dimr", "DiMR's code feeds log-SNR / 4 to its time-dependent parameters (tdln.time_input: dimr)"),
        (not tdln or cond.eps == LAYER_EPS, "tdln.eps must be 1e-5, the eps of DiMR's time-dependent LayerNorm"),
        (not tdln or cond.block_norm != "rms" or cond.rms_eps == RMS_EPS, "tdln.rms_eps must be 1e-8, the eps of DiMR's TDRMSNorm"),
        (not spec.input.learn_sigma, "DiMR predicts noise only (learn_sigma: false)"),
    ]
    for s, stage in enumerate(spec.stages):
        block = stage.block
        checks += [
            (block.kind in ("attention", "convnext"), f"stage {s} has '{block.kind}' blocks; DiMR's are attention or convnext"),
            (getattr(block, "glu", False) and getattr(block, "activation", "") == "gelu", f"stage {s}: DiMR's MLPs are GeGLU with exact GELU"),
            (block.kind != "attention" or not block.qkv_bias, f"stage {s}: DiMR's qkv has no bias"),
            (block.kind != "convnext" or block.form == "dimr", f"stage {s}: DiMR's ConvNeXt block is the convnext block's form: dimr"),
            (stage.depth % 2 == 1 and stage.long_skip, f"stage {s}: DiMR stages have an odd number of blocks and long skips"),
            (
                stage.position_embedding == "learned" and stage.head == "conv3x3" and stage.head_norm == "conditioned",
                f"stage {s}: DiMR has learned positions and a conv3x3 head behind a time-dependent LayerNorm",
            ),
            (
                not tdln or _has_class_table(spec, s) == _has_label_input(spec, s),
                f"stage {s}: DiMR has a class table in each transformer branch and none in a ConvNeXt branch "
                "(tdln.label_stages: first, with the transformer branch first)",
            ),
        ]
    return next((why for ok, why in checks if not ok), None)


def _time_dependent(ours: str, sublayers: list[list[str]], size: int) -> list[Entry]:
    """DiMR ``TimeDependentParameter``s -> a TD-LN modulator's ``p``, ``w``, ``b``.

    ``sublayers[k]`` lists the official parameters of sub-layer k in TD-LN's vector order
    (the weight or scale, then the bias): ``p`` (K, 2V, C), ``w`` and ``b`` (K, V, C).
    """
    k, v = len(sublayers), len(sublayers[0])
    prefixes = [prefix for vectors in sublayers for prefix in vectors]

    def keys(*parts: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
        return tuple((f"{prefix}.{part}", (size,)) for prefix in prefixes for part in parts)

    return [
        entry(f"{ours}.p", keys("param0", "param1"), transform=Stacked((k, 2 * v, size))),
        entry(f"{ours}.w", keys("nodecay_weight"), transform=Offset(1.0, Stacked((k, v, size)))),
        entry(f"{ours}.b", keys("nodecay_bias"), transform=Stacked((k, v, size))),
    ]


def _layer_norm(norm: str) -> list[str]:
    """DiMR's time-dependent LayerNorm ``norm``: its weight, then its bias."""
    return [f"{norm}.weight", f"{norm}.bias"]


def _block_norm(spec, norm: str) -> list[str]:
    """A block's norm: TDRMSNorm (scale only) or the time-dependent LayerNorm."""
    return [f"{norm}.scale"] if spec.conditioning.block_norm == "rms" else _layer_norm(norm)


def _block(spec, s: int, i: int) -> list[Entry]:
    stage = spec.stages[s]
    d, hidden = stage.channels, int(stage.channels * stage.block.mlp_ratio)
    ours = theirs = f"stages.{s}.blocks.{i}"
    norms = [_block_norm(spec, f"{theirs}.block2.norm")]
    if stage.block.kind == "attention":
        norms.insert(0, _block_norm(spec, f"{theirs}.block1.norm"))
        mixer = [
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
    return _time_dependent(f"{ours}.modulator", norms, d) + mixer + [
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
    if _has_class_table(spec, s):
        module = "prefix_tokens" if _as_token(spec) else "label_input"
        items.append(entry(f"{pre}.{module}.embedding.weight", f"{pre}.class_embeds.weight", (spec.input.num_classes + 1, d)))
    if s > 0:
        coarse = spec.stages[s - 1]
        width, ratio = coarse.channels * (coarse.depth + 1), g // spec.grid(s - 1)
        rows = d * ratio * ratio
        items += _time_dependent(f"{pre}.connector.norm_in", [_layer_norm(f"{pre}.upsample.0")], width)
        items += [
            entry(f"{pre}.connector.proj.weight", f"{pre}.upsample.1.kernel.weight", (rows, width), ShuffledRows(ratio)),
            entry(f"{pre}.connector.proj.bias", f"{pre}.upsample.1.kernel.bias", (rows,), ShuffledRows(ratio)),
        ]
        items += _time_dependent(f"{pre}.connector.norm_out", [_layer_norm(f"{pre}.upsample.2")], d)
    for i in range(stage.depth):
        items += _block(spec, s, i)
    for j in range(stage.depth // 2):
        items += [
            entry(f"{pre}.skip_projections.{j}.weight", f"{pre}.skip_denses.{j}.weight", (d, 2 * d)),
            entry(f"{pre}.skip_projections.{j}.bias", f"{pre}.skip_denses.{j}.bias", (d,)),
        ]
    items += _time_dependent(f"{pre}.head.modulator", [_layer_norm(f"{pre}.output_layer.0")], d)
    c = spec.input.channels
    items += [
        entry(f"{pre}.head.proj.weight", f"{pre}.output_layer.2.weight", (c, d, 3, 3)),
        entry(f"{pre}.head.proj.bias", f"{pre}.output_layer.2.bias", (c,)),
    ]
    return items


def layout(spec) -> OfficialLayout:
    entries = [item for s in range(len(spec.stages)) for item in _stage(spec, s)]
    token_stages = [s for s in range(len(spec.stages)) if _has_class_table(spec, s)]
    notes = ()
    if token_stages and not _as_token(spec):
        branches = ", ".join(str(s + 1) for s in token_stages)
        notes = (CLASS_TOKEN.format(branches=branches),)
    return OfficialLayout(family=NAME, source=SOURCE, preset=spec.name, entries=tuple(entries), notes=notes)
