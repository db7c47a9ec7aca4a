from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from dicesearch.data import LatentsSpec, load_dataset, read_latent_file, write_latent_file
from dicesearch.errors import DataError


def _latents(n: int = 6, channels: int = 4, side: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(n, channels, side, side, generator=generator), torch.arange(n) % 3


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_round_trip(tmp_path, suffix, dtype):
    latents, labels = _latents()
    path = write_latent_file(tmp_path / f"z{suffix}", latents.to(dtype), labels, {"scaling_factor": 0.18215, "num_classes": 5})
    file = read_latent_file(path)
    assert file.latents.dtype == dtype and torch.equal(file.latents, latents.to(dtype))
    assert file.labels.dtype == torch.int64 and torch.equal(file.labels, labels)
    assert file.metadata == {"format": "dicesearch-latents/1", "scaling_factor": "0.18215", "num_classes": "5"}
    assert file.num_classes == 5
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind


def test_dataset_over_a_latent_file(tmp_path):
    latents, labels = _latents()
    path = write_latent_file(tmp_path / "z.safetensors", latents.half(), labels, {})
    dataset = load_dataset(LatentsSpec(kind="latents", path=path))
    assert (dataset.kind, dataset.channels, dataset.resolution, dataset.num_classes, len(dataset)) == ("latents", 4, 4, 3, 6)
    x, y = dataset[2]
    assert x.dtype == torch.float32 and x.shape == (4, 4, 4) and y.dtype == torch.int64 and int(y) == 2
    torch.testing.assert_close(x, latents[2].half().float())
    assert dataset.hflip is True and dataset.vae is None


def test_fingerprint_follows_the_data_not_the_metadata(tmp_path):
    latents, labels = _latents()
    a = load_dataset(LatentsSpec(kind="latents", path=write_latent_file(tmp_path / "a.npz", latents, labels, {"source": "x"})))
    b = load_dataset(LatentsSpec(kind="latents", path=write_latent_file(tmp_path / "b.safetensors", latents, labels, {})))
    c = load_dataset(LatentsSpec(kind="latents", path=write_latent_file(tmp_path / "c.npz", latents + 1, labels, {})))
    assert a.fingerprint == b.fingerprint and a.fingerprint.startswith("latents-4px-")
    assert c.fingerprint != a.fingerprint


def _save_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def _bad_files(tmp_path):
    latents, labels = _latents()
    yield "missing", tmp_path / "missing.safetensors", "no such file"
    yield "missing key", _save_npz(tmp_path / "nolabels.npz", latents=latents.numpy()), "missing 'labels'"
    path = tmp_path / "nolatents.safetensors"
    save_file({"labels": labels}, str(path))
    yield "missing key st", path, "missing 'latents'"
    yield "3-d", _save_npz(tmp_path / "flat.npz", latents=latents[:, 0].numpy(), labels=labels.numpy()), "expected (N, C, h, h)"
    yield "not square", _save_npz(tmp_path / "rect.npz", latents=latents[..., :2].numpy(), labels=labels.numpy()), "expected (N, C, h, h)"
    ints = _save_npz(tmp_path / "ints.npz", latents=latents.numpy().astype(np.int32), labels=labels.numpy())
    yield "int latents", ints, "expected float16/bfloat16/float32"
    yield "float labels", _save_npz(tmp_path / "fl.npz", latents=latents.numpy(), labels=labels.numpy() * 1.0), "expected (N,) integers"
    yield "count", _save_npz(tmp_path / "count.npz", latents=latents.numpy(), labels=labels.numpy()[:-1]), "6 latents but 5 labels"
    yield "empty", _save_npz(tmp_path / "empty.npz", latents=latents.numpy()[:0], labels=labels.numpy()[:0]), "holds no latents"
    negative = _save_npz(tmp_path / "neg.npz", latents=latents.numpy(), labels=labels.numpy() - 1)
    yield "negative", negative, "outside [0, 2)"
    meta = json.dumps({"num_classes": "2"})
    too_big = _save_npz(tmp_path / "big.npz", latents=latents.numpy(), labels=labels.numpy(), metadata=np.array(meta))
    yield "label >= num_classes", too_big, "outside [0, 2)"
    nan = latents.clone()
    nan[0, 0, 0, 0] = float("nan")
    yield "nan", _save_npz(tmp_path / "nan.npz", latents=nan.numpy(), labels=labels.numpy()), "NaN or inf"
    objects = tmp_path / "objects.npz"
    np.savez(objects, latents=np.array([object()], dtype=object), labels=labels.numpy())
    yield "pickled objects", objects, "not a readable .npz"
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 32)
    yield "garbage", garbage, "not a readable safetensors"
    garbage_npz = tmp_path / "garbage.npz"
    garbage_npz.write_bytes(b"PK nonsense")
    yield "garbage npz", garbage_npz, "not a readable .npz"
    other = tmp_path / "z.pt"
    other.write_bytes(b"")
    yield "suffix", other, "unsupported suffix"


