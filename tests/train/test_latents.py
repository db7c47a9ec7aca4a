"""The latent path end to end: image folder -> latent file -> training -> samples -> images."""

from __future__ import annotations

import torch

from dicesearch.data import FolderSpec, LatentsSpec, encode_folder, load_dataset
from dicesearch.train import SamplingConfig, TrainConfig, load_trained, sample_images, train


def test_encode_train_sample_decode(make_spec, image_folder, vae_dir, tmp_path):
    latents = encode_folder(FolderSpec(kind="folder", path=image_folder, resolution=16), vae_dir, tmp_path / "latents.safetensors", progress=False)
    data = LatentsSpec(kind="latents", path=latents, vae=vae_dir)
    assert load_dataset(data)[0][0].shape == (4, 8, 8)  # the tiny VAE halves the side
    spec = make_spec(channels=4, resolution=8, num_classes=2)

    result = train(spec, data, TrainConfig(steps=3, batch_size=4, checkpoint_every=3), tmp_path / "run")
    assert len(result.losses) == 3 and all(torch.isfinite(torch.tensor(result.losses)))

    trained = load_trained(tmp_path / "run")
    assert trained.step == 3 and trained.data_spec == data
    images = sample_images(trained.model, trained.spec, trained.data_spec, SamplingConfig(sampler="ddim", steps=3, num_samples=3))
    assert images.shape == (3, 3, 16, 16)  # decoded to pixels
    assert images.min() >= -1 and images.max() <= 1 and torch.isfinite(images).all()
