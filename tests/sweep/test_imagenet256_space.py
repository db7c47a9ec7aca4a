"""search_spaces/imagenet256.yaml: its memory gate covers what a trial trains, and it runs.

The space is sized for a 24 GB GPU, which CI has not got, so two things are checked on the
CPU: (1) whatever configuration the space draws, if the estimator puts the training a trial
really does (the budget's batch, the trainer's precision on CUDA, EMA, no checkpointing)
over 24 GiB, the sweep's gate refuses it; (2) the space runs end to end as one real sweep
trial on a tiny synthetic 32x32x4, 1000-class latent file, at 1/12 of its widths.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch
import yaml
from click.testing import CliRunner

from dicesearch.analysis.memory import estimate_training_memory
from dicesearch.cli import main
from dicesearch.data.latentfile import write_latent_file
from dicesearch.sweep.lifecycle.gate import estimate_memory, over_budget_reason  # the gate (one import to repoint)
from dicesearch.sweep.space.search_space import load_search_space
from dicesearch.train import TrainConfig
from dicesearch.train.precision import resolve_precision

SPACE = Path(__file__).parents[2] / "search_spaces" / "imagenet256.yaml"
GiB = 2**30

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def space():
    return load_search_space(SPACE)


def gate_refusal(space, spec) -> str | None:
    """The sweep's verdict on ``spec``: the reason it is rejected, or None if it trains."""
    batch = space.config.memory_batch
    return over_budget_reason(estimate_memory(spec, space.config.memory, batch), space.config.memory, batch)


def trial_gib(space, spec) -> float:
    """GiB a trial of ``spec`` needs on a GPU: how ``evaluate`` trains it (TrainConfig defaults, CUDA)."""
    defaults = TrainConfig()
    precision = resolve_precision(defaults.precision, torch.device("cuda")).name  # what `auto` means on a GPU
    estimate = estimate_training_memory(
        spec, space.config.budget.batch_size, precision, ema=True, gradient_checkpointing=defaults.gradient_checkpointing
    )
    return estimate.total / GiB


def corner(space, largest: bool, **choices) -> dict:
    """Every int parameter at one end of its range, plus the given choices (others as in the base)."""
    values = {}
    for name, _, dist in space.config.ordered_parameters():
        if hasattr(dist, "int"):
            values[name] = dist.int[1] if largest else dist.int[0]
    values["stages[*].block.mlp_ratio"] = 4.0 if largest else 2.0
    return {**values, **choices}


def random_draws(space, n: int, seed: int) -> list:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    specs = []
    for _ in range(n):
        trial = study.ask()
        specs.append(space.sample(trial)[0])
        study.tell(trial, 0.0)
    return specs


def test_the_gate_refuses_every_configuration_a_trial_could_not_train_in_24_gib(space):
    budget_gib = space.config.memory.budget_gb
    assert budget_gib == 24
    specs = [
        space.apply(corner(space, largest=True, **{"stages[0].block.kind": "attention", "stages[1].block.kind": "attention"})),
        space.apply(corner(space, largest=True, **{"cascade.kind": "features"})),
        space.apply(corner(space, largest=False, **{"conditioning.kind": "tdln"})),
        *random_draws(space, 3, seed=1),
    ]
    verdicts = [(trial_gib(space, spec), gate_refusal(space, spec)) for spec in specs]
    for (gib, refusal), spec in zip(verdicts, specs):
        if gib > budget_gib:
            assert refusal is not None and "exceeds the 24 GB budget" in refusal, (spec.name, gib)
        else:
            assert refusal is None, (gib, refusal)  # what fits is never lost to the gate either
    assert any(gib > budget_gib for gib, _ in verdicts[:2]), "the largest corners should need more than 24 GiB"
    assert all(gib < budget_gib for gib, _ in verdicts[2:]), "the smallest corner and typical draws should fit"


# -- the smoke run -----------------------------------------------------------------------------

SHRINK = 12  # 1/12 of every width; keeps attention's 16 heads dividing every channel count


def _shrink(value: int) -> int:
    assert value % SHRINK == 0, value
    return value // SHRINK


def miniature(path: Path, latents: Path, vae: Path) -> dict:
    """The space file with tiny data, widths and budget; everything else as shipped."""
    data = yaml.safe_load(path.read_text())
    for stage in data["base"]["stages"]:
        stage["channels"] = _shrink(stage["channels"])
    data["base"]["conditioning"]["embed_dim"] = _shrink(data["base"]["conditioning"]["embed_dim"])
    for name, dist in data["parameters"].items():
        if name.endswith(".channels"):
            dist["int"] = [_shrink(v) for v in dist["int"]]
            dist["step"] = _shrink(dist["step"])
    data["data"].update(path=str(latents), vae=str(vae))
    data["budget"].update(train_steps=2, batch_size=2, fid_samples=8, sampling_steps=2, report_every=1)
    data["memory"]["batch_size"] = 2
    data["trials"] = 1
    return data


@pytest.fixture(scope="module")
def tiny_vae(tmp_path_factory) -> Path:
    """A random AutoencoderKL: 4 latent channels, downsampling 2 (32x32 latents <-> 64x64 images)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    model = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
    )
    path = tmp_path_factory.mktemp("vae") / "tiny-vae"
    model.save_pretrained(path)
    return path


def test_the_space_runs_one_trial_on_a_tiny_imagenet_shaped_latent_file(tmp_path, monkeypatch, tiny_vae):
    generator = torch.Generator().manual_seed(0)
    latents = write_latent_file(
        tmp_path / "imagenet256-latents.safetensors",
        torch.randn(16, 4, 32, 32, generator=generator).half(),  # (N, C, h, w) as `dicesearch encode --storage float16` writes
        torch.randint(0, 1000, (16,), generator=generator),
        {"num_classes": "1000", "scaling_factor": "0.18215", "image_resolution": "64"},
    )
    space_file = tmp_path / "imagenet256-mini.yaml"
    space_file.write_text(yaml.safe_dump(miniature(SPACE, latents, tiny_vae), sort_keys=False))
    monkeypatch.chdir(tmp_path)

    result = CliRunner().invoke(main, ["sweep", str(space_file)], catch_exceptions=False, terminal_width=200)
    assert result.exit_code == 0, result.output

    study = optuna.load_study(study_name="imagenet256-cascade", storage=f"sqlite:///{tmp_path}/optuna.db")
    (trial,) = study.get_trials(deepcopy=False)
    assert trial.user_attrs["status"] == "complete", trial.user_attrs.get("reason")
    metrics = trial.user_attrs["metrics"]
    assert 0 < metrics["fid_8"] < float("inf") and metrics["memory_estimated_gb"] > 0
    spec = yaml.safe_load(trial.user_attrs["spec_yaml"])
    assert spec["input"] == {"channels": 4, "resolution": 32, "num_classes": 1000, "learn_sigma": True}
    assert [s["patch_size"] for s in spec["stages"]] == [4, 2, 1]
