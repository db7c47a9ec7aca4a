"""Shared fixtures for the data-layer tests: a tiny image folder, a tiny VAE, error checks."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dicesearch.errors import DataError

# (class folder, file name, (width, height), mode): two classes created out of sorted order,
# varied sizes and modes, one image in a nested folder.
TINY_IMAGES = [
    ("zebra", "a.png", (40, 24), "RGB"),
    ("zebra", "b.jpg", (24, 40), "RGB"),
    ("zebra", "nested/c.png", (33, 17), "L"),
    ("apple", "d.png", (64, 64), "RGB"),
    ("apple", "e.PNG", (20, 50), "P"),
]


def _asymmetric_image(size: tuple[int, int], mode: str, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)  # (H, W, 3)
    return Image.fromarray(pixels, "RGB").convert(mode)


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``root/{apple,zebra}/...``: 2 apple images, 3 zebra images, plus files to be skipped."""
    root = tmp_path_factory.mktemp("images")
    for seed, (cls, name, size, mode) in enumerate(TINY_IMAGES):
        path = root / cls / name
        path.parent.mkdir(parents=True, exist_ok=True)
        _asymmetric_image(size, mode, seed).save(path)
    (root / "zebra" / "notes.txt").write_text("not an image")
    (root / "zebra" / ".hidden.png").write_bytes(b"")
    (root / ".cache").mkdir()
    (root / ".cache" / "x.png").write_bytes(b"")
    return root


@pytest.fixture(scope="session")
def vae_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised, tiny AutoencoderKL saved the way sd-vae-ft-ema is laid out."""
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
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test: loading must stay offline."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def vae_copy(vae_dir: Path, tmp_path: Path):
    """``vae_copy(name)``: a fresh copy of the tiny VAE folder under ``tmp_path``, to break."""

    def copy(name: str) -> Path:
        return Path(shutil.copytree(vae_dir, tmp_path / name))

    return copy


@pytest.fixture
def one_line_error():
    """``check(excinfo, path)``: the DataError is one line, names ``path`` and says what to do."""

    def check(excinfo: pytest.ExceptionInfo[DataError], path: object) -> str:
        message = str(excinfo.value)
        assert isinstance(excinfo.value, DataError)
        assert "\n" not in message and message.strip() == message
        assert str(path) in message, f"{path} not named in: {message}"
        assert ";" in message, f"no fix offered in: {message}"  # our messages are 'what; fix'
        return message

    return check
