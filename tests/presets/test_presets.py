"""Preset parameter counts against the papers (models built on the meta device: no memory)."""

import pytest
import torch

from dicesearch.analysis.flops import count_flops
from dicesearch.model import build_model
from dicesearch.spec import load_spec, parse_spec, spec_to_dict


def _meta_model(name):
    spec = load_spec(name)
    with torch.device("meta"):
        return spec, build_model(spec)


def _count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _macs(spec, model) -> float:
    """Multiply-adds of one forward at batch 1, in G."""
    r, c = spec.input.resolution, spec.input.channels
    x, t = torch.randn(1, c, r, r, device="meta"), torch.zeros(1, device="meta")
    y = torch.zeros(1, dtype=torch.long, device="meta") if spec.input.num_classes else None
    return count_flops(lambda: model(x, t, y)).macs / 1e9


def _variant(spec, input_changes=None, stage_changes=None):
    """The spec with some input or (first) stage fields changed, built on the meta device."""
    data = spec_to_dict(spec)
    data["input"].update(input_changes or {})
    data["stages"][0].update(stage_changes or {})
    changed = parse_spec(data, f"{spec.name} variant")
    with torch.device("meta"):
        return changed, build_model(changed)


def test_dit_xl2_matches_the_official_parameter_count_exactly():
    _, model = _meta_model("DiT-XL/2")
    # facebookresearch/DiT counts the fixed sin-cos table, a frozen nn.Parameter
    assert sum(p.numel() for p in model.parameters()) == 675_129_632
    # DICE Tab. 2 reports DiT's trainable parameters
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 674_834_720


def test_dit_xl2_multiply_adds_match_the_papers():
    spec, model = _meta_model("DiT-XL/2")
    x = torch.randn(1, 4, 32, 32, device="meta")
    t = torch.zeros(1, device="meta")
    y = torch.zeros(1, dtype=torch.long, device="meta")
    macs = count_flops(lambda: model(x, t, y)).macs
    assert macs / 1e9 == pytest.approx(118.6, abs=0.5)  # DiT: 118.64 Gflops; DiMR Tab. 1: 119


def test_dimr_xl2r_matches_the_official_parameter_count_exactly():
    _, model = _meta_model("DiMR-XL/2R")
    assert _count(model) == 505_046_408  # qihao067/DiMR's MRModel with the XL-2R config
    # the upsampler: branch 1's input and its 39 block outputs, 40 x 960 channels, to 4 x 480
    proj = model.stages[1].connector.proj
    assert (proj.in_features, proj.out_features) == (38_400, 1_920)
    assert _count(proj) == 73_729_920
    # DiMR's class table (1000 classes + the null label) sits in branch 1 only, as its class token
    assert model.stages[0].prefix_tokens.embedding.weight.shape == (1001, 960)
    assert model.stages[0].label_input is None
    assert model.stages[1].label_input is None and model.stages[1].prefix_tokens is None


def test_dimr_xl2r_multiply_adds_are_the_papers_160_g_with_the_class_token():
    """DiMR Tab. 1, 4: 160 Gflops; branch 1 attends over 257 tokens (its 16x16 grid and the class token)."""
    spec, model = _meta_model("DiMR-XL/2R")
    assert _macs(spec, model) == pytest.approx(160.18, abs=0.01)
    assert _macs(spec, model) == pytest.approx(160, rel=0.002)


def test_dimr_xl2r_norms_are_the_official_codes():
    """TDRMSNorm in the blocks (4 x C each), time-dependent LayerNorms (8 x C) elsewhere."""
    _, model = _meta_model("DiMR-XL/2R")
    attention, convnext = model.stages[0].blocks[0], model.stages[1].blocks[0]
    assert _count(attention.modulator) == 2 * 4 * 960
    assert _count(convnext.modulator) == 4 * 480
    assert _count(model.stages[0].head.modulator) == 8 * 960
    connector = model.stages[1].connector
    assert (_count(connector.norm_in), _count(connector.norm_out)) == (8 * 38_400, 8 * 480)


