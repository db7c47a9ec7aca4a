"""A sweep at equal training FLOPs: each configuration trains the steps its budget buys, scored at the same rungs."""

import math

import optuna
from click.testing import CliRunner

from dicesearch.analysis.flops import training_step_flops
from dicesearch.cli import main
from dicesearch.spec import parse_spec

SPACE = """\
name: flops
base:
  input: {channels: 1, resolution: 16, num_classes: 10}
  stages:
    - {patch_size: 2, channels: 16, depth: 1, block: {kind: dice, mlp_ratio: 2.0}}
    - {patch_size: 1, channels: 16, depth: 1, block: {kind: convnext, mlp_ratio: 2.0}}
parameters:
  stages[0].channels: {choice: [16, 64]}
budget: {match: flops, train_flops: 4.0e10, batch_size: 8, lr: 0.001, fid_samples: 8, sampling_steps: 2, report_every: 2}
memory: {budget_gb: 24, precision: fp16, batch_size: 8}
fidelity: {rungs: [4, 8], keep: 1/2}
trials: 2
seed: 3
"""


def test_a_flops_budget_gives_each_configuration_its_own_steps_and_rungs_at_the_same_fractions(tmp_path, monkeypatch, registry):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "space.yaml").write_text(SPACE)
    result = CliRunner().invoke(main, ["sweep", "space.yaml"], catch_exceptions=False, terminal_width=200)
    assert result.exit_code == 0, result.output
    trials = optuna.load_study(study_name="flops", storage=f"sqlite:///{tmp_path}/optuna.db").get_trials()
    by_channels = {t.params["stages[0].channels"]: t for t in trials if "duplicate_of" not in t.user_attrs and "continues" not in t.user_attrs}
    assert set(by_channels) == {16, 64}, result.output
    steps = {}
    for channels, trial in by_channels.items():
        spec = parse_spec(__import__("yaml").safe_load(trial.user_attrs["spec_yaml"]), "trial", registry)
        steps[channels] = math.floor(4.0e10 / training_step_flops(spec, 8))
        first = trial.user_attrs["rungs"][0]
        # keyed by the rung as declared (4 of 8 steps), trained at the same fraction of its own budget
        assert first["steps"] == 4 and first["train_steps"] == round(4 * steps[channels] / 8)
        assert 4 in trial.intermediate_values
    assert steps[16] > steps[64]  # the wider model buys fewer steps with the same FLOPs
