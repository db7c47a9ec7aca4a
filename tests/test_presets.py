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


def test_dimr_xl2r_lands_near_the_papers_505m():
    _, model = _meta_model("DiMR-XL/2R")
    count = sum(p.numel() for p in model.parameters())
    assert abs(count - 505e6) / 505e6 < 0.01


def test_dice_preset_multiply_adds_match_the_papers_47_49_g():
    spec, model = _meta_model("DICE")
    x = torch.randn(1, 4, 32, 32, device="meta")
    macs = count_flops(lambda: model(x, torch.zeros(1, device="meta"), torch.zeros(1, dtype=torch.long, device="meta"))).macs
    assert macs / 1e9 == pytest.approx(47.49, rel=0.01)


# The attention-free presets: parameters as built (stated in README.md and each preset's header)
ATTENTION_FREE = {
    "DiffuSSM-XL": 673_091_144,
    "DRWKV-S/2": 39_302_048,
    "DRWKV-B/2": 74_753_696,
    "DRWKV-H/2": 780_157_984,
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
    assert _count(unconditional) / 1e6 == pytest.approx(paper_millions, rel=0.001)
    patch_4, model = _variant(spec, stage_changes={"patch_size": 4})
    assert _macs(patch_4, model) == pytest.approx(paper_gflops, rel=0.005)


@pytest.mark.parametrize("size, depth, head_dim", [("S", 12, 192), ("B", 12, 256), ("L", 24, 256), ("XL", 28, 288)])
def test_lit_presets_are_dit_plus_one_shared_depthwise_conv_per_block(size, depth, head_dim):
    _, lit = _meta_model(f"LiT-{size}/2")
    _, dit = _meta_model(f"DiT-{size}/2")
    assert _count(lit) - _count(dit) == depth * (head_dim * 5 * 5 + head_dim)


@pytest.mark.parametrize("name", ["DiT-S/2", "DiT-B/2", "DiT-L/2", "DiT-XL/2", "DiMR-XL/2R", "DICE", "DICE-digits", *ATTENTION_FREE])
def test_readme_table_states_the_counts_the_code_builds(name):
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    _, model = _meta_model(name)
    count = sum(p.numel() for p in model.parameters())
    row = next((line for line in readme.splitlines() if line.startswith(f"| {name} ")), None)
    assert row is not None, f"README has no table row for {name}"
    assert f"{count:,}" in row, f"README row for {name} does not state {count:,}: {row}"
