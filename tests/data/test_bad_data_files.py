"""A bad data file is refused before anything is written, by `dicesearch sweep`, `train` and `encode`.

Runs read their data lazily (an image as a batch draws it, a VAE's weights when FID first
decodes), so before `dicesearch.data.verify` a truncated image failed every trial of a
sweep after its study and MLflow runs were written. Each class of bad file here: one line
naming the file and the fix, exit status 2, no traceback, nothing in the working folder
and nothing in the cache. What passed is cached by size and mtime: the second check
decodes nothing (shown with a file spoiled behind the cache's back), and a changed file is
checked again.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from dicesearch.cli import main
from dicesearch.data.sources import FolderSpec
from dicesearch.data.verify import verify_data
from dicesearch.errors import DataError

SPACE = """\
base:
  input: {{channels: 3, resolution: 16, num_classes: 2}}
  stages:
    - {{patch_size: 2, channels: 16, depth: 1, block: {{kind: dice, mlp_ratio: 2.0}}}}
    - {{patch_size: 1, channels: 16, depth: 1, block: {{kind: convnext, mlp_ratio: 2.0}}}}
data: {data}
parameters:
  stages[0].block.lambda_init: {{float: [0.1, 10.0], log: true}}
budget: {{train_steps: 4, batch_size: 4, fid_samples: 4, sampling_steps: 2, report_every: 2}}
trials: 1
"""


def _png_header(width: int, height: int) -> bytes:
    """A 60-byte PNG that declares ``width`` x ``height`` RGB pixels: a decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")


def _image_bytes(fmt: str, seed: int = 0) -> bytes:
    import io

    pixels = np.random.default_rng(seed).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, fmt)
    return out.getvalue()


def _image_folder(root: Path) -> Path:
    """``root/images/{a,b}/0..2.png``: six good 24x20 images."""
    folder = root / "images"
    for label in ("a", "b"):
        (folder / label).mkdir(parents=True)
        for i in range(3):
            (folder / label / f"{i}.png").write_bytes(_image_bytes("PNG", seed=i))
    return folder


# name -> (file name in class a, its bytes, what the one line says about it)
BAD_IMAGES = {
    "truncated-png": ("cut.png", lambda: _image_bytes("PNG")[:300], r"cannot be read \(OSError: image file is truncated"),
    "truncated-jpeg": ("cut.jpg", lambda: _image_bytes("JPEG")[:-200], r"cannot be read \(OSError: image file is truncated"),
    "empty": ("empty.png", lambda: b"", r"cannot be read \(the file is empty\)"),
    "not-an-image": ("notes.jpg", lambda: b"meeting notes, not a picture\n", r"cannot be read \(not an image: no format Pillow knows\)"),
    "bomb": ("bomb.png", lambda: _png_header(10_000, 10_000), r"declares 10000 x 10000 pixels, over the 89,478,485-pixel limit \(a decompression bomb"),
    "bomb-2x": ("bomb2.png", lambda: _png_header(20_000, 20_000), r"Image size \(400000000 pixels\) exceeds limit of 178956970 pixels"),
}


def _latents(root: Path, name: str = "latents.npz", latents=None) -> Path:
    path = root / name
    latents = np.zeros((8, 4, 4, 4), np.float32) if latents is None else latents
    np.savez(path, latents=latents, labels=np.arange(8) % 2)
    return path


def _vae(root: Path, weights: bytes) -> Path:
    vae = root / "vae"
    vae.mkdir()
    (vae / "config.json").write_text('{"_class_name": "AutoencoderKL", "latent_channels": 4, "block_out_channels": [8, 16]}')
    (vae / "diffusion_pytorch_model.safetensors").write_bytes(weights)
    return vae


def _safetensors_bytes() -> bytes:
    import torch
    from safetensors.torch import save

    return save({"encoder.weight": torch.zeros(64, 64)})


def _run(args: list[str], work: Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, args)
    return result.exit_code, result.output.strip()


def _assert_refused(code: int, output: str, expect: str, work: Path, before: set[str], cache: Path) -> None:
    assert code == 2, f"exit {code}: {output}"
    assert "Traceback" not in output
    lines = output.splitlines()
    assert len(lines) == 1, f"expected one line, got:\n{output}"
    assert re.search(expect, lines[0]), f"{lines[0]!r} does not match {expect!r}"
    assert re.search(r"; (replace|shrink|copy|write|re-encode) .+$", lines[0]), f"{lines[0]!r} names no fix"
    assert set(os.listdir(work)) == before, "a refused run left files behind"
    assert not cache.exists(), "a refused run wrote to the cache"


@pytest.fixture
def work(tmp_path, monkeypatch):
    folder = tmp_path / "work"
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.setenv("DICESEARCH_CACHE_DIR", str(tmp_path / "cache"))
    return folder


