from __future__ import annotations

import json

import pytest
import torch

from dicesearch.data import FolderSpec, LatentsSpec, encode_folder, load_dataset, load_vae, read_latent_file
from dicesearch.errors import DataError


def test_encode_folder_writes_a_file_the_latents_dataset_reads(image_folder, vae_dir, tmp_path, no_network):
    folder = FolderSpec(kind="folder", path=image_folder, resolution=16)
    out = encode_folder(folder, vae_dir, tmp_path / "out" / "tiny.safetensors", batch_size=2, progress=False)
    assert out == tmp_path / "out" / "tiny.safetensors" and [p.name for p in out.parent.iterdir()] == ["tiny.safetensors"]
    dataset = load_dataset(LatentsSpec(kind="latents", path=out, vae=vae_dir))
    assert (len(dataset), dataset.channels, dataset.resolution, dataset.num_classes) == (5, 4, 8, 2)
    assert dataset.labels.tolist() == [0, 0, 1, 1, 1]
    assert dataset.metadata["vae"] == str(vae_dir.resolve()) and float(dataset.metadata["scaling_factor"]) == 0.18215
    assert json.loads(dataset.metadata["classes"]) == ["apple", "zebra"] and dataset.metadata["posterior"] == "sample"
    assert dataset.metadata["source_fingerprint"] == load_dataset(folder).fingerprint
    assert dataset.vae.path == vae_dir

    # The stored latents are exactly the seeded encoding of the centre crops.
    pixels = load_dataset(folder)
    images = torch.stack([pixels[i][0] for i in range(len(pixels))])  # (5, 3, 16, 16)
    vae = load_vae(vae_dir)
    expected = vae.encode(images, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(dataset.latents, expected, atol=1e-5, rtol=1e-5)
    decoded = vae.decode(dataset.latents)
    assert decoded.shape == (5, 3, 16, 16)


def test_encode_folder_npz_mean_float16(image_folder, vae_dir, tmp_path):
    folder = FolderSpec(kind="folder", path=image_folder, resolution=16)
    out = encode_folder(folder, vae_dir, tmp_path / "z.npz", posterior="mean", storage="float16", progress=False)
    file = read_latent_file(out)
    assert file.latents.dtype == torch.float16 and file.latents.shape == (5, 4, 8, 8)
    assert file.metadata["posterior"] == "mean"


def test_encode_folder_refuses_to_overwrite(image_folder, vae_dir, tmp_path, one_line_error):
    folder = FolderSpec(kind="folder", path=image_folder, resolution=16)
    out = tmp_path / "z.safetensors"
    out.write_bytes(b"precious")
    with pytest.raises(DataError) as excinfo:
        encode_folder(folder, vae_dir, out, progress=False)
    assert "already exists" in one_line_error(excinfo, out)
    assert out.read_bytes() == b"precious"
    encode_folder(folder, vae_dir, out, overwrite=True, progress=False)
    assert len(read_latent_file(out).labels) == 5


def test_encode_folder_user_errors(image_folder, vae_dir, tmp_path, one_line_error):
    folder = FolderSpec(kind="folder", path=image_folder, resolution=16)
    with pytest.raises(DataError) as excinfo:
        encode_folder(folder.model_copy(update={"resolution": 9}), vae_dir, tmp_path / "z.npz", progress=False)
    assert "not a multiple of the VAE's downsampling factor 2" in one_line_error(excinfo, "data.resolution 9")
    with pytest.raises(DataError) as excinfo:
        encode_folder(folder, vae_dir, tmp_path / "z.pt", progress=False)
    one_line_error(excinfo, tmp_path / "z.pt")
    with pytest.raises(DataError) as excinfo:
        encode_folder(folder, tmp_path / "no-vae", tmp_path / "z.npz", progress=False)
    one_line_error(excinfo, tmp_path / "no-vae")
    with pytest.raises(DataError) as excinfo:
        encode_folder(folder, vae_dir, tmp_path / "z.npz", device="cuda:99", progress=False)
    one_line_error(excinfo, "device 'cuda:99'")
    assert list(tmp_path.iterdir()) == []
