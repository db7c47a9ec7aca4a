"""A run folder from `dicesearch import-checkpoint` samples, profiles and fine-tunes like a trained one."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from dicesearch.checkpoints import layout_for
from dicesearch.cli import main
from dicesearch.spec import dump_spec, parse_spec
from dicesearch.train import list_checkpoints, read_weights


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], terminal_width=400)


def _official_file(spec, path, seed=0):
    """Random weights in DiT's official layout for ``spec`` (what DiT's train.py would save)."""
    g = torch.Generator().manual_seed(seed)
    state = {key: 0.02 * torch.randn(shape, generator=g) for key, shape in layout_for(spec, "").official_shapes().items()}
    torch.save(state, path)
    return state


def _dit_spec(registry, channels: int, num_classes: int):
    return parse_spec(
        {
            "name": "tiny-dit",
            "input": {"channels": channels, "resolution": 8, "num_classes": num_classes, "learn_sigma": True},
            "conditioning": {"kind": "adaln_zero"},
            "init": {"scheme": "xavier_uniform", "zero_head": True},
            "stages": [{"patch_size": 2, "channels": 32, "depth": 2, "position_embedding": "sincos", "head": "linear",
                        "block": {"kind": "attention", "heads": 2, "activation": "gelu_tanh"}}],
        },
        "tiny-dit.yaml",
        registry,
    )  # fmt: skip


@pytest.fixture
def pixel_dit(registry, tmp_path):
    spec = _dit_spec(registry, channels=1, num_classes=10)  # the digits' shape
    (tmp_path / "tiny-dit.yaml").write_text(dump_spec(spec))
    return tmp_path / "tiny-dit.yaml", _official_file(spec, tmp_path / "official.pt")


def test_an_imported_run_fine_tunes_from_the_imported_weights(pixel_dit, tmp_path):
    spec_file, official = pixel_dit
    (tmp_path / "ft.yaml").write_text("batch_size: 4\nlr: 0.0001\ncheckpoint_every: 1\n")
    run = tmp_path / "run"
    result = _invoke("import-checkpoint", spec_file, tmp_path / "official.pt", "-o", run, "--data-kind", "digits", "--config", tmp_path / "ft.yaml")
    assert result.exit_code == 0, result.output
    assert f"fine-tune: dicesearch train --resume --out {run} --steps N" in result.output
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "data.yaml", "spec.yaml", "train.yaml"]
    result = _invoke("train", "--resume", "--out", run, "--steps", 2, "--quiet")
    assert result.exit_code == 0, result.output
    assert [step for step, _ in list_checkpoints(run / "checkpoints")] == [1, 2]
    tuned = read_weights(list_checkpoints(run / "checkpoints")[-1][1], "model")["stages.0.head.proj.weight"]
    start = official["final_layer.linear.weight"]
    assert 0 < (tuned - start).abs().max() < 1e-3  # two AdamW steps of 1e-4 from the imported weights, not from a fresh init


def test_a_run_imported_without_data_asks_for_it_to_fine_tune(pixel_dit, tmp_path, one_line):
    spec_file, _ = pixel_dit
    run = tmp_path / "run"
    assert _invoke("import-checkpoint", spec_file, tmp_path / "official.pt", "-o", run).exit_code == 0
    result = _invoke("train", "--resume", "--out", run, "--steps", 1, "--quiet")
    assert result.exit_code == 2
    assert f"run folder {run}: no data.yaml (its weights were imported without data)" in one_line(result.stderr)
    result = _invoke("train", "--resume", "--out", run, "--steps", 1, "--quiet", "--data-kind", "digits")
    assert result.exit_code == 0, result.output
    assert (run / "data.yaml").is_file() and (run / "train.yaml").is_file()


def test_an_imported_latent_model_samples_with_a_vae_and_profiles(registry, vae_dir, tmp_path, one_line):
    spec = _dit_spec(registry, channels=4, num_classes=4)
    (tmp_path / "latent-dit.yaml").write_text(dump_spec(spec))
    _official_file(spec, tmp_path / "official.pt")
    run = tmp_path / "run"
    result = _invoke("import-checkpoint", tmp_path / "latent-dit.yaml", tmp_path / "official.pt", "-o", run)
    assert result.exit_code == 0, result.output
    assert f"sample:    dicesearch sample {run} -o samples.png --vae DIR" in result.output
    grid = tmp_path / "grid.png"
    no_vae = _invoke("sample", run, "-o", grid, "--n", 2, "--sampler", "ddim", "--steps", 2, "--quiet")
    assert no_vae.exit_code == 2 and "the run has no data.yaml (imported weights); pass --vae DIR" in one_line(no_vae.stderr)
    result = _invoke("sample", run, "-o", grid, "--n", 2, "--sampler", "ddim", "--steps", 2, "--vae", vae_dir, "--quiet")
    assert result.exit_code == 0, result.output
    with Image.open(grid) as image:  # two 16x16 RGB images decoded from 8x8 latents, side by side
        assert image.mode == "RGB" and image.size == (2 * 18 + 2, 18 + 2)
    result = _invoke("profile", run, "--steps", 1, "--timed-forwards", 1)
    assert result.exit_code == 0, result.output
    assert "tiny-dit on cpu" in result.output
