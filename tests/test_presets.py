"""Preset parameter counts against the papers (models built on the meta device: no memory)."""

import pytest
import torch

from dicesearch.analysis.flops import count_flops
from dicesearch.model import build_model
from dicesearch.spec import load_spec


def _meta_model(name):
    spec = load_spec(name)
    with torch.device("meta"):
        return spec, build_model(spec)


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


@pytest.mark.parametrize("name", ["DiT-S/2", "DiT-B/2", "DiT-L/2", "DiT-XL/2", "DiMR-XL/2R", "DICE"])
def test_readme_table_states_the_counts_the_code_builds(name):
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    _, model = _meta_model(name)
    count = sum(p.numel() for p in model.parameters())
    row = next((line for line in readme.splitlines() if line.startswith(f"| {name} ")), None)
    assert row is not None, f"README has no table row for {name}"
    assert f"{count:,}" in row, f"README row for {name} does not state {count:,}: {row}"
