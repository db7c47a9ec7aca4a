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
    assert "0.00 " not in result.output  # a tiny model's multiply-adds are readable, not rounded away
    from dicesearch.analysis.profile import profile_spec
    from dicesearch.cli.specs import format_count, format_giga
    from dicesearch.spec import load_spec

    profile = profile_spec(load_spec(str(spec)), timed_forwards=1)
    rows = {c.name: c for c in profile.components}
    assert list(rows)[:2] == ["attention blocks", "dice blocks"]
    assert sum(c.parameters for c in rows.values()) == profile.parameters
    assert sum(c.macs for c in rows.values()) == profile.macs
    for name in ("attention blocks", "dice blocks", "stage heads", "conditioning (shared)"):
        line = next(line for line in result.output.splitlines() if name in line)
        assert format_count(rows[name].parameters) in line and format_giga(rows[name].macs) in line


def test_giga_keeps_three_significant_digits_below_one():
    from dicesearch.cli.specs import format_giga

    assert (format_giga(118.6214e9), format_giga(6.8595e9), format_giga(6.877e6), format_giga(24_576), format_giga(0)) == ("118.62", "6.86", "0.00688", "0.0000246", "0.00")


def test_resolve_writes_every_default(tmp_path):
    out = tmp_path / "resolved.yaml"
    result = CliRunner().invoke(main, ["resolve", "DiT-S/2", "-o", str(out)])
    assert result.exit_code == 0
    text = out.read_text()
    assert "frequency_dim: 256" in text and "long_skip: false" in text
