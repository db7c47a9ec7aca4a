"""The layouts dicesearch maps against are the official models', key for key and shape for shape.

The official tables were recorded from facebookresearch/DiT, feizc/Diffusion-RWKV and
qihao067/DiMR (tests/checkpoints/official/); nothing here builds more than meta tensors.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
from official_tables import read_table, recorded_count, values

from dicesearch.checkpoints import layout_for
from dicesearch.errors import CheckpointError
from dicesearch.model import build_model
from dicesearch.spec import load_spec

# The official models' sizes (the counts issue 14 measured from the official code).
OFFICIAL = {
    "DiT-S/2": ("dit-s-2.txt", 32_963_360),
    "DiT-XL/2": ("dit-xl-2.txt", 675_129_632),
    "DRWKV-S/2": ("drwkv-s-2.txt", 39_323_552),
    "DRWKV-B/2": ("drwkv-b-2.txt", 74_793_632),
    "DRWKV-H/2": ("drwkv-h-2.txt", 780_313_632),
    "DiMR-XL/2R": ("dimr-xl-2r.txt", 505_046_408),
}


def _model_shapes(spec) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = build_model(spec)
    return {key: tuple(t.shape) for key, t in model.state_dict().items()}


@pytest.mark.parametrize("preset", list(OFFICIAL))
def test_the_recorded_tables_hold_the_official_counts(preset):
    name, count = OFFICIAL[preset]
    table = read_table(name)
    assert recorded_count(name) == (len(table), count)
    assert values(table) == count


@pytest.mark.parametrize("preset", list(OFFICIAL))
def test_each_layout_is_the_official_models_key_for_key(preset):
    table = read_table(OFFICIAL[preset][0])
    shapes = layout_for(load_spec(preset), preset).official_shapes()
    assert shapes == table


MAPPED = ["DiT-S/2", "DiT-B/2", "DiT-L/2", "DiT-XL/2", "DRWKV-S/2", "DRWKV-B/2", "DRWKV-H/2", "DiMR-XL/2R"]


@pytest.mark.parametrize("preset", MAPPED)
def test_every_official_tensor_has_a_counterpart_both_ways(preset):
    spec = load_spec(preset)
    layout = layout_for(spec, preset)
    layout.check_supported(preset)  # every official tensor has a place in the preset
    model = _model_shapes(spec)
    layout.check_model(model, preset)  # and every preset parameter an official source
    assert layout.ours_shapes() == model
    assert values(layout.official_shapes()) == sum(math.prod(s) for s in model.values())


@pytest.mark.parametrize("preset", [name for name in MAPPED if name in OFFICIAL])
def test_a_synthetic_official_state_dict_loads_strictly(preset):
    """The recorded table's tensors (on the meta device: shapes, no values) -> the preset, strict=True."""
    spec = load_spec(preset)
    layout = layout_for(spec, preset)
    state = {key: torch.empty(shape, device="meta") for key, shape in read_table(OFFICIAL[preset][0]).items()}
    layout.check_file(state, preset)
    with torch.device("meta"):
        model = build_model(spec)
    result = model.load_state_dict(layout.to_ours(state), strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys


def _drwkv_variant(registry, change):
    from dicesearch.spec import parse_spec, spec_to_dict

    data = spec_to_dict(load_spec("DRWKV-S/2"))
    change(data)
    return parse_spec(data, "variant.yaml", registry)


@pytest.mark.parametrize(
    ("change", "key", "setting"),
    [
        (lambda d: d["conditioning"].update(norm_affine=False), r"in_blocks\.0\.ln1\.weight", "conditioning.norm_affine: true"),
        (lambda d: d["stages"][0]["block"].update(stack_norms=False), r"in_blocks\.0\.ln0\.weight", "stack_norms: true"),
    ],
    ids=["no-norm-affine", "no-stack-norms"],
)
def test_a_drwkv_spec_without_the_official_norms_names_the_setting(registry, change, key, setting):
    spec = _drwkv_variant(registry, change)
    layout = layout_for(spec, "variant.yaml")
    with pytest.raises(CheckpointError, match=rf"key '{key}' \(384,\) has no counterpart in preset DRWKV-S/2: .*{setting}"):
        layout.check_supported("ckpt.pt")


def test_drwkv_norms_go_where_the_code_applies_them():
    layout = layout_for(load_spec("DRWKV-S/2"), "DRWKV-S/2")
    sources = {item.ours: [key for key, _ in item.official] for item in layout.entries}
    assert sources["stages.0.blocks.0.modulator.norm_weight"] == ["in_blocks.0.ln1.weight", "in_blocks.0.ln2.weight"]
    assert sources["stages.0.blocks.6.modulator.norm_bias"] == ["mid_block.ln1.bias", "mid_block.ln2.bias"]
    assert sources["stages.0.blocks.7.modulator.norm_weight"] == ["out_blocks.0.ln1.weight", "out_blocks.0.ln2.weight"]
    assert sources["stages.0.blocks.7.spatial.decay"] == ["out_blocks.0.att.spatial_decay"]
    assert sources["stages.0.skip_projections.0.weight"] == ["out_blocks.0.skip_linear.weight"]
    assert sources["stages.0.blocks.0.input_norm.weight"] == ["in_blocks.0.ln0.weight"]
    assert sources["stages.0.blocks.12.final_norm.bias"] == ["norm_f.bias"]
    assert layout.notes == ()


def test_dimr_maps_its_time_dependent_norms_and_class_token():
    layout = layout_for(load_spec("DiMR-XL/2R"), "DiMR-XL/2R")
    sources = {item.ours: [key for key, _ in item.official] for item in layout.entries}
    block1, block2 = "stages.0.blocks.5.block1.norm.scale", "stages.0.blocks.5.block2.norm.scale"
    assert sources["stages.0.blocks.5.modulator.p"] == [f"{block1}.param0", f"{block1}.param1", f"{block2}.param0", f"{block2}.param1"]
    assert sources["stages.0.blocks.5.modulator.w"] == [f"{block1}.nodecay_weight", f"{block2}.nodecay_weight"]
    assert sources["stages.1.blocks.3.modulator.b"] == ["stages.1.blocks.3.block2.norm.scale.nodecay_bias"]
    head = "stages.1.output_layer.0"
    assert sources["stages.1.head.modulator.p"] == [f"{head}.weight.param0", f"{head}.weight.param1", f"{head}.bias.param0", f"{head}.bias.param1"]
    assert sources["stages.1.connector.norm_in.w"] == ["stages.1.upsample.0.weight.nodecay_weight", "stages.1.upsample.0.bias.nodecay_weight"]
    assert sources["stages.1.connector.norm_out.b"] == ["stages.1.upsample.2.weight.nodecay_bias", "stages.1.upsample.2.bias.nodecay_bias"]
    assert sources["stages.0.prefix_tokens.embedding.weight"] == ["stages.0.class_embeds.weight"]
    assert layout.notes == ()  # the preset's class token is the official model's


def test_a_dimr_spec_that_adds_the_label_takes_the_same_table_and_says_what_differs(registry):
    from dicesearch.spec import parse_spec, spec_to_dict

    data = spec_to_dict(load_spec("DiMR-XL/2R"))
    data["conditioning"]["label_input"] = "add"
    layout = layout_for(parse_spec(data, "added.yaml", registry), "added.yaml")
    sources = {item.ours: [key for key, _ in item.official] for item in layout.entries}
    assert sources["stages.0.label_input.embedding.weight"] == ["stages.0.class_embeds.weight"]
    assert "stages.0.prefix_tokens.embedding.weight" not in sources
    (note,) = layout.notes
    assert note.startswith("outputs differ from the official DiMR model's") and "as an extra token" in note
    assert note.endswith("use tdln.label_input: token for the official model")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["conditioning"].update(per_channel=False), "DiMR's time-dependent parameters are per channel (tdln.per_channel: true)"),
        (lambda d: d["conditioning"].update(label_stages="all", label_input="add"), "stage 1: DiMR has a class table in each transformer branch and none in a ConvNeXt branch"),
        (lambda d: d["stages"][1]["block"].update(form="convnext"), "stage 1: DiMR's ConvNeXt block is the convnext block's form: dimr"),
        (lambda d: d["cascade"].update(connector_norm="plain"), "DiMR's upsampler norms are time-dependent (cascade.connector_norm: conditioned)"),
    ],
    ids=["scalar-tdln", "label-everywhere", "convnext-form", "plain-connector"],
)
def test_a_dimr_near_miss_names_what_differs(registry, change, message):
    from dicesearch.spec import parse_spec, spec_to_dict

    data = spec_to_dict(load_spec("DiMR-XL/2R"))
    change(data)
    spec = parse_spec(data, "variant.yaml", registry)
    with pytest.raises(CheckpointError, match="DiMR-XL/2R is not a DiMR model: " + re.escape(message)):
        layout_for(spec, "ckpt.pt")


@pytest.mark.parametrize(
    ("preset", "message"),
    [
        ("LiT-S/2", "LiT-S/2 has no official checkpoint layout"),
        ("DICE", "DICE has no official checkpoint layout"),
        ("DiffuSSM-XL", "has no official checkpoint layout"),
    ],
)
def test_presets_without_an_official_layout_are_refused_by_name(preset, message):
    with pytest.raises(CheckpointError, match=message):
        layout_for(load_spec(preset), "ckpt.pt")


def test_a_near_miss_names_what_differs(registry):
    from dicesearch.spec import parse_spec, spec_to_dict

    data = spec_to_dict(load_spec("DiT-S/2"))
    data["stages"][0]["position_embedding"] = "learned"
    spec = parse_spec(data, "learned.yaml", registry)
    with pytest.raises(CheckpointError, match="DiT-S/2 is not a DiT model: position_embedding is 'learned', DiT's is sincos"):
        layout_for(spec, "ckpt.pt")
    spec = _drwkv_variant(registry, lambda d: d["conditioning"].update(block_eps=None))
    with pytest.raises(CheckpointError, match="DRWKV-S/2 is not a Diffusion-RWKV model: adaln_zero.block_eps must be 1e-5"):
        layout_for(spec, "ckpt.pt")
