"""Diffusion-RWKV and DiMR weights import strictly and land where the official code uses them.

The official formulas the norms are checked against (facts from feizc/Diffusion-RWKV
``models_drwkv.py`` and qihao067/DiMR ``libs/core/sigmoid``; no official code here):

- Diffusion-RWKV block: ``modulate(ln_i(x), shift_i, scale_i)`` with ``ln_i`` an
  ``nn.LayerNorm`` (affine, eps 1e-5) and ``shift, scale, gate`` the chunks of
  ``adaLN_modulation(c)`` in the order (shift_msa, scale_msa, gate_msa, shift_mlp, ...);
  ``ln0`` normalises the first block's input, ``norm_f`` the last block's output.
- DiMR time-dependent parameter: ``param1 + sigmoid(tau * (nodecay_weight + 1) +
  nodecay_bias) * (param0 - param1)`` with tau = log_snr / 4 and log_snr = 8 n / 1000 - 4
  for the code's timestep n = t + 1; ``TDRMSNorm``: x / (RMS(x) + 1e-8) * scale; the
  output LayerNorm: layer_norm(x, eps 1e-5) * weight + bias.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from official_tables import read_table, synthetic_state
from safetensors import safe_open

from dicesearch.checkpoints import import_checkpoint, layout_for
from dicesearch.checkpoints.transforms import ShuffledRows
from dicesearch.cli import main
from dicesearch.spec import dump_spec, load_spec, parse_spec
from dicesearch.train import load_trained

TINY_DRWKV = {
    "name": "tiny-drwkv",
    "input": {"channels": 4, "resolution": 8, "num_classes": 4, "learn_sigma": True},
    "conditioning": {"kind": "adaln_zero", "norm_affine": True, "block_eps": 1e-5},
    "init": {"scheme": "xavier_uniform", "zero_head": True},
    "stages": [{"patch_size": 2, "channels": 32, "depth": 3, "position_embedding": "learned", "head": "linear",
                "long_skip": True, "block": {"kind": "rwkv", "stack_norms": True}}],
}  # fmt: skip
TINY_DIMR = {
    "name": "tiny-dimr",
    "input": {"channels": 4, "resolution": 8, "num_classes": 4, "learn_sigma": False},
    "conditioning": {"kind": "tdln", "time_input": "dimr", "per_channel": True, "block_norm": "rms", "label_stages": "first", "eps": 1e-5},
    "cascade": {"kind": "features", "features_from": "all_blocks", "connector_norm": "conditioned"},
    "init": {"scheme": "trunc_normal", "std": 0.02},
    "stages": [
        {"patch_size": 2, "channels": 32, "depth": 3, "position_embedding": "learned", "long_skip": True, "head": "conv3x3",
         "block": {"kind": "attention", "heads": 2, "mlp_ratio": 2.0, "glu": True, "qkv_bias": False, "activation": "gelu"}},
        {"patch_size": 1, "channels": 16, "depth": 3, "position_embedding": "learned", "long_skip": True, "head": "conv3x3",
         "block": {"kind": "convnext", "kernel_size": 3, "mlp_ratio": 2.0, "glu": True, "activation": "gelu", "form": "dimr"}},
    ],
}  # fmt: skip


def _tensors(checkpoint) -> dict[str, torch.Tensor]:
    with safe_open(str(checkpoint), framework="pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}


@pytest.fixture(scope="module")
def imported(registry, tmp_path_factory):
    """family -> (spec, official state dict, imported model, run folder): random official-layout weights imported."""
    made = {}
    for data in (TINY_DRWKV, TINY_DIMR):
        spec = parse_spec(data, f"{data['name']}.yaml", registry)
        root = tmp_path_factory.mktemp(data["name"])
        (root / "spec.yaml").write_text(dump_spec(spec))
        state = synthetic_state(layout_for(spec, "").official_shapes(), seed=3)
        torch.save(state, root / "official.pt")
        import_checkpoint(spec, root / "official.pt", root / "run")
        made[data["name"]] = (spec, state, load_trained(root / "run").model, root)
    return made


def test_drwkv_block_norms_are_the_codes_ln1_ln2_ln0_and_norm_f(imported):
    spec, state, model, _ = imported["tiny-drwkv"]
    ours = model.state_dict()
    for ours_block, theirs in [(0, "in_blocks.0"), (1, "mid_block"), (2, "out_blocks.0")]:
        modulator = f"stages.0.blocks.{ours_block}.modulator"
        for part in ("weight", "bias"):
            assert torch.equal(ours[f"{modulator}.norm_{part}"][0], state[f"{theirs}.ln1.{part}"])
            assert torch.equal(ours[f"{modulator}.norm_{part}"][1], state[f"{theirs}.ln2.{part}"])
    assert torch.equal(ours["stages.0.blocks.0.input_norm.weight"], state["in_blocks.0.ln0.weight"])
    assert torch.equal(ours["stages.0.blocks.2.final_norm.bias"], state["norm_f.bias"])
    assert torch.equal(ours["stages.0.position"], state["pos_embed"].reshape(4, 4, 32))

    # what the code computes with them: ln0, then modulate(ln_i(x), shift_i, scale_i)
    block = model.stages[0].blocks[1]
    x = torch.randn(2, 4, 4, 32)
    signal = model.conditioning(torch.tensor([5.0, 700.0]), torch.tensor([1, 4]))
    chunks = F.linear(F.silu(signal.embedding), state["mid_block.adaLN_modulation.1.weight"], state["mid_block.adaLN_modulation.1.bias"]).chunk(6, dim=1)
    mod = block.modulator(signal)
    for i, ln in enumerate(("ln1", "ln2")):
        shift, scale = chunks[3 * i][:, None, None], chunks[3 * i + 1][:, None, None]
        expected = F.layer_norm(x, (32,), state[f"mid_block.{ln}.weight"], state[f"mid_block.{ln}.bias"], eps=1e-5) * (1 + scale) + shift
        torch.testing.assert_close(mod.norm(i, x), expected, rtol=0, atol=1e-6)
    first = model.stages[0].blocks[0]
    expected = F.layer_norm(x, (32,), state["in_blocks.0.ln0.weight"], state["in_blocks.0.ln0.bias"], eps=1e-5)
    torch.testing.assert_close(first.input_norm(x), expected, rtol=0, atol=1e-6)


def test_drwkv_import_is_exact_both_ways(imported, tmp_path):
    """Every tensor is copied or reshaped: the checkpoint gives back the file bit for bit, and imports again alike."""
    spec, state, model, root = imported["tiny-drwkv"]
    layout = layout_for(spec, "")
    back = layout.to_official(model.state_dict())
    assert back.keys() == state.keys() and all(torch.equal(back[k], state[k]) for k in state)
    torch.save(back, tmp_path / "again.pt")
    import_checkpoint(spec, tmp_path / "again.pt", tmp_path / "run")
    first, second = _tensors(root / "run/checkpoints/step-00000000.safetensors"), _tensors(tmp_path / "run/checkpoints/step-00000000.safetensors")
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_the_drwkv_s2_preset_imports_an_official_layout_state_dict(tmp_path):
    """The recorded table with values, through the importer (strict load); B/2 and H/2 on the meta device in test_checkpoint_layouts."""
    state = synthetic_state(read_table("drwkv-s-2.txt"))
    torch.save(state, tmp_path / "DRWKV-S-2.pt")
    result = import_checkpoint(load_spec("DRWKV-S/2"), tmp_path / "DRWKV-S-2.pt", tmp_path / "run")
    assert (result.family, result.tensors, result.values, result.notes) == ("Diffusion-RWKV", 288, 39_323_552, ())
    saved = _tensors(result.checkpoint)
    assert torch.equal(saved["ema.stages.0.blocks.12.final_norm.weight"], state["norm_f.weight"])


def _time_dependent(state, key, t):
    """DiMR's TimeDependentParameter ``key`` at timesteps t: (B, C)."""
    tau = (8 * (t.double() + 1) / 1000 - 4) / 4
    p0, p1, nw, nb = (state[f"{key}.{part}"].double() for part in ("param0", "param1", "nodecay_weight", "nodecay_bias"))
    return p1 + torch.sigmoid(tau[:, None] * (nw + 1) + nb) * (p0 - p1)


