"""The fast kernels (dicesearch.speed) against PyTorch's own, on every built-in block and both
conditioning methods: forward, loss, gradients, and a few real training steps.

Stated tolerances (fp32; measured values in brackets):

* forward output and loss: relative 1e-5 of the largest value (<= 4e-7);
* every parameter's gradient: relative 1e-4 of its largest entry (<= 2e-5);
* four AdamW steps of ``train``: each step's loss relative 1e-5 (<= 8e-8); every weight
  and EMA weight within 5 % of the largest move Adam can make, 0.05 * steps * lr (<= 1 %).

The patch embeddings (every stage's patchify) take the matmul kernel in every model, and
the 3x3 noise heads (16 channels to 1) the fold kernel; the depthwise kernels only dice,
convnext and linear_attention, and dice its merge's hand-written backward
(``ops.signal_merge``). With fast kernels the trainer's AdamW is the fused one.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dicesearch.data import DigitsSpec, load_dataset
from dicesearch.model import build_model
from dicesearch.registry import default_registry
from dicesearch.spec import parse_spec
from dicesearch.speed import DepthwiseConv2d, NarrowConv2d, PatchConv2d, fast_kernels
from dicesearch.testing import tiny_spec
from dicesearch.train import SamplingConfig, TrainConfig, train
from dicesearch.train.diffusion import NoiseSchedule, training_loss
from dicesearch.train.sampling import sample

_registry = default_registry()
CASES = [(block, conditioning) for block in sorted(_registry.blocks) for conditioning in sorted(_registry.conditionings)]
IDS = ["-".join(case) for case in CASES]

FORWARD_RTOL, GRAD_RTOL, LOSS_CURVE_RTOL, ADAM_MOVE_FRACTION = 1e-5, 1e-4, 1e-5, 0.05


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-30))


def _forward_loss_grads(model, spec, fast: bool):
    g = torch.Generator().manual_seed(1)
    side, channels = spec.input.resolution, spec.input.channels
    x0, noise = torch.randn(4, channels, side, side, generator=g), torch.randn(4, channels, side, side, generator=g)
    t, y = torch.randint(0, 1000, (4,), generator=g), torch.randint(0, spec.input.num_classes, (4,), generator=g)
    model.zero_grad(set_to_none=True)
    with fast_kernels(model, fast):
        terms = training_loss(model, NoiseSchedule(), x0, t, noise, y, spec.resolved_loss_weights(), spec.input.learn_sigma)
        terms.total.backward()
        with torch.no_grad():
            out = model(x0, t, y)  # (4, C_out, H, W)
    return out, terms.total.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize(("block", "conditioning"), CASES, ids=IDS)
@pytest.mark.parametrize(("layout", "resolution"), [("noise", 8), ("single", 16)], ids=["cascade-4-8", "single-16"])
def test_forward_loss_and_gradients_match(block, conditioning, layout, resolution):
    """Grids of 4x4 and 8x8 take the banded path, 16x16 the channel-repeat one."""
    spec = tiny_spec(block, conditioning, layout=layout, resolution=resolution, channels=16)
    torch.manual_seed(0)
    model = build_model(spec)
    with torch.no_grad():  # off the initial values (zero-initialised gates would hide the blocks)
        g = torch.Generator().manual_seed(2)
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    eager_out, eager_loss, eager_grads = _forward_loss_grads(model, spec, fast=False)
    out, loss, grads = _forward_loss_grads(model, spec, fast=True)
    assert grads.keys() == eager_grads.keys()
    assert _relative(out, eager_out) < FORWARD_RTOL
    assert _relative(loss, eager_loss) < FORWARD_RTOL
    worst = max(grads, key=lambda k: _relative(grads[k], eager_grads[k]))
    assert _relative(grads[worst], eager_grads[worst]) < GRAD_RTOL, worst


def _two_stage_digits_spec(block: str, conditioning: str):
    params = {"heads": 2} if block in ("attention", "linear_attention") else {}
    stage = {"channels": 16, "depth": 1, "block": {"kind": block, **params}}
    return parse_spec(
        {
            "name": f"fast-{block}-{conditioning}",
            "input": {"channels": 1, "resolution": 16, "num_classes": 10, "learn_sigma": True},
            "conditioning": {"kind": conditioning},
            "cascade": {"kind": "noise"},
            "stages": [{**stage, "patch_size": 2}, {**stage, "patch_size": 1}],
        },
        registry=_registry,
    )


@pytest.fixture(scope="module")
def digits():
    data = DigitsSpec(resolution=16)
    return data, load_dataset(data)


@pytest.mark.parametrize(("block", "conditioning"), CASES, ids=IDS)
def test_training_steps_match(block, conditioning, digits):
    data, dataset = digits
    spec = _two_stage_digits_spec(block, conditioning)
    config = TrainConfig(steps=4, batch_size=8, lr=2e-3)
    runs = {fast: train(spec, data, config.model_copy(update={"fast_kernels": fast}), dataset=dataset, device="cpu") for fast in (False, True)}
    fast, eager = runs[True], runs[False]
    assert len(fast.losses) == len(eager.losses) == config.steps
    for got, want in zip(fast.losses, eager.losses):
        assert abs(got - want) <= LOSS_CURVE_RTOL * abs(want)
    move = ADAM_MOVE_FRACTION * config.steps * config.lr
    for a, b in ((fast.model, eager.model), (fast.ema, eager.ema)):
        for (name, p), q in zip(a.named_parameters(), b.parameters()):
            assert float((p.detach() - q.detach()).abs().max()) <= move, name
    # the returned modules are plain again: the kernels were swapped for the run only
    assert not any(isinstance(m, (DepthwiseConv2d, NarrowConv2d, PatchConv2d)) for m in (*fast.model.modules(), *fast.ema.modules()))


def test_samples_match_and_the_model_is_restored():
    spec = _two_stage_digits_spec("dice", "adaln_zero")
    torch.manual_seed(0)
    model = build_model(spec)
    with torch.no_grad():
        g = torch.Generator().manual_seed(3)
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    config = SamplingConfig(sampler="ddim", steps=5, num_samples=6, batch_size=6)
    eager = sample(model, spec, config.model_copy(update={"fast_kernels": False}), clip_denoised=True)
    fast = sample(model, spec, config, clip_denoised=True)
    assert config.fast_kernels
    assert float((fast - eager).abs().max()) < 1e-4  # images in [-1, 1]
    assert not any(isinstance(m, (DepthwiseConv2d, NarrowConv2d, PatchConv2d)) for m in model.modules())


def test_only_eligible_convolutions_are_swapped_and_keys_stay():
    model = nn.Sequential(
        nn.Conv2d(4, 8, 7, padding=3, groups=4),  # DICE's pair: swapped
        nn.Conv2d(8, 8, 3, padding=1, groups=8),  # ConvNeXt-style: swapped
        nn.Conv2d(8, 8, 3, padding=1),  # dense: kept
        nn.Conv2d(8, 8, 3, padding=1, groups=8, stride=2),  # strided: kept
        nn.Conv2d(8, 8, 4, padding=2, groups=8),  # even kernel: kept
        nn.Conv2d(8, 16, 2, stride=2),  # a patch embedding: swapped
        nn.Conv2d(8, 16, 2, stride=2, padding=1),  # padded: kept
        nn.Conv2d(32, 1, 3, padding=1),  # a noise head (few outputs): swapped
        nn.Conv2d(32, 1, 3, padding=1, stride=2),  # strided: kept
    )
    keys = list(model.state_dict())
    with fast_kernels(model) as inside:
        kinds = [DepthwiseConv2d, DepthwiseConv2d, nn.Conv2d, nn.Conv2d, nn.Conv2d, PatchConv2d, nn.Conv2d, NarrowConv2d, nn.Conv2d]
        assert [type(m) for m in inside] == kinds
        assert list(model.state_dict()) == keys
        with fast_kernels(model):  # nested: the outer call owns the swap
            pass
        assert type(model[0]) is DepthwiseConv2d
        x = torch.randn(2, 4, 6, 6)
        with torch.no_grad():
            y = model[1](model[0](x))
    assert all(type(m) is nn.Conv2d for m in model)
    with torch.no_grad():
        assert _relative(y, model[1](model[0](x))) < FORWARD_RTOL
    with fast_kernels(model, enabled=False):
        assert all(type(m) is nn.Conv2d for m in model)
