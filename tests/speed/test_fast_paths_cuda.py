"""The fast paths on CUDA (skipped without a GPU): the kernels defer to PyTorch's, the eager
Inception matches the TorchScript file on the device, a compiled fp16 step trains."""

from __future__ import annotations

import pytest
import torch

from dicesearch.ops.depthwise import depthwise_conv2d
from dicesearch.ops.patchify import patch_conv2d

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_kernels_are_pytorch_s_own_on_cuda():
    x = torch.randn(2, 4, 16, 16, device="cuda")
    weight, patch = torch.randn(8, 1, 7, 7, device="cuda"), torch.randn(6, 4, 2, 2, device="cuda")
    assert torch.equal(depthwise_conv2d(x, weight), torch.nn.functional.conv2d(x, weight, padding=3, groups=4))
    assert torch.equal(patch_conv2d(x, patch), torch.nn.functional.conv2d(x, patch, stride=2))


def test_eager_inception_on_cuda_matches_or_falls_back():
    from dicesearch.metrics import extract_features, load_inception

    network = load_inception(device="cuda")
    images = torch.rand(4, 1, 16, 16) * 2 - 1
    eager = extract_features(images, network, batch_size=4, fast=True, progress=False)
    scripted = extract_features(images, network, batch_size=4, fast=False, progress=False)
    assert abs(eager.pool - scripted.pool).max() <= 1e-3 * abs(scripted.pool).max()  # TF32 convolutions on both


@pytest.mark.slow
def test_a_compiled_fp16_step_trains_on_cuda():
    from dicesearch.data import DigitsSpec
    from dicesearch.spec import parse_spec
    from dicesearch.train import TrainConfig, train

    spec = parse_spec({
        "name": "cuda-compile", "input": {"channels": 1, "resolution": 8, "num_classes": 10},
        "stages": [{"patch_size": 2, "channels": 16, "depth": 1, "head": "linear", "block": {"kind": "dice"}}],
    })  # fmt: skip
    result = train(spec, DigitsSpec(resolution=8), TrainConfig(steps=3, batch_size=8, compile="always", precision="fp16"), device="cuda")
    assert len(result.losses) == 3 and all(torch.isfinite(torch.tensor(result.losses)))