def test_dimr_time_dependent_norms_compute_what_the_code_computes(imported):
    spec, state, model, _ = imported["tiny-dimr"]
    t = torch.tensor([0.0, 999.0])
    signal = model.conditioning(t, torch.tensor([2, 4]))
    x = torch.randn(2, 4, 4, 32)
    block = model.stages[0].blocks[2].modulator(signal)
    for i, norm in enumerate(("block1", "block2")):  # TDRMSNorm: x / (RMS(x) + 1e-8) * scale(t)
        scale = _time_dependent(state, f"stages.0.blocks.2.{norm}.norm.scale", t)[:, None, None].float()
        expected = x / (x.square().mean(-1, keepdim=True).sqrt() + 1e-8) * scale
        torch.testing.assert_close(block.norm(i, x), expected, rtol=0, atol=2e-6)
    fine = torch.randn(2, 8, 8, 16)
    convnext = model.stages[1].blocks[0].modulator(signal)  # ConvNeXt: only block2 has a norm
    scale = _time_dependent(state, "stages.1.blocks.0.block2.norm.scale", t)[:, None, None].float()
    torch.testing.assert_close(convnext.norm(0, fine), fine / (fine.square().mean(-1, keepdim=True).sqrt() + 1e-8) * scale, rtol=0, atol=2e-6)
    for norm, ours, inputs in [("output_layer.0", model.stages[1].head.modulator, fine), ("upsample.2", model.stages[1].connector.norm_out, fine)]:
        weight, bias = (_time_dependent(state, f"stages.1.{norm}.{part}", t)[:, None, None].float() for part in ("weight", "bias"))
        expected = F.layer_norm(inputs, (16,), eps=1e-5) * weight + bias
        torch.testing.assert_close(ours(signal).norm(0, inputs), expected, rtol=0, atol=2e-6)


