"""Shared fixtures for the training tests: tiny specs, data and a tiny VAE."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dicesearch.data import DigitsSpec
from dicesearch.spec import parse_spec
from dicesearch.train import TrainConfig


@pytest.fixture(scope="package", autouse=True)
def _one_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread is ~10x faster than two
    when the other core is busy (threads spin waiting for each other)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def cascade_spec(registry, channels: int = 1, resolution: int = 16, learn_sigma: bool = True, num_classes: int = 10, width: int = 32):
    """A 2-stage DICE-style noise cascade: a 2x-coarser stage, then full resolution."""
    return parse_spec(
        {
            "name": "tiny-cascade",
            "input": {"channels": channels, "resolution": resolution, "num_classes": num_classes, "learn_sigma": learn_sigma},
            "cascade": {"kind": "noise"},
            "stages": [
                {"patch_size": 2, "channels": width, "depth": 1, "block": {"kind": "dice", "mlp_ratio": 2.0}},
                {"patch_size": 1, "channels": width // 2, "depth": 1, "block": {"kind": "dice", "mlp_ratio": 2.0}},
            ],
        },
        registry=registry,
    )


@pytest.fixture(scope="session")
def make_spec(registry):
    """``make_spec(**overrides)``: the tiny cascade with other input settings."""
    return lambda **overrides: cascade_spec(registry, **overrides)


@pytest.fixture(scope="session")
def spec(registry):
    return cascade_spec(registry)


@pytest.fixture(scope="session")
def other_spec(registry):
    """A different model (one attention stage, DiT-style head, no learned sigma) on the same data."""
    return parse_spec(
        {
            "name": "tiny-attention",
            "input": {"channels": 1, "resolution": 16, "num_classes": 10, "learn_sigma": False},
            "conditioning": {"kind": "tdln"},
            "stages": [{"patch_size": 4, "channels": 32, "depth": 1, "head": "linear", "block": {"kind": "attention", "heads": 2}}],
        },
        registry=registry,
    )


@pytest.fixture(scope="session")
def digits():
    return DigitsSpec(resolution=16)


@pytest.fixture
def config():
    """Fast settings: small batches, a learning rate that moves a tiny model in 20 steps."""
    return TrainConfig(steps=10, batch_size=8, lr=2e-3, checkpoint_every=5, log_every=5)


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    """root/{a,b}/*.png: 3 + 3 random 20x20 RGB images."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (root / cls).mkdir()
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8), "RGB").save(root / cls / f"{i}.png")
    return root


@pytest.fixture(scope="session")
def vae_dir(tmp_path_factory) -> Path:
    """A randomly initialised tiny AutoencoderKL (downsampling 2, 4 latent channels)."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    model = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=16,
    )
    path = tmp_path_factory.mktemp("vae") / "tiny-vae"
    model.save_pretrained(path)
    return path


@pytest.fixture
def one_line():
    """``one_line(stderr)``: the CLI's error output is exactly one line (no traceback); returns it."""
    return _one_line


def _one_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got:\n{text}"
    assert "Traceback" not in text
    return lines[0]
