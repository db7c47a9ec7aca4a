"""The command line, run in-process through click's runner."""

from click.testing import CliRunner

from dicesearch.cli import main


def test_plugins_lists_blocks_and_conditioning_with_parameters_and_provider():
    result = CliRunner().invoke(main, ["plugins"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for name in ("dice", "convnext", "attention", "adaln_zero", "tdln"):
        assert f"  {name}  from dicesearch (dicesearch_plugins.{name})" in result.output
    assert "lambda_init: float = 1.0" in result.output
    assert "heads: int > 0 = 16" in result.output  # constraints shown: PositiveInt
    assert "mlp_ratio: float > 0 = 4.0" in result.output
    assert "shift_fraction: float > 0.0 and <= 0.25 = 0.25" in result.output


def test_validate_accepts_a_preset():
    result = CliRunner().invoke(main, ["validate", "DiMR-XL/2R"])
    assert result.exit_code == 0
    assert "ok: DiMR-XL/2R: 2 stage(s): attention x39 @ 16x16, convnext x21 @ 32x32" in result.output


def test_profile_prints_the_static_analysis_table(tmp_path):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(
        "name: tiny\ninput: {channels: 1, resolution: 16, num_classes: 10}\n"
        "stages:\n  - {patch_size: 2, channels: 32, depth: 2, block: {kind: attention, heads: 4}}\n"
        "  - {patch_size: 1, channels: 16, depth: 1, block: {kind: dice}}\n"
    )
    result = CliRunner().invoke(main, ["profile", str(spec), "--steps", "10", "--timed-forwards", "1"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for text in ("parameters (trainable)", "multiply-adds / forward (G)", "FLOPs / forward (G)", "samples/s (10 steps, batch 1)", "parameters per stage", "shared"):
        assert text in result.output


def test_resolve_writes_every_default(tmp_path):
    out = tmp_path / "resolved.yaml"
    result = CliRunner().invoke(main, ["resolve", "DiT-S/2", "-o", str(out)])
    assert result.exit_code == 0
    text = out.read_text()
    assert "frequency_dim: 256" in text and "long_skip: false" in text