def test_dimr_tensors_land_in_place_and_go_back_up_to_the_weights_offset(imported):
    spec, state, model, _ = imported["tiny-dimr"]
    ours = model.state_dict()
    assert torch.equal(ours["stages.0.label_input.embedding.weight"], state["stages.0.class_embeds.weight"])
    assert torch.equal(ours["stages.0.blocks.1.mlp.fc1.weight"], torch.cat([state["stages.0.blocks.1.block2.w0.weight"], state["stages.0.blocks.1.block2.w1.weight"]]))
    assert torch.equal(ours["stages.1.connector.proj.weight"], ShuffledRows(2).to_ours([state["stages.1.upsample.1.kernel.weight"]]))
    key = "stages.0.blocks.1.block1.norm.scale"
    assert torch.equal(ours["stages.0.blocks.1.modulator.p"][0], torch.stack([state[f"{key}.param0"], state[f"{key}.param1"]]))
    assert torch.equal(ours["stages.0.blocks.1.modulator.w"][0, 0], state[f"{key}.nodecay_weight"] + 1)  # the sum the code's forward takes
    assert torch.equal(ours["stages.0.blocks.1.modulator.b"][0, 0], state[f"{key}.nodecay_bias"])
    back = layout_for(spec, "").to_official(ours)
    assert back.keys() == state.keys()
    for key in state:
        if key.endswith("nodecay_weight"):  # (w + 1) - 1: within half an ulp of 1
            assert (back[key] - state[key]).abs().max() <= 2.0**-24, key
        else:
            assert torch.equal(back[key], state[key]), key


def test_a_dimr_import_says_its_outputs_differ_and_why(imported, tmp_path):
    _, _, _, root = imported["tiny-dimr"]
    result = CliRunner().invoke(main, ["import-checkpoint", str(root / "spec.yaml"), str(root / "official.pt"), "-o", str(tmp_path / "run")], terminal_width=400)
    assert result.exit_code == 0, result.output
    note = next(line for line in result.output.splitlines() if line.strip().startswith("note:"))
    assert "outputs differ from the official DiMR model's" in note and "as an extra token" in note and "every position" in note
    with safe_open(str(tmp_path / "run/checkpoints/step-00000000.safetensors"), framework="pt") as handle:
        assert handle.metadata()["import_notes"].startswith("outputs differ from the official DiMR model's")
