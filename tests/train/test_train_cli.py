"""`dicesearch train`, `sample` and `encode`, run in-process; bad input is one line, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from dicesearch.cli import main
from dicesearch.data import write_latent_file
from dicesearch.spec import dump_spec, load_spec
from dicesearch.train import list_checkpoints


def _invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], terminal_width=200)


@pytest.fixture
def spec_file(spec, tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(dump_spec(spec))
    return path


@pytest.fixture
def fast_config(tmp_path) -> Path:
    path = tmp_path / "train.yaml"
    path.write_text("batch_size: 4\ncheckpoint_every: 2\nlog_every: 1\nlr: 0.001\n")
    return path


def test_train_writes_checkpoints_resolved_spec_and_log_then_resumes(spec, spec_file, fast_config, tmp_path):
    out = tmp_path / "run"
    result = _invoke("train", spec_file, "--config", fast_config, "--steps", 3, "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    assert f"run folder: {out}" in result.output and "sample with: dicesearch sample" in result.output
    assert [step for step, _ in list_checkpoints(out / "checkpoints")] == [2, 3]
    assert load_spec(out / "spec.yaml") == spec
    assert len((out / "log.jsonl").read_text().splitlines()) == 3

    resumed = _invoke("train", "--resume", "--out", out, "--steps", 4, "--quiet")  # spec, data, config from the folder
    assert resumed.exit_code == 0, resumed.output
    assert "to step 4" in resumed.output
    assert [step for step, _ in list_checkpoints(out / "checkpoints")][-1] == 4


def test_sample_writes_a_png_grid(spec_file, fast_config, tmp_path):
    out = tmp_path / "run"
    assert _invoke("train", spec_file, "--config", fast_config, "--steps", 2, "--out", out, "--quiet").exit_code == 0
    grid = tmp_path / "grid.png"
    result = _invoke("sample", out, "--n", 6, "--sampler", "ddim", "--steps", 3, "--cfg", 2.0, "-o", grid, "--quiet")
    assert result.exit_code == 0, result.output
    assert f"wrote {grid}: 6 samples of tiny-cascade at step 2" in result.output
    with Image.open(grid) as image:
        assert image.mode == "L" and image.size == (3 * 18 + 2, 2 * 18 + 2)


def test_encode_writes_a_latent_file(image_folder, vae_dir, tmp_path):
    out = tmp_path / "latents.safetensors"
    result = _invoke("encode", image_folder, "--vae", vae_dir, "-o", out, "--resolution", 16, "--quiet")
    assert result.exit_code == 0, result.output
    assert out.is_file() and f"wrote {out}" in result.output


@pytest.fixture
def bad_latents(tmp_path) -> Path:
    path = tmp_path / "wrong.safetensors"
    write_latent_file(path, torch.zeros(4, 4, 8, 8), torch.zeros(4, dtype=torch.int64), {})
    return path


@pytest.fixture
def empty_folder(tmp_path) -> Path:
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    return tmp_path / "empty"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--data-kind", "folder", "--data-path", "{tmp}/nope"), "image folder {tmp}/nope: no such directory"),
        (("--data-kind", "folder", "--data-path", "{empty}"), "no images"),
        (("--data-kind", "latents", "--data-path", "{bad}"), "latents are 4x8x8 but the spec 'tiny-cascade' takes 1x16x16"),
        (("--data-kind", "latents", "--data-path", "{bad}", "--vae", "{tmp}/novae"), "vae {tmp}/novae: no such directory"),
        (("--config", "{tmp}/bad.yaml"), "bad.yaml:1: lr: Input should be greater than 0"),
        (("--data", "{tmp}/nodata.yaml"), "data file {tmp}/nodata.yaml: cannot read it"),
    ],
)
def test_bad_training_input_is_one_line_and_exit_2(one_line, spec_file, bad_latents, empty_folder, tmp_path, args, message):
    (tmp_path / "bad.yaml").write_text("lr: -1\n")
    fill = {"tmp": tmp_path, "bad": bad_latents, "empty": empty_folder}
    result = _invoke("train", spec_file, *(a.format(**fill) for a in args), "--out", tmp_path / "run", "--quiet")
    assert result.exit_code == 2, result.output
    assert message.format(**fill) in one_line(result.stderr)
    assert not list_checkpoints(tmp_path / "run" / "checkpoints")


def test_an_existing_run_is_never_overwritten(one_line, spec_file, fast_config, tmp_path):
    out = tmp_path / "run"
    assert _invoke("train", spec_file, "--config", fast_config, "--steps", 2, "--out", out, "--quiet").exit_code == 0
    before = {p.name: p.read_bytes() for p in (out / "checkpoints").iterdir()}
    result = _invoke("train", spec_file, "--config", fast_config, "--steps", 4, "--out", out, "--quiet")
    assert result.exit_code == 2
    assert "already holds a run; pass --resume" in one_line(result.stderr)
    assert {p.name: p.read_bytes() for p in (out / "checkpoints").iterdir()} == before


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (("sample", "{tmp}/nothing", "-o", "{tmp}/g.png"), "checkpoint {tmp}/nothing: no such file or folder"),
        (("encode", "{bare}", "--vae", "{tmp}/novae", "-o", "{tmp}/l.safetensors"), "no class subfolders"),
        (("encode", "{empty}", "--vae", "{tmp}/novae", "-o", "{tmp}/l.safetensors"), "no images"),
        (("train", "--steps", "2"), "SPEC: give a spec file or preset name"),
    ],
)
def test_bad_sample_and_encode_input_is_one_line_and_exit_2(one_line, empty_folder, tmp_path, command, message):
    (tmp_path / "bare").mkdir()
    fill = {"tmp": tmp_path, "empty": empty_folder, "bare": tmp_path / "bare"}
    result = _invoke(*(a.format(**fill) for a in command))
    assert result.exit_code == 2, result.output
    assert message.format(**fill) in one_line(result.stderr)


def test_encode_with_a_missing_vae_names_it(one_line, image_folder, tmp_path):
    result = _invoke("encode", image_folder, "--vae", tmp_path / "novae", "-o", tmp_path / "l.safetensors", "--resolution", 16)
    assert result.exit_code == 2
    assert f"vae {tmp_path / 'novae'}: no such directory" in one_line(result.stderr)


def test_sampling_latents_without_a_vae_is_one_line(one_line, make_spec, tmp_path):
    latents = tmp_path / "latents.safetensors"
    write_latent_file(latents, torch.randn(4, 4, 8, 8), torch.tensor([0, 1, 0, 1]), {})
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(dump_spec(make_spec(channels=4, resolution=8, num_classes=2)))
    out = tmp_path / "run"
    trained = _invoke("train", spec_path, "--data-kind", "latents", "--data-path", latents, "--steps", 1, "--out", out, "--quiet")
    assert trained.exit_code == 0, trained.output
    result = _invoke("sample", out, "-o", tmp_path / "g.png", "--quiet")
    assert result.exit_code == 2
    assert "data.vae: the model was trained on latents" in one_line(result.stderr)


def test_a_data_file_resolves_paths_relative_to_itself(make_spec, vae_dir, tmp_path):
    from dicesearch.train.inputs import load_data_file

    (tmp_path / "data").mkdir()
    write_latent_file(tmp_path / "data" / "latents.safetensors", torch.randn(4, 4, 8, 8), torch.tensor([0, 1, 0, 1]), {})
    data_file = tmp_path / "data" / "data.yaml"
    data_file.write_text(f"data:\n  kind: latents\n  path: latents.safetensors\n  vae: {vae_dir}\n  hflip: false\n")
    data = load_data_file(data_file)
    assert data.path == tmp_path / "data" / "latents.safetensors" and data.vae == vae_dir and not data.hflip
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(dump_spec(make_spec(channels=4, resolution=8, num_classes=2)))
    result = _invoke("train", spec_path, "--data", data_file, "--steps", 1, "--out", tmp_path / "run", "--quiet")
    assert result.exit_code == 0, result.output
    assert load_data_file(tmp_path / "run" / "data.yaml") == data
