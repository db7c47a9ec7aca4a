"""The data layer: what a trial trains on, in a fixed, seeded order.

- ``sources``: ``DataSpec``, the ``data:`` section (``digits`` | ``folder`` | ``latents``).
- ``datasets``: the torch datasets and ``load_dataset(spec)``.
- ``batches``: ``fixed_batches``, the seeded, resumable training order (DICE Sec. 4.1).
- ``vae``: the local AutoencoderKL (images <-> scaled latents).
- ``encode``: ``encode_folder``, an image folder -> a latent file.
- ``latentfile``: the latent file format.

Importing this package does not import diffusers; ``vae`` does so only when loading.
"""

from dicesearch.data.batches import fixed_batches, step_plan
from dicesearch.data.datasets import DiffusionDataset, DigitsDataset, FolderDataset, LatentsDataset, load_dataset
from dicesearch.data.encode import encode_folder
from dicesearch.data.latentfile import LatentFile, read_latent_file, write_latent_file
from dicesearch.data.sources import DataSpec, DigitsSpec, FolderSpec, LatentsSpec, parse_data_spec
from dicesearch.data.vae import Vae, VaeInfo, inspect_vae, load_vae

__all__ = [
    "DataSpec",
    "DiffusionDataset",
    "DigitsDataset",
    "DigitsSpec",
    "FolderDataset",
    "FolderSpec",
    "LatentFile",
    "LatentsDataset",
    "LatentsSpec",
    "Vae",
    "VaeInfo",
    "encode_folder",
    "fixed_batches",
    "inspect_vae",
    "load_dataset",
    "load_vae",
    "parse_data_spec",
    "read_latent_file",
    "step_plan",
    "write_latent_file",
]
