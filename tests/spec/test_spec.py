"""Specs: YAML round trips, JSON Schema, and one clear line for every kind of bad input."""

import json
import textwrap

import pytest
from click.testing import CliRunner

from dicesearch.cli import main
from dicesearch.errors import SpecError
from dicesearch.spec import dump_spec, list_presets, load_spec
from dicesearch.testing import check_spec_round_trip

TINY = """\
name: tiny
input: {channels: 1, resolution: 16, num_classes: 10}
stages:
  - {patch_size: 2, channels: 32, depth: 2, block: {kind: dice}}
  - {patch_size: 1, channels: 16, depth: 2, block: {kind: convnext}}
"""


@pytest.mark.parametrize("preset", list(list_presets()))
def test_every_preset_round_trips_through_yaml(preset, registry):
    spec = load_spec(preset)
    check_spec_round_trip(spec, registry)


def test_a_written_spec_reads_back_equal(tmp_path):
    spec = load_spec(_write(tmp_path, TINY))
    out = tmp_path / "resolved.yaml"
    out.write_text(dump_spec(spec))
    assert load_spec(out) == spec
    assert spec.stages[0].block.kind == "dice" and spec.stages[0].block.lambda_init == 1.0  # defaults filled


def test_specs_are_frozen():
    spec = load_spec("DiT-S/2")
    with pytest.raises(Exception):
        spec.stages[0].channels = 10


def test_json_schema_lists_every_block_and_conditioning(tmp_path):
    out = tmp_path / "spec.schema.json"
    result = CliRunner().invoke(main, ["schema", "-o", str(out)])
    assert result.exit_code == 0, result.output
    schema = json.loads(out.read_text())
    text = json.dumps(schema)
    for name in ("DiceBlock", "ConvnextBlock", "AttentionBlock", "AdalnZeroConditioning", "TdlnConditioning"):
        assert name in schema["$defs"], name
    assert '"lambda_init"' in text


def _write(tmp_path, text, name="spec.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


BAD = {
    "malformed": ("stages:\n  - channels: 32\n    depth: 2\n   block: {kind: dice}\n", r"spec\.yaml:4:4: malformed YAML: .*indentation"),
    "unknown_block": (
        "stages:\n  - {channels: 32, depth: 2, block: {kind: dcie}}\n",
        r"spec\.yaml:2: stages\[0\]\.block\.kind: unknown block 'dcie'; known: attention, convnext, dice.*did you mean 'dice'\?",
    ),
    "unknown_conditioning": (
        "conditioning: {kind: adaln}\nstages:\n  - {channels: 32, depth: 2, block: {kind: dice}}\n",
        r"spec\.yaml:1: conditioning\.kind: unknown conditioning method 'adaln'; known: adaln_zero, tdln.*did you mean 'adaln_zero'\?",
    ),
    "wrong_type": (
        "stages:\n  - {channels: thirty-two, depth: 2, block: {kind: dice}}\n",
        r"spec\.yaml:2: stages\[0\]\.channels: Input should be a valid integer.*'thirty-two'",
    ),
    "heads": (
        "stages:\n  - channels: 100\n    depth: 2\n    block: {kind: attention, heads: 3}\n",
        r"spec\.yaml:4: stages\[0\]\.block\.heads: 100 channels are not divisible by 3 heads; use a divisor of 100",
    ),
    "resolution": (
        "input: {resolution: 16}\nstages:\n  - {patch_size: 3, channels: 32, depth: 2, block: {kind: dice}}\n",
        r"stages\[0\]\.patch_size: 3 does not divide input\.resolution 16; use one of 1, 2, 4, 8, 16",
    ),
    "top_level_key": (
        "stagez: []\nstages:\n  - {channels: 32, depth: 2, block: {kind: dice}}\n",
        r"spec\.yaml:1: stagez: unknown key 'stagez'; allowed here: .*did you mean 'stages'\?",
    ),
    "block_param_key": (
        "stages:\n  - {channels: 32, depth: 2, block: {kind: dice, lamda_init: 2}}\n",
        r"stages\[0\]\.block\.lamda_init: unknown key 'lamda_init'.*did you mean 'lambda_init'\?",
    ),
    "last_stage_coarse": (
        "stages:\n  - {patch_size: 2, channels: 32, depth: 2, block: {kind: dice}}\n",
        r"stages\[0\]\.head: the last stage must predict at the input resolution",
    ),
    "no_such_file": (None, r"nope\.yaml: no such file or preset; presets: DICE"),
    # what the attention-free blocks cannot take, from each block's check()
    "linear_attention_heads": (
        "stages:\n  - channels: 64\n    depth: 2\n    block: {kind: linear_attention, heads: 5}\n",
        r"spec\.yaml:4: stages\[0\]\.block\.heads: 64 channels are not divisible by 5 heads; use a divisor of 64 such as 1, 2, 4, 8",
    ),
    "linear_attention_kernel": (
        "stages:\n  - channels: 64\n    depth: 2\n    block: {kind: linear_attention, kernel_size: 4}\n",
        r"spec\.yaml:4: stages\[0\]\.block\.kernel_size: 4 is even, which would shift the feature map",
    ),
    "ssm_downscale": (
        "stages:\n  - channels: 6\n    depth: 2\n    block: {kind: ssm, downscale: 5}\n",
        r"spec\.yaml:4: stages\[0\]\.block\.downscale: 2 x 6 channels .* not divisible by downscale 5; use a divisor of 12",
    ),
    "ssm_state_size": (
        "stages:\n  - channels: 32\n    depth: 2\n    block: {kind: ssm, state_size: 63}\n",
        r"spec\.yaml:4: stages\[0\]\.block\.state_size: 63 is odd, .*use an even size such as 64",
    ),
    "rwkv_shift_fraction": (
        "stages:\n  - channels: 32\n    depth: 2\n    block: {kind: rwkv, shift_fraction: 0.5}\n",
        r"spec\.yaml:4: stages\[0\]\.block\.shift_fraction: Input should be less than or equal to 0\.25",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_gives_one_line_and_exit_code_2(case, tmp_path, monkeypatch):
    text, pattern = BAD[case]
    monkeypatch.chdir(tmp_path)
    target = "nope.yaml" if text is None else _write(tmp_path, text).name
    result = CliRunner().invoke(main, ["validate", target])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, lines
    assert "Traceback" not in result.output
    import re

    assert re.search(pattern, lines[0]), lines[0]


def test_load_spec_raises_spec_error_not_a_traceback(tmp_path):
    with pytest.raises(SpecError) as error:
        load_spec(_write(tmp_path, BAD["unknown_block"][0]))
    assert "\n" not in str(error.value)


def test_every_command_reports_spec_errors_as_one_line(tmp_path):
    path = _write(tmp_path, BAD["heads"][0])
    result = CliRunner().invoke(main, ["profile", str(path)])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0 and "heads" in result.output