@pytest.mark.parametrize("command", ["sweep", "train", "encode"])
@pytest.mark.parametrize("case", list(BAD_IMAGES))
def test_a_bad_image_is_one_line_exit_2_and_nothing_written(case, command, work, tmp_path):
    folder = _image_folder(work)
    name, content, expect = BAD_IMAGES[case]
    (folder / "a" / name).write_bytes(content())
    if command == "sweep":
        (work / "space.yaml").write_text(SPACE.format(data="{kind: folder, path: images, resolution: 16}"))
        args, prefix = ["sweep", "space.yaml"], r"^error: space\.yaml:6: data\.path: image images/a/"
    elif command == "train":
        args, prefix = ["train", "DICE-digits", "--data-kind", "folder", "--data-path", "images", "--steps", "2"], rf"^error: image {re.escape(str(folder))}/a/"
    else:  # checked before the VAE is even looked at
        args, prefix = ["encode", "images", "--vae", "no-vae", "-o", "latents.safetensors"], r"^error: image images/a/"
    before = set(os.listdir(work))
    code, output = _run(args, work)
    _assert_refused(code, output, prefix + re.escape(name) + ": .*" + expect, work, before, tmp_path / "cache")


def _truncated_safetensors(root: Path) -> Path:
    path = root / "latents.safetensors"
    path.write_bytes(_safetensors_bytes()[:100])
    return path


# name -> (makes (latent file, VAE folder or None) in a folder, what the one line says)
LATENT_CASES = {
    # a latent file is read whole by every trial, but before the sweep started only its labels were counted
    "nan-latents": (lambda root: (_latents(root, latents=np.full((8, 4, 4, 4), np.nan, np.float32)), None), r"latents\.npz: `latents` contains NaN or inf"),
    "truncated-latents": (lambda root: (_truncated_safetensors(root), None), r"latents\.safetensors: not a readable safetensors file"),
    # a VAE whose weights FID loads lazily, in every trial
    "truncated-vae-weights": (
        lambda root: (_latents(root), _vae(root, _safetensors_bytes()[:-1000])),
        r"vae .*diffusion_pytorch_model\.safetensors: the weights file cannot be read",
    ),
}


@pytest.mark.parametrize("command", ["sweep", "train"])
@pytest.mark.parametrize("case", list(LATENT_CASES))
def test_a_bad_latent_file_or_vae_is_one_line_exit_2_and_nothing_written(case, command, work, tmp_path):
    make, expect = LATENT_CASES[case]
    latents, vae = make(work)
    if command == "sweep":
        data = f"{{kind: latents, path: {latents.name}" + (", vae: vae}" if vae else "}")
        (work / "space.yaml").write_text(SPACE.format(data=data).replace("channels: 3", "channels: 4").replace("resolution: 16", "resolution: 4"))
        args = ["sweep", "space.yaml"]
    else:
        args = ["train", "DICE-digits", "--data-kind", "latents", "--data-path", latents.name, "--steps", "2", *(["--vae", "vae"] if vae else [])]
    before = set(os.listdir(work))
    code, output = _run(args, work)
    _assert_refused(code, output, expect, work, before, tmp_path / "cache")


def test_what_passed_is_cached_by_size_and_mtime_and_a_changed_file_is_checked_again(tmp_path):
    folder = _image_folder(tmp_path)
    spec, cache = FolderSpec(kind="folder", path=folder, resolution=16), tmp_path / "cache"
    verify_data(spec, cache)
    (record,) = cache.iterdir()
    assert record.name.startswith("folder-") and str(folder) in record.read_text()

    # spoil an image behind the cache's back: the same size and modification time
    image = folder / "a" / "0.png"
    stat = image.stat()
    image.write_bytes(b"\0" * stat.st_size)
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    verify_data(spec, cache)  # trusted from the cache: not decoded again

    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))  # touched: checked again
    with pytest.raises(DataError, match=rf"^image {re.escape(str(image))}: cannot be read"):
        verify_data(spec, cache)
    image.write_bytes(_image_bytes("PNG"))
    verify_data(spec, cache)
    (folder / "b" / "new.png").write_bytes(b"")  # a new file is checked
    with pytest.raises(DataError, match="new.png: cannot be read \\(the file is empty\\)"):
        verify_data(spec, cache)


def test_a_good_folder_passes_and_the_dataset_reads_what_the_check_passed(tmp_path):
    from dicesearch.data import load_dataset

    folder = _image_folder(tmp_path)
    (folder / "a" / "photo.jpg").write_bytes(_image_bytes("JPEG"))
    spec = FolderSpec(kind="folder", path=folder, resolution=16)
    verify_data(spec, tmp_path / "cache")
    dataset = load_dataset(spec)
    assert [tuple(dataset[i][0].shape) for i in range(len(dataset))] == [(3, 16, 16)] * 7
