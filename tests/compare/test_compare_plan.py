"""A comparison's plan without training: compute matching, the resolved file, pairing, bad input."""

import math

import pytest
import torch
from click.testing import CliRunner
from rich.console import Console

from dicesearch.analysis.flops import training_step_flops
from dicesearch.cli import main
from dicesearch.compare.plan import RESOLVED, ComparisonPlan, read_plan_models
from dicesearch.compare.run import Overrides, load_comparison, plan_comparison
from dicesearch.data import DigitsSpec
from dicesearch.spec import load_spec

SMALL = """\
name: small
input: {channels: 1, resolution: 16, num_classes: 10, learn_sigma: true}
conditioning: {kind: adaln_zero}
stages:
  - {patch_size: 2, channels: 16, depth: 1, block: {kind: dice, mlp_ratio: 2.0}, head: linear}
"""


def _quiet() -> Console:
    return Console(file=open("/dev/null", "w"))


def _comparison(tmp_path, text: str):
    (tmp_path / "small.yaml").write_text(SMALL)
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return str(path)


def test_equal_flops_give_each_model_steps_inversely_proportional_to_its_flops_per_step(tmp_path, registry):
    path = _comparison(tmp_path, "name: flops\nmodels: [DICE-digits, small.yaml]\nbudget: {match: flops, train_flops: 1.0e12, batch_size: 16}\n")
    config, source, relative_to, _ = load_comparison([path], Overrides())
    planned = plan_comparison(config, source, relative_to, tmp_path / "out", registry, "cpu", _quiet())
    big, small = planned
    assert big.step_flops == training_step_flops(load_spec("DICE-digits"), 16)
    assert big.steps == math.floor(1e12 / big.step_flops) and small.steps == math.floor(1e12 / small.step_flops)
    assert small.steps / big.steps == pytest.approx(big.step_flops / small.step_flops, rel=0.01)
    assert big.train_flops <= 1e12 < big.train_flops + big.step_flops  # each gets the budget, to within a step
    plan = ComparisonPlan(config, planned, path, registry)
    assert plan.fixed() == [{"model": "DICE-digits", "seed": s} if i % 2 == 0 else {"model": "small", "seed": s} for s in (42, 43, 44) for i in range(2)]
    assert plan.config.trials == 6 and plan.baseline == "DICE-digits"


def test_the_command_line_overrides_the_file_and_seconds_are_measured_once(tmp_path, registry):
    path = _comparison(tmp_path, "name: secs\nmodels: [DICE-digits, small.yaml]\nseeds: 2\n")
    overrides = Overrides(seconds=3.0, seeds=4, baseline="small", eval_at=(0.5,))
    config, source, relative_to, _ = load_comparison([path], overrides)
    assert config.budget.match == "seconds" and config.budget.train_seconds == 3.0 and config.seed_list == [42, 43, 44, 45]
    assert config.eval_at == [0.5, 1.0] and config.baseline == "small"
    assert config.budget.batch_size == 64 and config.budget.fid_samples == 128  # the comparison's defaults under the file's budget
    out = tmp_path / "out"
    planned = plan_comparison(config, source, relative_to, out, registry, "cpu", _quiet())
    assert all(m.step_seconds > 0 and m.steps == max(1, math.floor(3.0 / m.step_seconds)) for m in planned)
    from dicesearch.compare.plan import write_plan

    write_plan(out / RESOLVED, config, planned)
    again = plan_comparison(config, source, relative_to, out, registry, "cpu", _quiet())  # read back, not measured again
    assert [(m.name, m.steps, m.step_seconds) for m in again] == [(m.name, m.steps, m.step_seconds) for m in planned]
    stored_config, stored = read_plan_models(out / RESOLVED, registry)
    assert stored_config.model_dump(exclude={"models"}) == config.model_dump(exclude={"models"})  # the models are stored as inline specs:
    assert [m.spec for m in stored] == [m.spec for m in planned]
    plan = ComparisonPlan(config, planned, str(out / RESOLVED), registry)
    assert plan.rungs(planned[0]) == (max(1, round(planned[0].steps / 2)), planned[0].steps) or planned[0].steps == 1


