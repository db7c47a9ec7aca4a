from __future__ import annotations

import json
import shutil

import pytest
import torch

from dicesearch.data import inspect_vae, load_vae
from dicesearch.devices import resolve_device
from dicesearch.errors import DataError


@pytest.fixture(scope="module")
def vae(vae_dir):
    return load_vae(vae_dir)


def _images(n: int = 3, side: int = 16) -> torch.Tensor:
    return torch.rand(n, 3, side, side, generator=torch.Generator().manual_seed(1)) * 2 - 1


def test_loads_offline_with_the_config_constants(vae_dir, no_network):
    vae = load_vae(vae_dir)
    assert (vae.info.scaling_factor, vae.info.shift_factor, vae.info.downsample, vae.info.latent_channels) == (0.18215, 0.0, 2, 4)
    assert vae.device == torch.device("cpu") and vae.dtype == torch.float32 and not vae.model.training


def test_encode_mean_is_the_scaled_posterior_mean(vae):
    images = _images()
    latents = vae.encode(images, posterior="mean")
    assert latents.shape == (3, 4, 8, 8) and latents.dtype == torch.float32
    with torch.no_grad():
        mean = vae.model.encode(images).latent_dist.mean
    torch.testing.assert_close(latents, mean * 0.18215)


def test_encode_sample_is_seeded_and_independent_of_batch_size(vae):
    images = _images(5)
    first = vae.encode(images, generator=torch.Generator().manual_seed(7), batch_size=5)
    again = vae.encode(images, generator=torch.Generator().manual_seed(7), batch_size=2)
    other = vae.encode(images, generator=torch.Generator().manual_seed(8))
    torch.testing.assert_close(first, again, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(first, other)
    assert not torch.allclose(first, vae.encode(images, posterior="mean"))


def test_decode_returns_images_of_the_input_size(vae):
    images = _images()
    decoded = vae.decode(vae.encode(images), batch_size=2)
    assert decoded.shape == images.shape and decoded.dtype == torch.float32
    assert decoded.min() >= -1 and decoded.max() <= 1


def test_decode_undoes_the_scaling(vae):
    latents = vae.encode(_images(2), posterior="mean")
    with torch.no_grad():
        expected = vae.model.decode(latents / 0.18215).sample.clamp(-1, 1)
    torch.testing.assert_close(vae.decode(latents), expected)


@pytest.mark.parametrize("device", ["nodevice", "cuda:99", 3.5])
def test_bad_devices(device, one_line_error):
    with pytest.raises(DataError) as excinfo:
        resolve_device(device)
    one_line_error(excinfo, f"device {device!r}")


def test_bad_vae_directories(vae_dir, vae_copy, tmp_path, one_line_error):
    missing = tmp_path / "missing"
    no_config = vae_copy("no-config")
    (no_config / "config.json").unlink()
    bad_json = vae_copy("bad-json")
    (bad_json / "config.json").write_text("{not json")
    unet = vae_copy("unet")
    (unet / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    no_weights = vae_copy("no-weights")
    (no_weights / "diffusion_pytorch_model.safetensors").unlink()
    pipeline = tmp_path / "pipeline"
    shutil.copytree(vae_dir, pipeline / "vae")
    cases = [
        (missing, "no such directory"),
        (no_config, "no config.json"),
        (bad_json, "not valid JSON"),
        (unet, "not an AutoencoderKL"),
        (no_weights, "no weights"),
        (pipeline, f"give {pipeline / 'vae'} instead"),
    ]
    for path, expected in cases:
        for check in (inspect_vae, load_vae):
            with pytest.raises(DataError) as excinfo:
                check(path)
            assert expected in one_line_error(excinfo, path)


def test_corrupt_weights_fail_at_load(vae_copy, one_line_error, no_network):
    corrupt = vae_copy("corrupt")
    (corrupt / "diffusion_pytorch_model.safetensors").write_bytes(b"\x00" * 64)
    inspect_vae(corrupt)  # the cheap check only looks at the layout
    with pytest.raises(DataError) as excinfo:
        load_vae(corrupt)
    assert "diffusers cannot load it" in one_line_error(excinfo, corrupt)
