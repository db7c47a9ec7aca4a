"""The six families at digits scale (``*-digits`` presets): counts as stated, comparable cost, they train.

Each preset's header states its parameters and multiply-adds ("As built: ..."); here they
are counted from the built model, compared with DICE-digits' multiply-adds (within
±25 %: ``dicesearch compare`` sets the families side by side at equal cost), and a few
real training steps on the embedded digits must give a finite loss and a finite, non-zero
gradient for every trainable parameter.
"""

from __future__ import annotations

import re

import pytest
import torch

from dicesearch.analysis.flops import count_flops
from dicesearch.checkpoints import layout_for
from dicesearch.data import DigitsSpec, load_dataset
from dicesearch.model import build_model
from dicesearch.spec import load_spec, preset_path
from dicesearch.train.diffusion import NoiseSchedule, training_loss

DIGITS = ["DICE-digits", "DiT-digits", "DiMR-digits", "DiffuSSM-digits", "DRWKV-digits", "LiT-digits"]
FAMILY_BLOCKS = {  # the blocks (per stage) and conditioning of each family, as its paper has them
    "DICE-digits": (["dice", "dice"], "adaln_zero", "noise"),
    "DiT-digits": (["attention"], "adaln_zero", None),
    "DiMR-digits": (["attention", "convnext"], "tdln", "features"),
    "DiffuSSM-digits": (["ssm"], "adaln_zero", None),
    "DRWKV-digits": (["rwkv"], "adaln_zero", None),
    "LiT-digits": (["linear_attention"], "adaln_zero", None),
}


def _counts(spec) -> tuple[int, int, float]:
    """(parameters, trainable, multiply-adds per forward at batch 1)."""
    with torch.device("meta"):
        model = build_model(spec)
    side, channels = spec.input.resolution, spec.input.channels
    x, t = torch.zeros(1, channels, side, side, device="meta"), torch.zeros(1, device="meta")
    y = torch.zeros(1, dtype=torch.long, device="meta")
    macs = count_flops(lambda: model(x, t, y)).macs
    return sum(p.numel() for p in model.parameters()), sum(p.numel() for p in model.parameters() if p.requires_grad), macs


@pytest.mark.parametrize("name", DIGITS[1:])
def test_a_digits_preset_states_what_it_builds_and_costs_what_dice_digits_does(name):
    spec = load_spec(name)
    assert (spec.input.channels, spec.input.resolution, spec.input.num_classes) == (1, 16, 10)
    blocks, conditioning, cascade = FAMILY_BLOCKS[name]
    assert [stage.block.kind for stage in spec.stages] == blocks and spec.conditioning.kind == conditioning
    assert (spec.cascade.kind if len(spec.stages) > 1 else None) == cascade
    params, trainable, macs = _counts(spec)
    header = preset_path(name).read_text()
    stated = re.search(r"# As built: ([\d,]+) parameters(?: \(([\d,]+) trainable)?", header)
    assert stated is not None, f"{name}'s header does not state 'As built: N parameters'"
    assert int(stated.group(1).replace(",", "")) == params
    assert int((stated.group(2) or stated.group(1)).replace(",", "")) == trainable
    assert f"{macs / 1e9:.3g} G multiply-adds per forward at batch 1" in header.replace("\n# ", " ")
    dice_macs = _counts(load_spec("DICE-digits"))[2]
    assert 0.75 <= macs / dice_macs <= 1.25, f"{name}: {macs / dice_macs:.2f} x DICE-digits' multiply-adds"
    assert f"x {macs / dice_macs:.2f}" in header


@pytest.mark.parametrize("name", ["DiT-digits", "DiMR-digits", "DRWKV-digits"])
def test_digits_presets_of_released_families_have_the_official_models_design(name):
    """The official-layout checks pass (every norm, skip and table as the released code's), nothing noted."""
    layout = layout_for(load_spec(name), name)
    assert layout.notes == ()
    if name == "DiMR-digits":
        assert load_spec(name).conditioning.label_input == "token"  # DiMR's class token


@pytest.fixture(scope="module")
def digits():
    dataset = load_dataset(DigitsSpec(resolution=16))
    images = torch.stack([dataset[i][0] for i in range(16)])  # (16, 1, 16, 16)
    labels = torch.tensor([int(dataset[i][1]) for i in range(16)])
    labels[::5] = 10  # the null label, as classifier-free guidance's dropout gives it
    return images, labels


@pytest.mark.parametrize("name", DIGITS)
def test_a_few_training_steps_give_a_finite_loss_and_a_gradient_for_every_parameter(name, digits):
    spec = load_spec(name)
    torch.manual_seed(0)
    model = build_model(spec)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW(trainable.values(), lr=4e-3)
    schedule, weights = NoiseSchedule(), spec.resolved_loss_weights()
    images, labels = digits
    g = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(4):  # the zero-initialised gates and heads open after the first steps
        t = torch.randint(0, 1000, (len(images),), generator=g)
        noise = torch.randn(images.shape, generator=g)
        optimizer.zero_grad()
        loss = training_loss(model, schedule, images, t, noise, labels, weights, spec.input.learn_sigma).total
        loss.backward()
        losses.append(loss.item())
        optimizer.step()
    assert all(torch.isfinite(torch.tensor(losses)))
    missing = [n for n, p in trainable.items() if p.grad is None or not torch.isfinite(p.grad).all() or not p.grad.abs().sum() > 0]
    assert not missing, f"{name}: no finite, non-zero gradient for {missing}"
