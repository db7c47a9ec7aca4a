"""A dataset seen as images: what FID's reference statistics are computed on."""

from __future__ import annotations

from dicesearch.errors import DataError


class ImageView:
    """Items ``(image in [-1, 1] (C, H, W), label)``; latents are decoded with the data's VAE."""

    def __init__(self, dataset, data_spec):
        self.dataset, self.vae = dataset, None
        if dataset.kind == "latents":
            if getattr(data_spec, "vae", None) is None:
                raise DataError(
                    f"data {data_spec.path}: FID on latents needs a VAE to decode them; "
                    "set data.vae to a local AutoencoderKL directory"
                )
            from dicesearch.data.vae import load_vae

            self.vae = load_vae(data_spec.vae)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        x, y = self.dataset[index]
        if self.vae is not None:
            x = self.vae.decode(x[None])[0]
        return x, y