DIT_NON_BLOCK_KEYS = [
    "conditioning.time_mlp.0.weight", "conditioning.time_mlp.0.bias", "conditioning.time_mlp.2.weight",
    "conditioning.time_mlp.2.bias", "conditioning.label_embedding.weight", "stages.0.position",
    "stages.0.patchify.weight", "stages.0.patchify.bias", "stages.0.head.modulator.regress.1.weight",
    "stages.0.head.modulator.regress.1.bias", "stages.0.head.proj.weight", "stages.0.head.proj.bias",
]
DIT_BLOCK_KEYS = [
    "modulator.regress.1.weight", "modulator.regress.1.bias", "attn.qkv.weight", "attn.qkv.bias",
    "attn.proj.weight", "attn.proj.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias",
]


@pytest.mark.parametrize("name, depth", [("DiT-S/2", 12), ("DiT-B/2", 12), ("DiT-L/2", 24), ("DiT-XL/2", 28)])
def test_dit_state_dict_keys_stay_as_the_checkpoint_mapping_expects(name, depth):
    _, model = _meta_model(name)
    blocks = [f"stages.0.blocks.{i}.{key}" for i in range(depth) for key in DIT_BLOCK_KEYS]
    assert sorted(model.state_dict()) == sorted(DIT_NON_BLOCK_KEYS + blocks)


def test_dice_preset_multiply_adds_match_the_papers_47_49_g():
    spec, model = _meta_model("DICE")
    x = torch.randn(1, 4, 32, 32, device="meta")
    macs = count_flops(lambda: model(x, torch.zeros(1, device="meta"), torch.zeros(1, dtype=torch.long, device="meta"))).macs
    assert macs / 1e9 == pytest.approx(47.49, rel=0.01)


# The attention-free presets: parameters as built (stated in docs/presets.md and each preset's header)
ATTENTION_FREE = {
    "DiffuSSM-XL": 673_091_144,
    "DRWKV-S/2": 39_323_552,  # feizc/Diffusion-RWKV's DiffRWKVModel, exactly
    "DRWKV-B/2": 74_793_632,
    "DRWKV-H/2": 780_313_632,
    "LiT-S/2": 33_023_264,
    "LiT-B/2": 130_592_288,
    "LiT-L/2": 458_262_560,
    "LiT-XL/2": 675_339_296,
}


@pytest.mark.parametrize("name", list(ATTENTION_FREE))
def test_attention_free_presets_build_with_the_counts_their_headers_state(name):
    from dicesearch.spec import preset_path

    _, model = _meta_model(name)
    assert _count(model) == ATTENTION_FREE[name]
    assert f"# As built: {ATTENTION_FREE[name]:,} parameters" in preset_path(name).read_text()


def test_diffussm_xl_has_the_papers_673m_parameters():
    assert ATTENTION_FREE["DiffuSSM-XL"] / 673e6 == pytest.approx(1, abs=0.001)  # "approximately 673M"


@pytest.mark.parametrize("name, paper_millions, paper_gflops", [("DRWKV-S/2", 38.9, 1.72), ("DRWKV-B/2", 74.3, 3.32), ("DRWKV-H/2", 779.1, 34.95)])
def test_drwkv_presets_reproduce_tab_1_without_the_label_table_and_at_patch_4(name, paper_millions, paper_gflops):
    spec = load_spec(name)
    _, unconditional = _variant(spec, input_changes={"num_classes": 0})
    # the released code's model without its class table: 38.94M, 74.41M, 779.29M (Tab. 1 rounds)
    assert _count(unconditional) / 1e6 == pytest.approx(paper_millions, rel=0.0015)
    patch_4, model = _variant(spec, stage_changes={"patch_size": 4})
    assert _macs(patch_4, model) == pytest.approx(paper_gflops, rel=0.005)


@pytest.mark.parametrize("size, depth, head_dim", [("S", 12, 192), ("B", 12, 256), ("L", 24, 256), ("XL", 28, 288)])
def test_lit_presets_are_dit_plus_one_shared_depthwise_conv_per_block(size, depth, head_dim):
    _, lit = _meta_model(f"LiT-{size}/2")
    _, dit = _meta_model(f"DiT-{size}/2")
    assert _count(lit) - _count(dit) == depth * (head_dim * 5 * 5 + head_dim)


