"""Search-space files: validation with one clear line, and define-by-run sampling."""

import re
import textwrap

import optuna
import pytest

from dicesearch.errors import SpecError
from dicesearch.sweep.space.search_space import load_search_space
from dicesearch.sweep.space.spec_paths import assign, parse_path

optuna.logging.set_verbosity(optuna.logging.WARNING)

BASE = """\
base:
  input: {channels: 1, resolution: 16, num_classes: 10}
  stages:
    - {patch_size: 2, channels: 32, depth: 1, block: {kind: dice, lambda_init: 2.0, mlp_ratio: 2.0}}
    - {patch_size: 1, channels: 16, depth: 1, block: {kind: convnext}}
"""


def _space(tmp_path, body: str, name="space.yaml"):
    path = tmp_path / name
    path.write_text(BASE + textwrap.dedent(body))
    return load_search_space(path)


def test_paths_parse_and_assign():
    assert parse_path("stages[1].block.kind") == ("stages", 1, "block", "kind")
    assert parse_path("stages.1.depth") == ("stages", 1, "depth")
    assert parse_path("stages[*].depth") == ("stages", "*", "depth")
    data = {"stages": [{"depth": 1}, {"depth": 2}]}
    assert assign(data, ("stages", "*", "depth"), 5) == {"stages": [{"depth": 5}, {"depth": 5}]}
    assert data["stages"][0]["depth"] == 1  # the input is not modified


def test_the_shipped_search_spaces_load():
    from pathlib import Path

    paths = sorted(Path(__file__).parents[2].joinpath("search_spaces").glob("*.yaml"))
    assert {p.name for p in paths} >= {"cascade.yaml", "blocks.yaml", "imagenet256.yaml"}  # the glob found the shipped files
    for path in paths:
        load_search_space(path)


def test_sampling_changes_kind_first_and_keeps_shared_parameters(tmp_path):
    space = _space(tmp_path, """\
        parameters:
          stages[0].block.kind: {choice: [attention]}
          stages[0].block.heads: {choice: [4, 8]}
          stages[0].block.lambda_init: {float: [0.5, 1.0]}
        """)
    trial = optuna.create_study().ask()
    spec, values = space.sample(trial)
    block = spec.stages[0].block
    assert block.kind == "attention" and block.heads in (4, 8)
    assert block.mlp_ratio == 2.0  # kept from the base dice block: attention has mlp_ratio too
    assert "stages[0].block.lambda_init" not in values  # attention has no lambda: not sampled


def test_block_parameters_apply_only_to_kinds_that_have_them(tmp_path):
    space = _space(tmp_path, """\
        parameters:
          stages[*].block.kind: {choice: [dice, convnext]}
          stages[*].block.lambda_init: {float: [0.1, 10.0], log: true}
        """)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    seen = set()
    for _ in range(12):
        spec, values = space.sample(study.ask())
        kind = spec.stages[0].block.kind
        seen.add(kind)
        assert all(s.block.kind == kind for s in spec.stages)
        assert ("stages[*].block.lambda_init" in values) == (kind == "dice")
        if kind == "dice":
            assert all(0.1 <= s.block.lambda_init <= 10.0 for s in spec.stages)
    assert seen == {"dice", "convnext"}


def test_apply_rebuilds_a_trial_spec_from_its_values(tmp_path):
    space = _space(tmp_path, """\
        parameters:
          stages[0].channels: {int: [32, 64], step: 32}
          conditioning.kind: {choice: [adaln_zero, tdln]}
        """)
    trial = optuna.create_study().ask()
    spec, values = space.sample(trial)
    assert space.apply(values) == spec


BAD = {
    "unknown_path": ("parameters:\n  stages[0].chanels: {int: [32, 64]}\n", r"space\.yaml:7: parameters\.stages\[0\]\.chanels: .*not a field.*did you mean 'channels'\?"),
    "stage_index": ("parameters:\n  stages[5].depth: {int: [1, 2]}\n", r"parameters\.stages\[5\]\.depth: index \[5\] is out of range"),
    "empty_choice": ("parameters:\n  stages[0].depth: {choice: []}\n", r"space\.yaml:7: parameters\.stages\[0\]\.depth\.choice: the choice list is empty"),
    "low_gt_high": ("parameters:\n  stages[0].depth: {int: [3, 1]}\n", r"space\.yaml:7: parameters\.stages\[0\]\.depth: low 3 > high 1"),
    "bad_step": ("parameters:\n  stages[0].channels: {int: [32, 100], step: 32}\n", r"not a multiple of step 32"),
    "no_parameters": ("parameters: {}\n", r"parameters: nothing to sweep"),
    "unknown_kind": ("parameters:\n  stages[0].block.kind: {choice: [dice, rnn]}\n", r"unknown block 'rnn'; known: attention, convnext, dice"),
    "block_field": ("parameters:\n  stages[1].block.lambda_init: {float: [0.1, 1.0]}\n", r"no block kind this parameter can meet \(convnext\) has 'lambda_init'"),
    "never_valid": ("parameters:\n  stages[0].block.kind: {choice: [attention]}\n  stages[0].block.heads: {choice: [3, 5]}\n", None),
    "wrong_distribution": ("parameters:\n  stages[0].depth: {range: [1, 2]}\n", r"write one of \{int: \[low, high\]\}"),
    "unknown_key": ("parameters:\n  stages[0].depth: {int: [1, 2]}\ntrails: 5\n", r"space\.yaml:8: trails: unknown key 'trails'.*did you mean 'trials'\?"),
}


@pytest.mark.parametrize("case", [c for c in BAD if BAD[c][1]])
def test_bad_search_spaces_fail_with_one_clear_line(case, tmp_path):
    body, pattern = BAD[case]
    with pytest.raises(SpecError) as error:
        _space(tmp_path, body)
    message = str(error.value)
    assert "\n" not in message
    assert re.search(pattern, message), message


def test_heads_that_never_divide_are_caught_per_trial_not_statically(tmp_path):
    """Conditional block fields are validated when sampled: the trial fails, the sweep goes on."""
    space = _space(tmp_path, BAD["never_valid"][0])
    with pytest.raises(SpecError, match="not divisible by"):
        space.sample(optuna.create_study().ask())


def test_a_parameter_no_value_of_which_is_valid_is_rejected_up_front(tmp_path):
    body = "parameters:\n  stages[0].channels: {choice: [30, 50]}\n"  # dice: fine; ...
    space = _space(tmp_path, body)  # any channel count is valid for dice
    assert space is not None
    with pytest.raises(SpecError, match="no value in the range makes a valid model"):
        _space(tmp_path, "parameters:\n  stages[0].patch_size: {choice: [3, 5]}\n")