def test_two_different_models_train_and_sample_on_the_same_draws_at_one_seed(registry, monkeypatch):
    """Pairing by construction: the images, labels, timesteps and noise of every training step,
    and the initial noise of every sample, are functions of (seed, index), whatever the model."""
    import dicesearch.train.sampling as sampling
    import dicesearch.train.trainer as trainer
    from dicesearch.train import SamplingConfig, TrainConfig, train
    from dicesearch.train.sampling import sample_images

    seen: list[tuple] = []
    original_loss, original_prediction = trainer.training_loss, sampling.guided_prediction

    def recording_loss(network, schedule, x0, t, noise, labels, *args, **kwargs):
        seen.append(("train", x0.clone(), t.clone(), noise.clone(), None if labels is None else labels.clone()))
        return original_loss(network, schedule, x0, t, noise, labels, *args, **kwargs)

    def recording_prediction(model, x, t, y, *args, **kwargs):
        seen.append(("sample", x.clone(), t.clone(), None if y is None else y.clone()))
        return original_prediction(model, x, t, y, *args, **kwargs)

    monkeypatch.setattr(trainer, "training_loss", recording_loss)
    monkeypatch.setattr(sampling, "guided_prediction", recording_prediction)
    draws = {}
    for name in ("DICE-digits", "small"):
        spec = load_spec("DICE-digits", registry) if name == "DICE-digits" else __import__("dicesearch.spec", fromlist=["parse_spec"]).parse_spec(
            __import__("yaml").safe_load(SMALL), "small", registry
        )
        seen.clear()
        result = train(spec, DigitsSpec(), TrainConfig(steps=3, batch_size=4, seed=7, log_every=3, checkpoint_every=4), out_dir=None, device="cpu", progress=False)
        sample_images(result.ema, spec, DigitsSpec(), SamplingConfig(steps=2, num_samples=4, seed=7, batch_size=4), device="cpu")
        draws[name] = list(seen)
    a, b = draws["DICE-digits"], draws["small"]
    assert [d[0] for d in a] == [d[0] for d in b] == ["train"] * 3 + ["sample"] * 2
    for step in range(3):  # every training step: images, timesteps, noise, labels
        for x, y in zip(a[step][1:], b[step][1:], strict=True):
            assert torch.equal(x, y)
    for x, y in zip(a[3][1:], b[3][1:], strict=True):  # the sampler's first input: the initial noise (then each model's own)
        assert torch.equal(x, y)
    assert torch.equal(a[4][2], b[4][2]) and not torch.equal(a[4][1], b[4][1])  # the same timesteps, the models' own images


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["DICE-digits", "no-such-preset"], "no-such-preset: no such file or preset; presets:"),
        (["DICE-digits", "DiT-S/2"], "model DiT-S/2 (preset DiT-S/2): data digits: images are 1x16x16 but the spec 'DiT-S/2' takes 4x32x32"),
        (["DICE-digits", "DICE-digits"], "two models are named 'DICE-digits'"),
        (["DICE-digits", "small.yaml", "--baseline", "nobody"], "baseline: 'nobody' is none of the models (DICE-digits, small)"),
        (["DICE-digits", "small.yaml", "--flops", "1e12", "--seconds", "5"], "--flops and --seconds: give one budget"),
        (["DICE-digits", "small.yaml", "--fid-samples", "2"], "budget.fid_samples"),
        (["c.yaml"], "c.yaml:2: shots: unknown key 'shots'; allowed here: alpha, backend, baseline"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, monkeypatch, arguments, message):
    monkeypatch.chdir(tmp_path)
    _comparison(tmp_path, "name: bad\nshots: 3\nmodels: [DICE-digits]\n")
    before = set(tmp_path.rglob("*"))
    result = CliRunner().invoke(main, ["compare", *arguments], terminal_width=400)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len([line for line in result.output.splitlines() if line.strip()]) == 1, result.output
    assert set(tmp_path.rglob("*")) == before  # nothing written: no run folder, no study, no MLflow store


def test_a_different_comparison_under_the_same_name_is_refused(tmp_path, monkeypatch, registry):
    monkeypatch.chdir(tmp_path)
    path = _comparison(tmp_path, "name: same\nmodels: [DICE-digits, small.yaml]\nbudget: {train_steps: 10}\n")
    config, source, relative_to, _ = load_comparison([path], Overrides())
    out = tmp_path / "runs" / "same"
    from dicesearch.compare.plan import write_plan

    write_plan(out / RESOLVED, config, plan_comparison(config, source, relative_to, out, registry, "cpu", _quiet()))
    result = CliRunner().invoke(main, ["compare", path, "--steps", "20"], terminal_width=400)
    assert result.exit_code == 2 and "this comparison was started with other models or settings" in result.output
    assert "--name" in result.output