DIGITS_PRESETS = ["DiT-digits", "DiMR-digits", "DiffuSSM-digits", "DRWKV-digits", "LiT-digits"]  # tests/presets/test_digits_presets.py


@pytest.mark.parametrize("name", ["DiT-S/2", "DiT-B/2", "DiT-L/2", "DiT-XL/2", "DiMR-XL/2R", "DICE", "DICE-digits", *ATTENTION_FREE, *DIGITS_PRESETS])
def test_presets_page_table_states_the_counts_the_code_builds(name):
    from pathlib import Path

    page = (Path(__file__).parents[2] / "docs" / "presets.md").read_text()
    _, model = _meta_model(name)
    count = sum(p.numel() for p in model.parameters())
    row = next((line for line in page.splitlines() if line.startswith(f"| {name} ")), None)
    assert row is not None, f"docs/presets.md has no table row for {name}"
    assert f"{count:,}" in row, f"docs/presets.md row for {name} does not state {count:,}: {row}"


def test_drwkv_norms_are_the_released_codes():
    """ln1/ln2 affines in every block, ln0 on the first block, norm_f after the last."""
    _, model = _meta_model("DRWKV-S/2")
    blocks = model.stages[0].blocks
    assert blocks[0].modulator.norm_weight.shape == (2, 384)
    assert blocks[0].input_norm is not None and all(b.input_norm is None for b in blocks[1:])
    assert blocks[-1].final_norm is not None and all(b.final_norm is None for b in blocks[:-1])
    assert model.stages[0].head.modulator.norm_weight is None  # the code's norm_final has no affine
    _, without = _variant(load_spec("DRWKV-S/2"), stage_changes={"block": {"kind": "rwkv"}})
    assert _count(model) - _count(without) == 4 * 384  # ln0 and norm_f


def test_dice_preset_is_within_0_2_percent_of_the_paper_with_plain_head_norms():
    spec, model = _meta_model("DICE")
    assert _count(model) == 178_775_449
    assert abs(_count(model) / 178_425_240 - 1) < 0.002
    data = spec_to_dict(spec)
    for stage in data["stages"]:
        stage["head_norm"] = "conditioned"
    conditioned = parse_spec(data, "DICE with adaLN heads")
    with torch.device("meta"):
        heads = build_model(conditioned)
    # each conditioned head regresses a shift and a scale from the 1152-wide embedding
    assert _count(heads) - _count(model) == sum((2 * 1152 + 2) * c for c in (3456, 2304, 1152)) == 15_939_072


@pytest.mark.parametrize("expansion, linear, everything", [(1.5, 256, 270), (1.75, 276, 290), (2.0, 296, 310)])
def test_diffussm_blocks_at_the_papers_lengths_cost_what_plugins_ssm_states(expansion, linear, everything):
    """29 blocks on J = 512 tokens (L = 1024 SSM positions): the linear maps alone, and all counted."""
    from dicesearch.plugin_api import BlockContext, ConditioningContext, StageGeometry
    from dicesearch.registry import default_registry

    registry, spec = default_registry(), load_spec("DiffuSSM-XL")
    params = spec.stages[0].block.model_copy(update={"expansion": expansion})
    with torch.device("meta"):
        conditioning = registry.conditioning("adaln_zero").build(spec.conditioning, ConditioningContext(1000, (1152,)))
        block = registry.block("ssm").build(params, BlockContext(StageGeometry(1152, 16, 32), conditioning, 0, 29))
        x, signal = torch.randn(1, 16, 32, 1152), conditioning(torch.zeros(1), torch.zeros(1, dtype=torch.long))
    count = count_flops(lambda: block(x, signal))
    linear_maps = sum(n for op, n in count.by_operator.items() if op in ("aten.addmm", "aten.baddbmm", "aten.mm"))
    assert round(29 * linear_maps / 2e9) == linear
    assert round(29 * count.macs / 1e9) == everything
