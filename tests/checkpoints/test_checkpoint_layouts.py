"""The layouts dicesearch maps against are the official models', key for key and shape for shape.

The official tables were recorded from facebookresearch/DiT, feizc/Diffusion-RWKV and
qihao067/DiMR (tests/checkpoints/official/); nothing here builds more than meta tensors.
"""

from __future__ import annotations

import math

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


@pytest.mark.parametrize("preset", ["DiT-S/2", "DiT-B/2", "DiT-L/2", "DiT-XL/2"])
def test_every_dit_tensor_has_a_counterpart_both_ways(preset):
    spec = load_spec(preset)
    layout = layout_for(spec, preset)
    layout.check_supported(preset)
    model = _model_shapes(spec)
    layout.check_model(model, preset)
    assert layout.ours_shapes() == model
    assert values(layout.official_shapes()) == sum(math.prod(s) for s in model.values())


@pytest.mark.parametrize("preset", ["DRWKV-S/2", "DRWKV-B/2", "DRWKV-H/2"])
def test_drwkv_lacks_exactly_the_norm_affines_and_says_so(preset):
    spec = load_spec(preset)
    layout = layout_for(spec, preset)
    model = _model_shapes(spec)
    layout.check_model(model, preset)  # every preset parameter has its official source
    absent = {key: shape for item in layout.entries if item.ours is None for key, shape in item.official}
    assert {key.rsplit(".", 2)[-2] for key in absent} == {"ln0", "ln1", "ln2", "norm_f"}
    official = values(read_table(OFFICIAL[preset][0]))
    assert values(absent) == official - sum(math.prod(s) for s in model.values())  # the whole gap, nothing else
    with pytest.raises(CheckpointError, match=r"key 'in_blocks\.0\.ln1\.weight' \(\d+,\) has no counterpart in preset DRWKV-"):
        layout.check_supported("ckpt.pt")


def test_dimr_maps_every_linear_and_conv_and_names_what_the_preset_lacks():
    spec = load_spec("DiMR-XL/2R")
    layout = layout_for(spec, "DiMR-XL/2R")
    model = _model_shapes(spec)
    mapped = [item for item in layout.entries if item.ours is not None]
    absent = {key for item in layout.entries if item.ours is None for key, _ in item.official}
    # what is mapped has the same values on both sides, shape for shape
    assert sum(math.prod(s) for item in mapped for s in item.official_shapes) == sum(math.prod(model[item.ours]) for item in mapped)
    assert all(tuple(model[item.ours]) == item.ours_shape for item in mapped)
    # the official tensors without a counterpart: the time-dependent norms and the class token
    kinds = {key.split(".")[2] if "class_embeds" in key else key.rsplit(".", 1)[-1] for key in absent}
    assert kinds == {"class_embeds", "param0", "param1", "nodecay_weight", "nodecay_bias"}
    with pytest.raises(CheckpointError, match=r"key 'stages\.0\.class_embeds\.weight' \(1001, 960\) has no counterpart .*token"):
        layout.check_supported("nnet_ema.pth")
    unmapped = set(model) - {item.ours for item in mapped}
    assert {key.split(".")[2] for key in unmapped} == {"label_input", "blocks", "connector", "head"}
    assert all(key.split(".")[-1] in ("p", "w", "b", "weight", "bias") for key in unmapped)
    with pytest.raises(CheckpointError, match=r"parameter 'stages\.0\.label_input\.embedding\.weight' \(1001, 960\) has no counterpart"):
        layout.check_model(model, "nnet_ema.pth")


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