def test_bad_latent_files_raise_one_line_naming_the_file(tmp_path, one_line_error):
    cases = list(_bad_files(tmp_path))
    assert len(cases) == 16
    for name, path, expected in cases:
        for load in (read_latent_file, lambda p: load_dataset(LatentsSpec(kind="latents", path=p))):
            with pytest.raises(DataError) as excinfo:
                load(path)
            assert expected in one_line_error(excinfo, path), name


def test_write_rejects_bfloat16_npz_and_unknown_suffix(tmp_path, one_line_error):
    latents, labels = _latents()
    with pytest.raises(DataError) as excinfo:
        write_latent_file(tmp_path / "z.npz", latents.bfloat16(), labels, {})
    one_line_error(excinfo, tmp_path / "z.npz")
    with pytest.raises(DataError) as excinfo:
        write_latent_file(tmp_path / "z.h5", latents, labels, {})
    one_line_error(excinfo, tmp_path / "z.h5")
    assert list(tmp_path.iterdir()) == []


def test_latents_dataset_checks_its_vae(vae_dir, vae_copy, tmp_path, one_line_error):
    latents, labels = _latents()
    out = write_latent_file(tmp_path / "z.npz", latents, labels, {"scaling_factor": "0.18215"})
    assert load_dataset(LatentsSpec(kind="latents", path=out, vae=vae_dir)).vae.path == vae_dir
    missing = tmp_path / "missing-vae"
    with pytest.raises(DataError) as excinfo:
        load_dataset(LatentsSpec(kind="latents", path=out, vae=missing))
    one_line_error(excinfo, missing)
    rescaled = vae_copy("rescaled")
    config = json.loads((rescaled / "config.json").read_text())
    (rescaled / "config.json").write_text(json.dumps({**config, "scaling_factor": 0.5}))
    with pytest.raises(DataError) as excinfo:
        load_dataset(LatentsSpec(kind="latents", path=out, vae=rescaled))
    assert "encoded with 0.18215" in one_line_error(excinfo, rescaled)
    wide = vae_copy("wide")
    (wide / "config.json").write_text(json.dumps({**config, "latent_channels": 16}))
    with pytest.raises(DataError) as excinfo:
        load_dataset(LatentsSpec(kind="latents", path=out, vae=wide))
    assert "16-channel" in one_line_error(excinfo, wide)
    shifted = vae_copy("shifted")
    (shifted / "config.json").write_text(json.dumps({**config, "shift_factor": 0.1}))
    with pytest.raises(DataError) as excinfo:
        load_dataset(LatentsSpec(kind="latents", path=write_latent_file(tmp_path / "s.npz", latents, labels, {"shift_factor": "0.0"}), vae=shifted))
    assert "shift_factor 0.1" in one_line_error(excinfo, shifted)
    garbled = write_latent_file(tmp_path / "g.npz", latents, labels, {"scaling_factor": "abc"})
    with pytest.raises(DataError) as excinfo:
        load_dataset(LatentsSpec(kind="latents", path=garbled, vae=vae_dir))
    assert "not a number" in one_line_error(excinfo, garbled)
